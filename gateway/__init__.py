"""dicomflow's DIMSE gateway: modalities and on-premises PACS speak to the archive over DICOM.

A long-running pynetdicom service (``python -m gateway``; a container, not a function):

* ``server.py``   the association acceptor: AE titles, allow-lists, TLS, limits, handler wiring
* ``store.py``    C-STORE SCP: received data sets stream to a file, then to ``dicom-inbox``
* ``find.py``     C-FIND SCP over the one search QIDO-RS uses (``query.py`` maps identifiers)
* ``retrieve.py`` C-MOVE and C-GET SCP, instance by instance from ``dicom-archive``
* ``commitment.py`` Storage Commitment Push Model SCP, answered from the index
* ``app.py``      the composition: settings, storage clients, index, peers document

It imports ``shared/`` only; every name it uses (containers, paths, table keys, matching
rules, settings) has its one owner there.
"""
