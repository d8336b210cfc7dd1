"""Extended query tags: QIDO-RS matching on attributes beyond the built-in list, the Azure DICOM service's way.

An administrator adds tags (``POST {dicomweb}/extendedquerytags`` with ``[{"path": "00180050", "vr": "DS",
"level": "Series"}, ...]``, standard or private, study, series or instance level); a ``reindex`` operation
(:mod:`shared.ops`) indexes what is already archived, and QIDO-RS matches on a tag once it is ``Ready``.

* :mod:`shared.extended.tags`: the tag model, the one list of supported VRs, and the checks of an add request.
* :mod:`shared.extended.values`: a tag's values from an instance's DICOM JSON, checked against the tag's VR
  (a value that fails is an error counted for the tag, never a failed ingest).
* :mod:`shared.extended.registry`: the tags table (tags and their errors) and the per-process cache that ingest
  and QIDO read (no storage request on their paths).
* :mod:`shared.extended.reindex`: the operation step that indexes existing instances.
* :mod:`shared.extended.service`: the HTTP resources (``extendedquerytags``).

Where values live: in the ``extended`` property of the instance row, written in the row's own transaction at
ingest (so no request is added per instance), keyed by the tag's path and generation (``00180050.<gen>``: a tag
deleted and added again is indexed afresh). Settle carries them to the series and study rows like any field.
"""
