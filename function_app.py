"""The Functions app: creates the FunctionApp and registers each blueprint. Nothing else."""

import azure.functions as func

from functions import access, dicomweb, inference, ingest, ingest_status, ops, replication, routing, settle

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(ops.bp)
app.register_functions(ingest.bp)
app.register_functions(settle.bp)
app.register_functions(replication.bp)
app.register_functions(ingest_status.bp)
app.register_functions(inference.bp)
app.register_functions(routing.bp)
app.register_functions(dicomweb.bp)
app.register_functions(access.bp)
