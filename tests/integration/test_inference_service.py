"""Inference against Azurite: archive → model → SEG + SR in the inbox, idempotent, derived input skipped."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from pydicom import dcmread

from shared.errors import BadInput
from shared.inference.registry import ENABLE_BUILTIN
from shared.inference.service import run_inference
from shared.services import Services
from shared.storage import layout
from tests.phantoms import ellipsoid_ct


@pytest.fixture(scope="module")
def blob(storage: Services) -> Iterator[object]:
    service = storage.blobs.service  # type: ignore[attr-defined]  # the SDK client, for test set-up
    config = service.get_container_client(layout.CONFIG)
    config.upload_blob(layout.MODELS_DOC, ENABLE_BUILTIN, overwrite=True)
    yield storage.blobs
    config.delete_blob(layout.MODELS_DOC)


def _archive(service: object, datasets: list) -> dict:
    archive = service.service.get_container_client(layout.ARCHIVE)  # type: ignore[attr-defined]
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        path = layout.instance_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        archive.upload_blob(path, buf.getvalue(), overwrite=True)
    first = datasets[0]
    return {
        "imageStudyInstanceUid": first.StudyInstanceUID,
        "imageSeriesInstanceUid": first.SeriesInstanceUID,
        "modality": "CT",
        "derived": False,
    }


def _inbox_names(service: object, study: str) -> list[str]:
    inbox = service.service.get_container_client(layout.INBOX)  # type: ignore[attr-defined]
    names = []
    for b in inbox.list_blobs(name_starts_with="ai/"):
        ds = dcmread(io.BytesIO(inbox.get_blob_client(b.name).download_blob().readall()), stop_before_pixels=True)
        if ds.StudyInstanceUID == study:
            names.append(b.name)
    return sorted(names)


def test_results_land_in_the_inbox_once_per_series(blob: object) -> None:
    data = _archive(blob, ellipsoid_ct(tag="svc-ct"))
    first = run_inference(data, blob)
    assert first.skipped is None
    (result,) = first.results
    assert result.model == "dicomflow-body"
    assert {o.sop_class_uid for o in result.objects} == {
        "1.2.840.10008.5.1.4.1.1.66.4",
        "1.2.840.10008.5.1.4.1.1.88.34",
    }
    assert next(iter(result.measurements.values())) > 500
    names = _inbox_names(blob, data["imageStudyInstanceUid"])
    assert names == sorted(o.inbox_blob for o in result.objects)
    # Re-delivery: same UIDs, same blob names, nothing added.
    again = run_inference(data, blob)
    assert [o.sop_uid for o in again.results[0].objects] == [o.sop_uid for o in result.objects]
    assert _inbox_names(blob, data["imageStudyInstanceUid"]) == names


def test_derived_series_never_run_a_model(blob: object) -> None:
    data = _archive(blob, ellipsoid_ct(tag="svc-derived"))
    assert run_inference({**data, "derived": True}, blob).skipped == "derived-input"
    assert run_inference({**data, "modality": "SEG"}, blob).skipped == "derived-input"
    assert _inbox_names(blob, data["imageStudyInstanceUid"]) == []


def test_registry_document_controls_which_models_run(blob: object) -> None:
    data = _archive(blob, ellipsoid_ct(tag="svc-registry"))
    config = blob.service.get_container_client(layout.CONFIG)  # type: ignore[attr-defined]
    try:
        config.upload_blob(layout.MODELS_DOC, b'{"models": [{"kind": "builtin", "modalities": ["MG"]}]}',
            overwrite=True)
        assert run_inference(data, blob).skipped == "no-model-accepts"
        config.upload_blob(layout.MODELS_DOC, b'{"models": [{"kind": "nonsense"}]}', overwrite=True)
        assert run_inference(data, blob).skipped == "no-model-accepts"  # refused: nothing nobody chose runs
        config.delete_blob(layout.MODELS_DOC)
        assert run_inference(data, blob).skipped == "no-model-accepts"  # opt-in: no document, no models
        assert _inbox_names(blob, data["imageStudyInstanceUid"]) == []
    finally:
        config.upload_blob(layout.MODELS_DOC, ENABLE_BUILTIN, overwrite=True)


def test_series_without_geometry_is_skipped_with_a_reason(blob: object) -> None:
    datasets = ellipsoid_ct(tag="svc-nogeo")
    for ds in datasets:
        del ds.PixelSpacing
    data = _archive(blob, datasets)
    with pytest.raises(BadInput) as info:  # the service boundary (handle_event) makes it a skipped outcome
        run_inference(data, blob)
    assert info.value.reason == "inference-no-geometry"
