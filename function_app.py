"""The Functions app: creates the FunctionApp and registers each blueprint. Nothing else, except one
line for the worker's garbage collector (below)."""

import gc

import azure.functions as func

from functions import (
    access,
    audit,
    dicomweb,
    extended_tags,
    inference,
    ingest,
    ingest_status,
    maintenance,
    operations,
    ops,
    replication,
    routing,
    settle,
)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(ops.bp)
app.register_functions(ingest.bp)
app.register_functions(settle.bp)
app.register_functions(replication.bp)
app.register_functions(maintenance.bp)
app.register_functions(ingest_status.bp)
app.register_functions(inference.bp)
app.register_functions(routing.bp)
app.register_functions(dicomweb.bp)
app.register_functions(extended_tags.bp)
app.register_functions(operations.bp)
app.register_functions(audit.bp)
app.register_functions(access.bp)

# What the app imported (about 200k objects: pydicom's dictionaries, the SDKs) lives as long as the worker.
# Left in the collector's oldest generation, every full collection walks all of it, about 80 ms here, and a
# request that is running at that moment waits: a QIDO tail every couple of seconds (bench/README.md).
# Frozen, full collections walk only what requests allocate.
gc.freeze()
