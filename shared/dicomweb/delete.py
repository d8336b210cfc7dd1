"""DELETE study / series / instance: archive, sidecars, frame index, index and lookup rows, events.

Order: events last, so a subscriber that reacts to ``Dicom.ImageDeleted`` never finds
the instance still served. Per instance: archive blob, sidecar, frame index, instance
row, its SOP lookup row. Per series touched: the metadata bundle (rewritten by settle
if members remain; until then series metadata falls back to the sidecars). Then the
study goes to the settle queue with no delay: settle recomputes the aggregates and
study/series/name/date lookups, or removes them when nothing is left. Finally one
``Dicom.ImageDeleted`` per instance through the shared publisher.

Every step tolerates "already gone", so a retried DELETE completes a half-done one.
Answers 204; 404 if neither the index nor the archive knows the target.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.dicomweb.errors import NotFoundProblem
from shared.dicomweb.reply import Reply
from shared.events.payloads import image_event
from shared.events.types import EventType
from shared.index import keys
from shared.index.records import InstanceRecord
from shared.ingest.settle import enqueue_settle
from shared.storage import layout

log = logging.getLogger(__name__)


def delete(call: Any) -> Reply:
    from shared.dicomweb.service import context
    from shared.dicomweb.wado import Wado

    ctx = context(call)
    ctx.ensure_ready()
    study, series, sop = call.study, call.series, call.sop
    assert study
    index = ctx.index
    # What the index knows, and what the archive holds (either may lead after a crash).
    records: dict[tuple[str, str], InstanceRecord] = {}
    if sop:
        assert series
        got = index.get_instance(study, series, sop)
        if got is not None:
            records[(series, sop)] = got.record
    else:
        rows = index.list_series_instances(study, series) if series else index.list_study_instances(study)
        records.update({(r.series_instance_uid, r.sop_instance_uid): r for r in rows})
    archived = Wado(ctx.clients.blob).list_instances(study, series)
    for a in archived:
        if sop and a.sop != sop:
            continue
        records.setdefault((a.series, a.sop), InstanceRecord(study_instance_uid=study, series_instance_uid=a.series,
                                                             sop_instance_uid=a.sop, size_bytes=a.size))
    if not records:
        what = f"Instance {sop}" if sop else f"Series {series}" if series else f"Study {study}"
        raise NotFoundProblem(f"{what} is not in the archive or the index: nothing to delete.")

    svc = ctx.clients.blob
    for (se, i), _rec in sorted(records.items()):
        for container, path in ((layout.ARCHIVE, layout.instance_path(study, se, i)),
                                (layout.METADATA, layout.instance_metadata_path(study, se, i)),
                                (layout.METADATA, layout.frame_index_path(study, se, i))):
            _delete_blob(svc, container, path)
        try:
            index.delete_instance(study, se, i)
        except ResourceNotFoundError:
            pass
        index.delete_lookups([(keys.uid_lookup_pk(keys.Lookup.SOP, i), i)])
    for se in sorted({se for se, _ in records}):
        _delete_blob(svc, layout.METADATA, layout.series_metadata_path(study, se))

    # Aggregates and lookups: settle recomputes them from what is left (the same path as ingest).
    enqueue_settle(ctx, study, 0, force=True)

    settings = ctx.settings
    sequence = int(time.time() * 1000)
    events = [image_event(EventType.IMAGE_DELETED, rec, service_host=settings.service_host_name,
                          partition=settings.partition_name,
                          archive_path=f"{layout.ARCHIVE}/{layout.instance_path(study, se, i)}", sequence=sequence)
              for (se, i), rec in sorted(records.items())]
    ctx.publisher.publish(events)
    log.info("DELETE study=%s series=%s sop=%s: %d instance(s) removed", study, series or "*", sop or "*",
             len(records))
    return Reply(204)


def _delete_blob(svc: Any, container: str, path: str) -> None:
    try:
        svc.get_blob_client(container, path).delete_blob()
    except ResourceNotFoundError:
        pass
