"""IOCM rejection notes: Key Object Selection documents that withdraw instances (see :mod:`.service`)."""
