"""The drill's object replication emulator (tools/replication.py) behaves as the Azure docs describe: the
destination container refuses writes (409) but serves reads and deletes, replication copies content and metadata
asynchronously, deletes replicate, and a destination that was down catches up when it answers again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from devhost.azurite import Azurite, connection_string, free_port
from tests.waiting import wait_until
from tools.replication import READ_ONLY_CODE, Policy, ReadOnlyProxy, Replicator


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[Azurite]:
    """A second account, on disk (it is stopped and started again below)."""
    az = Azurite(free_port(), free_port(), free_port(), location=tmp_path / "dest")
    az.start()
    yield az
    az.stop()


def test_destination_is_read_only_and_replication_catches_up(azurite: Azurite, destination: Azurite) -> None:
    src = BlobServiceClient.from_connection_string(azurite.connection_string)
    dst = BlobServiceClient.from_connection_string(destination.connection_string)
    for service in (src, dst):
        try:
            service.create_container("arch-emu")
        except HttpResponseError:
            pass
    src.get_blob_client("arch-emu", "s/1.dcm").upload_blob(b"one", metadata={"dicomflow_stamp": "1-a"}, overwrite=True)
    with ReadOnlyProxy(destination.blob_port, ["arch-emu"]) as proxy:
        app = BlobServiceClient.from_connection_string(
            connection_string(proxy.port, destination.queue_port, destination.table_port))
        with pytest.raises(HttpResponseError) as refused:
            app.get_blob_client("arch-emu", "mine.dcm").upload_blob(b"x")
        assert refused.value.status_code == 409 and refused.value.error_code == READ_ONLY_CODE
        replicator = Replicator([Policy("emu", azurite.connection_string, destination.connection_string,
                                        ("arch-emu",))], interval=0.2)
        with replicator:
            assert replicator.wait_caught_up("emu", 30)
            copy = app.get_blob_client("arch-emu", "s/1.dcm")  # reads pass the proxy
            assert copy.download_blob().readall() == b"one"
            assert copy.get_blob_properties().metadata == {"dicomflow_stamp": "1-a"}

            destination.stop()  # the destination region is lost; the source keeps changing
            src.get_blob_client("arch-emu", "s/2.dcm").upload_blob(b"two", overwrite=True)
            src.get_blob_client("arch-emu", "s/1.dcm").delete_blob()
            wait_until(lambda: replicator.state["emu"].failures > 0, timeout=30, what="a failed pass")
            destination.start()
            assert replicator.wait_caught_up("emu", 60)
            names = sorted(b.name for b in app.get_container_client("arch-emu").list_blobs())
            assert names == ["s/2.dcm"]  # the copy made meanwhile arrived, the delete too
            app.get_blob_client("arch-emu", "s/2.dcm").delete_blob()  # deletes are allowed at the destination
        assert proxy.refused == 1
