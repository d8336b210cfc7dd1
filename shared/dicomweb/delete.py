"""DELETE study / series / instance: archive blobs, frame indexes and sidecars, then the rows.

Per instance: the archive blob, its frame index and metadata sidecar (if any), and the bundles of
the series touched (series metadata is served from the rows until settle rebuilds them); then, one
transaction per 100 instances, the instance rows and a ``delete`` change entry each. A settle
run (scheduled at once) then announces ``Dicom.ImageDeleted`` and the change-feed entries from
those change entries, rewrites the aggregates, lookups and bundles of what is left, or removes
them when nothing is. Blobs go first, so a subscriber reacting to ``ImageDeleted`` never finds
the instance still served.

Every step tolerates "already gone", so a retried DELETE completes a half-done one.
Answers 204; 404 if neither the index nor the archive knows the target.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.audit import scope as audit_scope
from shared.dicomweb.errors import NotFoundProblem
from shared.dicomweb.reply import Reply
from shared.index.records import Action, ChangeEntry
from shared.index.store import utcnow
from shared.storage import layout

if TYPE_CHECKING:
    from shared.dicomweb.service import Call

log = logging.getLogger(__name__)


def delete(call: Call) -> Reply:
    from shared.dicomweb.service import services
    from shared.dicomweb.wado import Wado

    svc = services(call)
    svc.ensure_ready()
    study, series, sop = call.study, call.series, call.sop
    assert study
    index = svc.index
    # What the index knows, and what the archive holds (either may lead after a crash).
    targets: set[tuple[str, str]] = set()
    if sop:
        assert series
        if index.get_instance(study, series, sop) is not None:
            targets.add((series, sop))
    else:
        rows = index.list_series_instances(study, series) if series else index.list_study_instances(study)
        targets.update((r.series_instance_uid, r.sop_instance_uid) for r in rows)
    for a in Wado(svc.blobs, index).list_instances(study, series):
        if not sop or a.sop == sop:
            targets.add((a.series, a.sop))
    if not targets:
        what = f"Instance {sop}" if sop else f"Series {series}" if series else f"Study {study}"
        raise NotFoundProblem(f"{what} is not in the archive or the index: nothing to delete.")

    for se, i in sorted(targets):
        audit_scope.note(study, se, i)
    for se, i in sorted(targets):
        svc.blobs.delete(layout.ARCHIVE, layout.instance_path(study, se, i))
        svc.blobs.delete(layout.METADATA, layout.frame_index_path(study, se, i))
        svc.blobs.delete(layout.METADATA, layout.instance_metadata_path(study, se, i))
    for se in sorted({se for se, _ in targets}):  # series metadata comes from the rows until settle
        svc.blobs.delete(layout.METADATA, layout.series_metadata_path(study, se))
    now = utcnow()
    changes = [ChangeEntry(study, se, i, Action.DELETE, svc.sequencer.next(), now) for se, i in sorted(targets)]
    indexed = {(r.series_instance_uid, r.sop_instance_uid) for r in index.list_study_instances(study)}
    index.remove_instances(study, [t for t in sorted(targets) if t in indexed], changes)
    # Events, feed, aggregates and lookups: the settle step, now (the same path as ingest).
    svc.scheduler.reschedule(study, 0, force=True)
    log.info("DELETE study=%s series=%s sop=%s: %d instance(s) removed", study, series or "*", sop or "*",
             len(targets))
    return Reply(204)
