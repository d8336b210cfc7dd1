"""checkov (offline, its own venv) over infra/: no failed check, every skip justified, no unparsed file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.infra.bicepcheck import INFRA, CheckovError, CheckovReport, run_checkov


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> CheckovReport:
    # A copy, so checkov sees exactly the Bicep files (and writes nothing into the work tree).
    target = tmp_path_factory.mktemp("infra") / "infra"
    shutil.copytree(INFRA, target, ignore=shutil.ignore_patterns("*.md"))
    return run_checkov(target)


def test_no_failed_checks(report: CheckovReport) -> None:
    failed = [f"{c['check_id']} {c['check_name']} ({c['resource']} in {c['file_path']})" for c in report.failed]
    assert failed == []
    assert report.passed > 0, "checkov evaluated nothing"


def test_every_skip_is_justified(report: CheckovReport) -> None:
    assert report.unjustified_skips() == []


def test_checkov_saw_every_file(report: CheckovReport) -> None:
    files = {str(c["file_path"]).lstrip("/") for c in report.skipped}
    files |= {str(c["file_path"]).lstrip("/") for c in report.failed}
    # Files with resources checkov has checks for must show up (in skipped or passed); the wrapper already
    # raised if any file failed to parse. Spot-check the skips we rely on were read from their files.
    assert {"modules/storage.bicep", "modules/functionApp.bicep"} <= files


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


def test_wrapper_fails_on_unparsed_files(tmp_path: Path) -> None:
    (tmp_path / "good.bicep").write_text(BAD_STORAGE)
    (tmp_path / "bad.bicep").write_text("resource x 'A/b@2020-01-01' = {\n  name: \n")
    with pytest.raises(CheckovError, match=r"bad\.bicep"):
        run_checkov(tmp_path)


def test_wrapper_reports_failures_and_unjustified_skips(tmp_path: Path) -> None:
    (tmp_path / "insecure.bicep").write_text(BAD_STORAGE)
    bad = run_checkov(tmp_path)
    assert {"CKV_AZURE_3", "CKV_AZURE_44"} <= {c["check_id"] for c in bad.failed}  # HTTPS only, TLS 1.2
    assert bad.unjustified_skips() == ["CKV_AZURE_35"]
