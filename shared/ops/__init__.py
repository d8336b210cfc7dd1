"""Long-running operations: the one store and runner for work that outlives an HTTP request.

The shape follows the Azure DICOM service: a request that starts one answers ``202`` with
``{"id", "href"}``; ``GET {dicomweb}/operations/{id}`` answers the operation's status
(``operationId``, ``type``, ``createdTime``, ``lastUpdatedTime``, ``status``, ``percentComplete``,
``resources``, ``results``): ``202`` while it runs, ``200`` once it is ``completed`` or ``failed``.

* :mod:`shared.ops.store`: :class:`~shared.ops.store.Operation` rows in the operations table.
* :mod:`shared.ops.runner`: :func:`~shared.ops.runner.start` creates one and queues its first step;
  the ``operations`` queue function runs steps (:func:`~shared.ops.runner.run_step`), each bounded in
  time, saving a cursor after each, so a crash resumes where the last saved step ended.
* :mod:`shared.ops.kinds`: which handler runs which operation type (the one list of types).

A handler is ``step(services, operation, deadline) -> Step``: it does some work from
``operation.cursor``, stops by ``deadline`` (``time.monotonic()``), and returns the new cursor, the
progress and the results so far. Steps must be idempotent: a step may run twice after a crash.
"""
