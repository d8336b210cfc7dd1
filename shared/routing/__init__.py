"""Rule-based routing of archived instances to DICOM peers, DICOMweb, worklists and exports.

Layout: ``rules.py`` (the rules document: schema, model, matching, last-good store),
``destinations.py`` (C-STORE, STOW-RS, worklist queue, export), ``deid.py``
(PS3.15 Basic Profile de-identification for exports), ``ledger.py`` (the delivery
ledger: idempotence, retries with backoff, dead letters), ``service.py`` (one call
per event).
"""
