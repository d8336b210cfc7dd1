"""DICOMweb (PS3.18): QIDO-RS matching, multipart, negotiation and the retrieve/store/delete services.

Modules: ``attributes`` (what we match and return), ``qido`` (query parsing),
``matching`` (PS3.4 C.2.2.2 on index records, with our named differences),
``response`` (DICOM JSON), ``multipart`` and ``media`` (bodies and Accept),
``errors`` (HTTP problems). ``functions/dicomweb.py`` is the thin HTTP adapter.
"""
