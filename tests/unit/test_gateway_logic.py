"""The gateway's pure logic: C-FIND identifiers as QIDO queries, patient grouping, response character set,
the peers document and the gateway settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from gateway.query import (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    IdentifierError,
    parse_identifier,
    patients,
    response,
    response_charset,
)
from shared.config import GatewaySettings, Settings, SettingsError
from shared.dicomweb.attributes import Level
from shared.dicomweb.qido import MatchKind, parse_query
from shared.errors import BadInput, Reason
from shared.gateway.destinations import parse


def ident(level: str, **values: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in values.items():
        setattr(ds, k, v)
    return ds


def test_identifier_gives_the_query_qido_would_parse() -> None:
    req = parse_identifier(ident("STUDY", PatientName="mul*", StudyDate="20200101-20201231", StudyInstanceUID="",
                                 ModalitiesInStudy=""), STUDY_ROOT_FIND, limit=50)
    qido = parse_query([("PatientName", "mul*"), ("StudyDate", "20200101-20201231")], Level.STUDY)
    assert set(req.query.matches) == set(qido.matches) and len(req.query.matches) == 2
    assert req.query.level is Level.STUDY and req.query.limit == 50
    assert [k for k, _t, _vr in req.keys] == ["StudyDate", "ModalitiesInStudy", "PatientName", "StudyInstanceUID"]


def test_image_level_with_empty_return_keys_and_uid_lists() -> None:
    req = parse_identifier(ident("IMAGE", SeriesInstanceUID=["1.2.3", "1.2.4"], InstanceNumber=None,
                                 SOPInstanceUID=""), STUDY_ROOT_FIND, limit=10)
    (m,) = req.query.matches
    assert req.query.level is Level.INSTANCE and m.kind is MatchKind.LIST and m.values == ("1.2.3", "1.2.4")


def test_unsupported_keys_are_listed_not_matched_and_bad_values_say_why() -> None:
    req = parse_identifier(ident("STUDY", OtherPatientIDs="X", PatientID="P1"), STUDY_ROOT_FIND, limit=10)
    assert req.unsupported == ["OtherPatientIDs"] and len(req.query.matches) == 1
    with pytest.raises(IdentifierError, match="StudyDate"):
        parse_identifier(ident("STUDY", StudyDate="yesterday"), STUDY_ROOT_FIND, limit=10)
    with pytest.raises(IdentifierError, match="Patient Root"):
        parse_identifier(ident("PATIENT", PatientID="P1"), STUDY_ROOT_FIND, limit=10)
    with pytest.raises(IdentifierError, match="Level"):
        parse_identifier(ident("WARD"), PATIENT_ROOT_FIND, limit=10)


def test_patient_level_matches_only_patient_keys_and_groups_studies() -> None:
    req = parse_identifier(ident("PATIENT", PatientID="P*", Modality="CT"), PATIENT_ROOT_FIND, limit=10)
    assert req.unsupported == ["Modality"]
    views = [{"PatientID": "P1", "PatientName": "A^B", "NumberOfStudyRelatedSeries": 2,
              "NumberOfStudyRelatedInstances": 5},
             {"PatientID": "P1", "PatientName": "A^B", "NumberOfStudyRelatedSeries": 1,
              "NumberOfStudyRelatedInstances": 3},
             {"PatientID": "P2", "PatientName": "C^D", "NumberOfStudyRelatedSeries": 1,
              "NumberOfStudyRelatedInstances": 1}]
    got = list(patients(views))
    assert [(g["PatientID"], g["NumberOfPatientRelatedStudies"], g["NumberOfPatientRelatedInstances"])
            for g in got] == [("P1", 2, 8), ("P2", 1, 1)]


def test_response_character_set_keeps_the_request_s_when_values_fit() -> None:
    assert response_charset([], [{"PatientName": "Doe^John"}]) == []
    assert response_charset(["ISO_IR 100"], [{"PatientName": "Müller^Jürgen"}]) == ["ISO_IR 100"]
    assert response_charset(["ISO_IR 100"], [{"PatientName": "Иванов^Пётр"}]) == ["ISO_IR 192"]
    assert response_charset([], [{"PatientName": "山田^太郎"}]) == ["ISO_IR 192"]


def test_response_answers_every_requested_key() -> None:
    req = parse_identifier(ident("STUDY", PatientName="", StudyInstanceUID="", OtherPatientIDs=""),
                           STUDY_ROOT_FIND, limit=10)
    ds = response(req, {"PatientName": "Müller^Jürgen", "StudyInstanceUID": "1.2.3"}, retrieve_ae="DICOMFLOW",
                  charset=["ISO_IR 192"])
    assert str(ds.PatientName) == "Müller^Jürgen" and ds.StudyInstanceUID == "1.2.3"
    assert "OtherPatientIDs" in ds and not ds.OtherPatientIDs and ds.RetrieveAETitle == "DICOMFLOW"


def test_destinations_document_is_validated_with_the_schema_file() -> None:
    peers = parse(json.dumps({"destinations": [{"ae": "PACS", "host": "10.0.0.5", "port": 104, "tls": True}]}).encode())
    assert peers["PACS"].port == 104 and peers["PACS"].tls
    for bad, where in (({"destinations": [{"ae": "PACS", "host": "h", "port": 0}]}, "destinations/0/port"),
                       ({"destinations": [{"ae": "A" * 17, "host": "h", "port": 1}]}, "destinations/0/ae"),
                       ({"destination": []}, "(document)")):
        with pytest.raises(BadInput) as err:
            parse(json.dumps(bad).encode())
        assert err.value.reason is Reason.BAD_CONFIG and where in err.value.message
    with pytest.raises(BadInput, match="twice"):
        parse(json.dumps({"destinations": [{"ae": "X", "host": "h", "port": 1}] * 2}).encode())


def test_gateway_settings_defaults_and_errors_that_name_the_setting() -> None:
    g = Settings.from_env({}).gateway
    assert (g.ae_title, g.host, g.port, g.tls) == ("DICOMFLOW", "127.0.0.1", 11112, False)
    g = GatewaySettings.from_env({"DICOMFLOW_GATEWAY_ALLOWED_AE_TITLES": "A, B",
                                  "DICOMFLOW_GATEWAY_ALLOWED_NETWORKS": "10.0.0.0/8"})
    assert g.allowed_ae_titles == ("A", "B") and g.allowed_networks == ("10.0.0.0/8",)
    for env, name in (({"DICOMFLOW_GATEWAY_PORT": "0"}, "DICOMFLOW_GATEWAY_PORT"),
                      ({"DICOMFLOW_GATEWAY_ALLOWED_NETWORKS": "ten"}, "ALLOWED_NETWORKS"),
                      ({"DICOMFLOW_GATEWAY_AE_TITLE": "X" * 17}, "AE_TITLE"),
                      ({"DICOMFLOW_GATEWAY_TLS_KEY_FILE": "k.pem"}, "TLS_CERT_FILE")):
        with pytest.raises(SettingsError, match=name):
            GatewaySettings.from_env(env)


# -- C-STORE spool: the handler removes its data set on every way out -------------------------------------

def test_a_store_handler_that_raises_still_removes_its_data_set(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from gateway import store
    from gateway.spool import Spool

    spool = Spool(tmp_path / "spool", max_bytes=1024 * 1024)
    spool.prepare()
    f = spool.open()
    f.write(b"\0" * 128 + b"DICM")
    f.close()

    class Broken:
        def write(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug in the upload path")

    gw = SimpleNamespace(blobs=Broken())
    event = SimpleNamespace(dataset_path=f.name, assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="X")),
                            request=SimpleNamespace(AffectedSOPInstanceUID="1.2.3"))
    with pytest.raises(RuntimeError):
        store.handle_store(event, gw, spool)  # type: ignore[arg-type]
    assert not list((tmp_path / "spool").iterdir())


def test_a_spool_file_stops_at_the_cap_and_keeps_nothing(tmp_path: Path) -> None:
    from gateway.spool import Spool

    spool = Spool(tmp_path / "spool", max_bytes=1000)
    spool.prepare()
    (tmp_path / "spool" / "left.dcm").write_bytes(b"1")
    spool.prepare()  # a new process empties what a crashed one left
    assert not list((tmp_path / "spool").iterdir())
    f = spool.open()
    f.write(b"a" * 600)
    f.write(b"b" * 600)  # over the cap: truncated, flagged, nothing more written
    f.write(b"c" * 600)
    f.flush()
    assert spool.overflowed(f.name) and Path(f.name).stat().st_size == 0
    assert spool.release(None) == 1 and not list((tmp_path / "spool").iterdir())


def test_gateway_exposure_needs_an_allow_list_or_mutual_tls_beyond_loopback() -> None:
    def problem(**env: str) -> str | None:
        return GatewaySettings.from_env({f"DICOMFLOW_GATEWAY_{k}": v for k, v in env.items()}).exposure_problem()

    assert problem() is None and problem(HOST="::1") is None and problem(HOST="localhost") is None
    assert "ALLOWED_AE_TITLES" in (problem(HOST="0.0.0.0") or "")
    assert "ALLOWED_AE_TITLES" in (problem(HOST="10.1.2.3", ALLOWED_NETWORKS="10.0.0.0/8") or "")
    assert problem(HOST="0.0.0.0", ALLOWED_AE_TITLES="CT1") is None
    assert problem(HOST="0.0.0.0", TLS_CERT_FILE="c", TLS_KEY_FILE="k") is not None  # TLS without client certs
    assert problem(HOST="0.0.0.0", TLS_CERT_FILE="c", TLS_KEY_FILE="k", TLS_CA_FILE="ca") is None


def test_a_spool_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    from gateway.spool import Spool, SpoolError

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "spool").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SpoolError, match="DICOMFLOW_GATEWAY_SPOOL_DIR"):
        Spool(tmp_path / "spool", max_bytes=4096).prepare()
