"""The ingest pipeline: one inbox blob → archive + index + events (or quarantine);
settle (aggregates, lookups, series bundles, stable events); status."""
