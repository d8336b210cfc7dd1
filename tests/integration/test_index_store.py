"""The ports' contract, held by the Azure adapters (against Azurite) and by the in-memory fakes alike.

The unit tests of the services run on the fakes; these tests are what makes that honest: every
behaviour the services rely on is checked on both backends with the same assertions.
"""

from __future__ import annotations

import io
import uuid
import zlib
from collections.abc import Iterator

import orjson
import pytest

from shared.index.records import InstanceRecord, pack_meta, unpack_meta
from shared.index.store import IndexStore
from shared.ports import BlobGone, BlobStore, RowChanged, RowExists, TableOp, TableStore
from shared.services import Services
from tests.fakes import MemoryBlobStore, MemoryTableStore

TABLE = "contracttest"
CONTAINER = "contract-test"


@pytest.fixture(params=["azurite", "memory"])
def tables(request: pytest.FixtureRequest, storage: Services) -> Iterator[TableStore]:
    store: TableStore = storage.tables if request.param == "azurite" else MemoryTableStore()
    store.ensure_tables([TABLE])
    yield store


@pytest.fixture(params=["azurite", "memory"])
def blobs(request: pytest.FixtureRequest, storage: Services) -> Iterator[BlobStore]:
    store: BlobStore = storage.blobs if request.param == "azurite" else MemoryBlobStore()
    store.ensure_containers([CONTAINER])
    yield store


def pk() -> str:
    return uuid.uuid4().hex


def test_insert_conflicts_and_conditional_replace(tables: TableStore) -> None:
    p = pk()
    etag = tables.insert(TABLE, {"PartitionKey": p, "RowKey": "a", "n": 1})
    with pytest.raises(RowExists):
        tables.insert(TABLE, {"PartitionKey": p, "RowKey": "a", "n": 2})
    new = tables.replace(TABLE, {"PartitionKey": p, "RowKey": "a", "n": 3}, etag=etag)
    with pytest.raises(RowChanged):
        tables.replace(TABLE, {"PartitionKey": p, "RowKey": "a", "n": 4}, etag=etag)  # stale etag
    row = tables.get(TABLE, p, "a")
    assert row is not None and row["n"] == 3 and row.etag == new
    assert tables.merge(TABLE, {"PartitionKey": p, "RowKey": "a", "m": "x"})
    assert not tables.merge(TABLE, {"PartitionKey": p, "RowKey": "nope", "m": "x"})
    row = tables.get(TABLE, p, "a")
    assert row is not None and (row["n"], row["m"]) == (3, "x")
    tables.delete(TABLE, p, "a")
    tables.delete(TABLE, p, "a")  # absent: fine
    assert tables.get(TABLE, p, "a") is None


def test_transactions_are_all_or_nothing(tables: TableStore) -> None:
    p = pk()
    tables.insert(TABLE, {"PartitionKey": p, "RowKey": "b", "n": 1})
    with pytest.raises(RowExists):
        tables.transact(TABLE, [TableOp("insert", {"PartitionKey": p, "RowKey": "a"}),
                                TableOp("insert", {"PartitionKey": p, "RowKey": "b"})])
    assert tables.get(TABLE, p, "a") is None  # the first insert was rolled back
    tables.transact(TABLE, [TableOp("insert", {"PartitionKey": p, "RowKey": "a", "n": 1}),
                            TableOp("merge", {"PartitionKey": p, "RowKey": "b", "m": 2})])
    row = tables.get(TABLE, p, "b")
    assert row is not None and (row["n"], row["m"]) == (1, 2)


def test_values_round_trip_as_plain_python(tables: TableStore) -> None:
    p = pk()
    big = 5 * 2**30 + 123
    meta = pack_meta({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen=山田^太郎"}]}})
    assert meta is not None
    tables.upsert(TABLE, {"PartitionKey": p, "RowKey": "v", "big": big, "small": -7, "flag": True,
                          "text": "Иванов^Пётр", "ratio": 0.5, **meta})
    row = tables.get(TABLE, p, "v")
    assert row is not None
    assert (row["big"], row["small"], row["flag"], row["text"], row["ratio"]) == (big, -7, True, "Иванов^Пётр", 0.5)
    assert b"\xe5\xb1\xb1\xe7\x94\xb0" in (unpack_meta(row) or b"")  # 山田 in UTF-8


def test_metadata_rows_written_with_zlib_before_lz4_still_read(tables: TableStore) -> None:
    """Rows packed before the switch to LZ4 hold a zlib stream; both kinds read back, through Azurite,
    including metadata split over several chunks."""
    doc = {f"0011{i:04X}": {"vr": "LO", "Value": [uuid.uuid4().hex + uuid.uuid4().hex]} for i in range(3000)}
    raw = orjson.dumps(doc)
    p = pk()
    new = pack_meta(doc)
    assert new is not None and len(new) > 1 and new["meta0"][:4] == b"\x04\x22\x4d\x18"  # an LZ4 frame
    packed = zlib.compress(raw, 1)
    old = {f"meta{i}": packed[k:k + 60_000] for i, k in enumerate(range(0, len(packed), 60_000))}
    tables.upsert(TABLE, {"PartitionKey": p, "RowKey": "new", **new})
    tables.upsert(TABLE, {"PartitionKey": p, "RowKey": "old", **old})
    for rk in ("new", "old"):
        row = tables.get(TABLE, p, rk)
        assert row is not None and unpack_meta(row) == raw


def test_queries_by_partition_ranges_and_columns(tables: TableStore) -> None:
    p = pk()
    for rk in ("a1", "a2", "b1", "~c"):
        tables.upsert(TABLE, {"PartitionKey": p, "RowKey": rk, "x": rk, "y": 1})
    assert [r["RowKey"] for r in tables.query(TABLE, pk=p, rk_range=("a", "b"))] == ["a1", "a2"]
    assert [r["RowKey"] for r in tables.query(TABLE, pk=p, rk_range=("0", "~"))] == ["a1", "a2", "b1"]
    assert [r["RowKey"] for r in tables.query(TABLE, pk=p, equals={"x": "b1"})] == ["b1"]
    narrow = list(tables.query(TABLE, pk=p, rk_range=("b", "c"), select=["PartitionKey", "RowKey", "x"]))
    assert [set(r) - {"y"} for r in narrow] == [set(narrow[0])] and "y" not in narrow[0]
    lo, hi = p[:4], p[:4] + "\U0010ffff"
    assert p in {r["PartitionKey"] for r in tables.query(TABLE, pk_range=(lo, hi))}
    # Small pages give the same rows, in order, across continuations.
    assert [r["RowKey"] for r in tables.query(TABLE, pk=p, page_size=1)] == ["a1", "a2", "b1", "~c"]


def test_instance_rows_keep_sizes_over_2_gib_and_their_metadata(tables: TableStore) -> None:
    store = IndexStore(tables)
    store.t.ensure_tables(["dicominstances"])
    from shared.index.records import Action, ChangeEntry

    study = "1.2.3.999." + str(uuid.uuid4().int)[:12]
    big = 5 * 2**30 + 123
    rec = InstanceRecord(study_instance_uid=study, series_instance_uid=study + ".1",
                         sop_instance_uid=study + ".1.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.13.1.3",
                         size_bytes=big, pixel_data_offset=20_000, pixel_data_length=big - 20_000,
                         number_of_frames=600, patient_name="Müller^Jürgen=山田^太郎", seq=42)
    store.write_instance(rec, pack_meta({"a": 1}), ChangeEntry(study, rec.series_instance_uid,
                                                               rec.sop_instance_uid, Action.CREATE, 42, "t"),
                         expect=None)
    got = store.get_instance(study, rec.series_instance_uid, rec.sop_instance_uid)
    assert got is not None and got.meta == b'{"a":1}'
    assert got.record.size_bytes == big and got.record.pixel_data_length == big - 20_000
    assert got.record.patient_name == "Müller^Jürgen=山田^太郎"
    part = store.study_partition(study)
    assert len(part.instances) == 1 and [c.seq for c in part.changes] == [42]


def test_blob_reads_are_pinned_to_the_first_version(blobs: BlobStore) -> None:
    name = f"{pk()}/x.bin"
    blobs.write(CONTAINER, name, b"0123456789")
    b = blobs.open(CONTAINER, name)
    assert b.read_range(2, 3) == (b"234", 10)
    assert b.etag and b.content_md5 is not None
    blobs.write(CONTAINER, name, b"abcdefghij")
    with pytest.raises(BlobGone):
        b.read_range(0, 2)
    with pytest.raises(BlobGone):
        blobs.open(CONTAINER, f"{pk()}/absent").read_range(0, 1)


def test_copies_are_server_side_conditional_and_pinned(blobs: BlobStore) -> None:
    src, dst = f"{pk()}/src", f"{pk()}/dst"
    blobs.write(CONTAINER, src, b"first")
    b = blobs.open(CONTAINER, src)
    b.read_range(0, 1)
    assert blobs.copy(b, CONTAINER, dst, metadata={"reason": "x"}, if_absent=True)
    assert not blobs.copy(b, CONTAINER, dst, if_absent=True)  # the target exists: nothing copied
    props = blobs.properties(CONTAINER, dst)
    assert props is not None and props.metadata.get("reason") == "x" and props.size == 5
    blobs.write(CONTAINER, src, b"second")
    with pytest.raises(BlobGone):
        blobs.copy(b, CONTAINER, dst)  # the version read is gone
    out = io.BytesIO()
    blobs.download_to(CONTAINER, dst, out)
    assert out.getvalue() == b"first"
    assert [i.name for i in blobs.list(CONTAINER, dst.split("/")[0])] == [dst]
    assert blobs.delete(CONTAINER, dst) and not blobs.delete(CONTAINER, dst)
