"""The ``reindex`` operation: index what was archived before some extended query tags were added.

It starts once no process can still write an instance row with a tag list older than the new tags
(:func:`shared.extended.registry.reindex_delay`; the operation is created with that delay). Then, study by
study (the studies table in UID order, then studies that only have pending series), it reads the study's
instance rows, takes the new tags' values from each row's DICOM JSON (a sidecar blob only for metadata too
large for the row) where the row does not hold them yet, and merges them in, each merge conditional on the
row as read (a row rewritten meanwhile was written with a list that has the tags). Values that fail their VR
are recorded as the tags' errors. The study is then settled again (``rederive``), so its series and study rows
and their lookup rows carry the values too. When every study is done, the tags become ``Ready`` (QIDO-RS
matches on them): ``queryStatus`` ``Enabled``, or ``Disabled`` when values failed (the Azure DICOM service's
rule; ``PATCH`` enables it).

Idempotent and resumable: the cursor (the last study done) is saved after each step; a study indexed twice
finds its rows holding the values already and writes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from shared.extended.registry import NewError, TagStore, row_extended
from shared.extended.tags import DISABLED, ENABLED, READY, ExtendedTag
from shared.extended.values import extract
from shared.index.records import META_IN_BLOB, unpack_meta
from shared.ingest.schedule import SettleRequest
from shared.ingest.settle import SettleService
from shared.ops.kinds import Step
from shared.ops.store import Operation
from shared.ports import Row, RowChanged
from shared.services import Services
from shared.storage import layout

log = logging.getLogger(__name__)
#: Rounds for rows that changed between their read and their merge (each re-read and looked at again).
ROUNDS = 3
BUSY_WAIT = 2.0


def step(svc: Services, op: Operation, deadline: float) -> Step:
    store = TagStore(svc.tables)
    tags = [t for t in store.all() if t.path in op.params.get("tags", []) and t.operation == op.id]
    cursor: dict[str, Any] = dict(op.cursor)
    results: dict[str, Any] = {"studiesIndexed": 0, "instancesIndexed": 0, "valueErrors": 0, **op.results}
    if not tags:  # every tag of this operation was deleted meanwhile
        return Step(True, 100, cursor, results)
    if "total" not in cursor:
        cursor.update(total=sum(1 for _ in svc.index.study_uids()), done=0, phase="studies", last=None, settle=[])
    total = max(1, int(cursor["total"]))

    def progress() -> int:
        return min(99, int(100 * int(cursor["done"]) / total))

    if cursor["phase"] == "studies":
        for study in svc.index.study_uids(cursor["last"]):
            if study == cursor["last"]:
                continue
            _one(svc, study, tags, cursor, results)
            cursor["last"] = study
            if time.monotonic() > deadline:
                return Step(False, progress(), cursor, results)
        cursor.update(phase="pending", last=None)
    if cursor["phase"] == "pending":  # studies not settled yet: only pending series, no study row
        for study in sorted({p.study_instance_uid for p in svc.index.list_pending()}):
            if cursor["last"] is not None and study <= cursor["last"]:
                continue
            _one(svc, study, tags, cursor, results)
            cursor["last"] = study
            if time.monotonic() > deadline:
                return Step(False, progress(), cursor, results)
        cursor.update(phase="settle", last=None)
    waiting = [s for s in cursor.get("settle", []) if not _settled(svc, s)]
    cursor["settle"] = waiting
    if waiting:  # another settle run held them: look again shortly
        return Step(False, progress(), cursor, results, wait=BUSY_WAIT)
    _ready(store, tags)
    svc.extended_tags.invalidate()
    log.info("Reindex %s: %d studies, %d instances indexed, %d value errors; tags %s ready", op.id,
             results["studiesIndexed"], results["instancesIndexed"], results["valueErrors"],
             ",".join(t.path for t in tags))
    return Step(True, 100, cursor, results)


def _one(svc: Services, study: str, tags: list[ExtendedTag], cursor: dict[str, Any], results: dict[str, Any]) -> None:
    indexed, errors = index_study(svc, study, tags)
    cursor["done"] = int(cursor["done"]) + 1
    if indexed:
        results["studiesIndexed"] += 1
        results["instancesIndexed"] += indexed
        results["valueErrors"] += errors
        if not _settled(svc, study):
            cursor.setdefault("settle", []).append(study)


def index_study(svc: Services, study: str, tags: list[ExtendedTag]) -> tuple[int, int]:
    """Merge the tags' values into every instance row of ``study`` that lacks them: (rows merged, errors)."""
    store = TagStore(svc.tables)
    merged = errors = 0
    wanted: set[str] | None = None  # the rows to look at again (None: all)
    for _ in range(ROUNDS):
        updates: list[tuple[str, dict[str, Any], str]] = []
        failed: list[NewError] = []
        for row in svc.index.instance_rows(study):
            if wanted is not None and row["RowKey"] not in wanted:
                continue
            held = row_extended(row)
            missing = [t for t in tags if t.key not in held]
            if not missing:
                continue
            doc = _doc(svc, row)
            if doc is None:
                log.warning("Reindex: study=%s row %s has no metadata to index", study, row["RowKey"])
                continue
            values, bad = extract(doc, missing)
            held.update(values)
            updates.append((str(row["RowKey"]), {"extended": orjson.dumps(held).decode()}, row.etag))
            failed += [NewError(e.tag.path, study, str(row.get("series_instance_uid", "")),
                                str(row.get("sop_instance_uid", "")), e.message) for e in bad]
        if failed:
            store.record_errors(failed)
        lost = set(svc.index.merge_instance_fields(study, updates))
        merged += len(updates) - len(lost)
        errors += len(failed)
        if not lost:
            break
        wanted = lost
    return merged, errors


def _doc(svc: Services, row: Row) -> dict[str, Any] | None:
    raw = unpack_meta(row)
    if raw is None and row.get(META_IN_BLOB):
        raw = svc.blobs.read(layout.METADATA, layout.instance_metadata_path(
            str(row.get("study_instance_uid", "")), str(row.get("series_instance_uid", "")),
            str(row.get("sop_instance_uid", ""))))
    return orjson.loads(raw) if raw else None


def _settled(svc: Services, study: str) -> bool:
    """Settle ``study`` again now (its series, study and lookup rows take the values); False if another run
    holds it (its own message follows; the operation looks again)."""
    return SettleService(svc).settle(SettleRequest(study, rederive=True)).state not in ("busy", "raced")


def _ready(store: TagStore, tags: list[ExtendedTag]) -> None:
    for tag in tags:
        for _ in range(5):
            got = store.get(tag.path)
            if got is None or got[0].operation != tag.operation:
                break  # deleted (or deleted and added again) meanwhile
            current, etag = got
            failed = current.has_errors or store.error_count(tag.path) > 0
            ready = ExtendedTag(current.path, current.vr, current.level, current.private_creator, READY,
                                DISABLED if failed else ENABLED, current.operation, current.gen, failed)
            try:
                store.replace(ready, etag)
                break
            except RowChanged:
                continue
