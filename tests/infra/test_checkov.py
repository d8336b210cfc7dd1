"""checkov (offline, its own venv) over infra/: no failed check, every skip justified, no unparsed file.

One checkov run (it takes seconds to start) covers both infra/ and two planted files that prove the wrapper
catches what checkov would let through: an insecure account (failed checks, a skip without a reason) and a file
checkov cannot parse (which checkov itself skips silently, exiting 0).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.infra.bicepcheck import INFRA, CheckovError, CheckovReport, checkov_report

BAD_STORAGE = """
resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35
  name: 'x'
  location: 'westeurope'
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    supportsHttpsTrafficOnly: false
    minimumTlsVersion: 'TLS1_0'
    allowBlobPublicAccess: true
  }
}
"""


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> CheckovReport:
    # A copy, so checkov sees exactly the Bicep files (and writes nothing into the work tree), beside the planted.
    root = tmp_path_factory.mktemp("checkov")
    shutil.copytree(INFRA, root / "infra", ignore=shutil.ignore_patterns("*.md"))
    (root / "planted").mkdir()
    (root / "planted" / "insecure.bicep").write_text(BAD_STORAGE)
    (root / "planted" / "bad.bicep").write_text("resource x 'A/b@2020-01-01' = {\n  name: \n")
    return checkov_report(root)


@pytest.fixture(scope="module")
def report(scanned: CheckovReport) -> CheckovReport:
    return scanned.under("infra").require_parsed()


def test_no_failed_checks(report: CheckovReport) -> None:
    failed = [f"{c['check_id']} {c['check_name']} ({c['resource']} in {c['file_path']})" for c in report.failed]
    assert failed == []
    assert report.passed, "checkov evaluated nothing"


def test_every_skip_is_justified(report: CheckovReport) -> None:
    assert report.unjustified_skips() == []


def test_checkov_saw_every_file(report: CheckovReport) -> None:
    files = {str(c["file_path"]).lstrip("/") for c in report.skipped + report.failed + report.passed}
    # Files with resources checkov has checks for must show up; the wrapper already raised if any file failed to
    # parse. Spot-check the files whose skips and checks we rely on were read.
    assert {"infra/modules/storage.bicep", "infra/modules/functionApp.bicep", "infra/modules/frontDoor.bicep",
            "infra/modules/keyVault.bicep"} <= files


def test_wrapper_fails_on_unparsed_files(scanned: CheckovReport) -> None:
    planted = scanned.under("planted")
    assert [Path(e).name for e in planted.parsing_errors] == ["bad.bicep"]
    with pytest.raises(CheckovError, match=r"bad\.bicep"):
        planted.require_parsed()
    with pytest.raises(CheckovError, match=r"bad\.bicep"):
        scanned.require_parsed()


def test_wrapper_reports_failures_and_unjustified_skips(scanned: CheckovReport) -> None:
    bad = scanned.under("planted")
    assert {"CKV_AZURE_3", "CKV_AZURE_44"} <= {c["check_id"] for c in bad.failed}  # HTTPS only, TLS 1.2
    assert bad.unjustified_skips() == ["CKV_AZURE_35"]
