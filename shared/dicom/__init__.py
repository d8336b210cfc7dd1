"""DICOM header reading (seekable ranged reader), validation, DICOM JSON."""
