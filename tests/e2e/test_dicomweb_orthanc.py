"""Cross-check against a real peer: the same corpus in dicomflow (devhost) and Orthanc + DICOMweb plugin,
the same QIDO battery through ``dicomweb-client``, the same sets of matched UIDs.

Where we differ on purpose the query names the rule (``shared.dicomweb.matching.DIFFERENCES``) and the
test checks both sides' answers, so a change on either side shows up. Orthanc 1.10's DICOMweb does not
percent-decode query values (docs/architecture.md, facts checked): the battery avoids ``*``, ``?``, ``^``,
spaces, ``/``, ``'``, non-ASCII and lists (all of which reach Orthanc still encoded and match nothing there).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient

from shared.dicomweb.matching import DIFFERENCES
from tests.e2e import test_dicomweb_client as base
from tests.e2e.orthanc import OrthancProcess, available
from tests.e2e.test_dicomweb_client import Study, build_corpus, to_bytes, uids

# The devhost, client and STOW-loaded corpus fixtures of the client tests, for this module's own corpus.
dh, client, stored = base.dh, base.client, base.stored

pytestmark = [pytest.mark.slow, pytest.mark.peers,
              pytest.mark.skipif(not available(), reason="Orthanc + DICOMweb plugin not installed (make peers)")]


@pytest.fixture(scope="module")
def corpus() -> list[Study]:
    return build_corpus()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, corpus: list[Study]) -> DICOMwebClient:
    with OrthancProcess(Path(tmp_path_factory.mktemp("orthanc"))) as peer:
        for study in corpus:
            for ds in study.instances:
                peer.upload(to_bytes(ds))
        yield DICOMwebClient(url=peer.dicomweb_url)


def _battery(corpus: list[Study]) -> list[tuple[str, str, dict[str, str], str | None, set[str] | None]]:
    """(level, id tag, filters, rule where we differ on purpose, what we answer then)."""
    a, b, c, d = corpus
    se_c = c.instances[0].SeriesInstanceUID
    return [
        ("study", "0020000D", {"PatientID": a.patient_id}, None, None),
        ("study", "0020000D", {"AccessionNumber": c.accession}, None, None),
        ("study", "0020000D", {"StudyInstanceUID": d.uid}, None, None),
        ("study", "0020000D", {"StudyDate": "20240315"}, None, None),
        ("study", "0020000D", {"StudyDate": "20240101-20240331"}, None, None),
        ("study", "0020000D", {"StudyDate": "20240316-"}, None, None),
        ("study", "0020000D", {"StudyDate": "-20231231"}, None, None),
        ("study", "0020000D", {"ModalitiesInStudy": "CT"}, None, None),
        ("study", "0020000D", {"ModalitiesInStudy": "RTDOSE", "StudyDate": "20240101"}, None, None),
        ("study", "0020000D", {"PatientName": "Smith"}, None, None),
        ("study", "0020000D", {"PatientName": "SMITH"}, None, None),  # both case-insensitive
        ("study", "0020000D", {"PatientName": "OBERG"}, "PN_CASE_ACCENT_INSENSITIVE", {c.uid}),  # 'Öberg'
        ("study", "0020000D", {"PatientName": "Smi", "fuzzymatching": "true"}, "PN_FUZZY_PREFIX", {d.uid}),
        ("series", "0020000E", {"Modality": "RTDOSE", "StudyDate": "20240101"}, None, None),
        ("series", "0020000E", {"StudyInstanceUID": c.uid}, None, None),
        ("series", "0020000E", {"SeriesInstanceUID": se_c}, None, None),
        ("instance", "00080018", {"StudyInstanceUID": a.uid}, None, None),
        ("instance", "00080018", {"SOPInstanceUID": b.instances[1].SOPInstanceUID}, None, None),
        ("instance", "00080018", {"PatientID": d.patient_id}, None, None),
    ]


def _search(client: DICOMwebClient, level: str, filters: dict[str, str]) -> list[dict]:
    params = dict(filters)
    fuzzy = params.pop("fuzzymatching", None) == "true"
    kw = {"search_filters": params, "fuzzymatching": True if fuzzy else None}
    if level == "study":
        return client.search_for_studies(**kw)
    if level == "series":
        return client.search_for_series(**kw)
    return client.search_for_instances(**kw)


def test_same_qido_answers_as_orthanc(client: DICOMwebClient, stored: list[Study], orthanc: DICOMwebClient,
                                      corpus: list[Study]) -> None:
    mine_all = ({s.uid for s in corpus} | {ds.SeriesInstanceUID for s in corpus for ds in s.instances}
                | {ds.SOPInstanceUID for s in corpus for ds in s.instances})
    checked = 0
    for level, tag, filters, rule, ours_expected in _battery(corpus):
        ours = uids(_search(client, level, filters), tag) & mine_all  # the shared Azurite holds other tests' data
        theirs = uids(_search(orthanc, level, filters), tag)
        if rule is None:
            assert ours == theirs, (level, filters, ours, theirs)
            checked += bool(ours)
        else:
            assert rule in DIFFERENCES
            assert ours == ours_expected and theirs != ours, (rule, filters, ours, theirs)
    assert checked >= 12  # the battery is not vacuous: most queries match something on both sides

