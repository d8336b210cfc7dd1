"""Index rows round-trip through real Table storage (Azurite)."""

from __future__ import annotations

from shared.index.records import InstanceRecord
from shared.index.store import IndexStore
from shared.storage.clients import StorageClients


def test_instances_over_2_gib_keep_their_size_and_offsets(ready_clients: StorageClients) -> None:
    store = IndexStore(ready_clients.table)
    big = 5 * 2**30 + 123
    rec = InstanceRecord(study_instance_uid="1.2.3.999", series_instance_uid="1.2.3.999.1",
                         sop_instance_uid="1.2.3.999.1.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.13.1.3",
                         size_bytes=big, pixel_data_offset=20_000, pixel_data_length=big - 20_000,
                         number_of_frames=600, patient_name="Müller^Jürgen=山田^太郎")
    store.put_instance(rec, expect=None, arrival=1.0)
    got = store.get_instance("1.2.3.999", "1.2.3.999.1", "1.2.3.999.1.1")
    assert got is not None
    assert got.record.size_bytes == big and got.record.pixel_data_length == big - 20_000
    assert got.record.pixel_data_offset == 20_000 and got.record.patient_name == "Müller^Jürgen=山田^太郎"
