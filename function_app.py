"""The Functions app: creates the FunctionApp and registers each blueprint. Nothing else."""

import azure.functions as func

from functions import ops

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(ops.bp)
