"""Running a model again on the same input (a re-delivered or reprocessed SeriesStable) writes nothing,
although highdicom stamps each new SEG/SR with its own creation times; a changed input replaces its results.
On in-memory fakes of the blob port, with the built-in model and a real phantom series."""

from __future__ import annotations

import io

from shared.inference.builtin import BodySegmentation
from shared.inference.service import run_inference
from shared.storage import layout
from tests.fakes import memory_services
from tests.phantoms import ellipsoid_ct


def archive(blobs, series) -> dict:  # type: ignore[no-untyped-def]
    for ds in series:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.put(layout.ARCHIVE, layout.instance_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID),
                  buf.getvalue())
    return {"imageStudyInstanceUid": series[0].StudyInstanceUID,
            "imageSeriesInstanceUid": series[0].SeriesInstanceUID, "modality": "CT", "derived": False}


def test_a_result_already_archived_is_not_written_again_but_a_changed_one_is() -> None:
    f = memory_services()
    data = archive(f.blobs, ellipsoid_ct(tag="rerun", size=32, pixel_mm=5.0, slice_mm=15.0))
    first = run_inference(data, f.services.blobs, models=[BodySegmentation()])
    objects = first.results[0].objects
    assert len(objects) == 2
    for o in objects:  # what ingest does with them: archive under the canonical path
        f.blobs.put(layout.ARCHIVE, layout.instance_path(data["imageStudyInstanceUid"], o.series_uid, o.sop_uid),
                    f.blobs.read(layout.INBOX, o.inbox_blob))  # type: ignore[arg-type]
    etags = {o.inbox_blob: f.blobs.properties(layout.INBOX, o.inbox_blob).etag for o in objects}  # type: ignore[union-attr]

    again = run_inference(data, f.services.blobs, models=[BodySegmentation()])
    assert [o.sop_uid for o in again.results[0].objects] == [o.sop_uid for o in objects]
    assert {n: f.blobs.properties(layout.INBOX, n).etag for n in etags} == etags  # type: ignore[union-attr]

    archive(f.blobs, ellipsoid_ct((70.0, 50.0, 55.0), tag="rerun", size=32, pixel_mm=5.0, slice_mm=15.0))
    changed = run_inference(data, f.services.blobs, models=[BodySegmentation()])
    assert [o.sop_uid for o in changed.results[0].objects] == [o.sop_uid for o in objects]  # same UIDs, replaced
    assert all(f.blobs.properties(layout.INBOX, n).etag != etags[n] for n in etags)  # type: ignore[union-attr]
