"""Sending an object without pixel data to a peer that accepted another uncompressed syntax (a C-GET of a key
object selection stored as Explicit VR, asked for by a getscu that takes Implicit VR only): the data set is
written in the peer's syntax all the way down, sequence items included."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import decode, encode

from shared.dicom import transcode
from shared.rejection.codes import RejectionCode
from shared.rejection.notes import Reference, build_note

IMPLICIT = "1.2.840.10008.1.2"
CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.peers
def test_a_note_with_defined_length_items_reaches_an_implicit_only_peer_intact(tmp_path: Path) -> None:
    note = build_note(RejectionCode.PATIENT_SAFETY, [Reference("1.2.3", "1.2.4", f"1.2.5.{i}", CT) for i in (1, 2)],
                      series="1.2.6", sop="1.2.7", patient={"PatientID": "PID-1"})
    src, dcmtk_out = tmp_path / "note.dcm", tmp_path / "explicit-lengths.dcm"
    note.save_as(src, enforce_file_format=True)
    # dcmtk (what storescu sends and the gateway archives) writes sequences and items with explicit lengths.
    subprocess.run(["dcmconv", "+te", "+e", str(src), str(dcmtk_out)], check=True, capture_output=True)
    stored = pydicom.dcmread(dcmtk_out)
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"

    sent = transcode.for_peer(stored, {IMPLICIT})
    assert sent.file_meta.TransferSyntaxUID == IMPLICIT
    # pynetdicom's C-STORE refuses a data set whose read encoding differs from the context's syntax ("'dataset'
    # is encoded as explicit VR little endian but the file meta has ... Implicit VR Little Endian").
    assert sent.original_encoding == (True, True)
    wire = encode(sent, True, True)  # what pynetdicom puts on the association
    assert wire is not None
    received = decode(io.BytesIO(wire), True, True)
    assert received == pydicom.dcmread(src)
    assert [str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in received.ContentSequence] == [
        "1.2.5.1", "1.2.5.2"]
    assert stored.original_encoding == (False, True)  # the archived copy the gateway read is left as it was
