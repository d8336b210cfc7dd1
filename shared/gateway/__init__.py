"""What the DIMSE gateway (``gateway/``) shares with the rest of the app: its peers document.

Layout: ``destinations.py`` (the ``dicomflow-config/gateway/destinations.json`` document: schema file,
model, a store that re-reads it when it changes) and ``destinations.schema.json`` (the JSON Schema).
"""
