"""Blob layout (container names, paths), SDK client construction, archive and quarantine."""
