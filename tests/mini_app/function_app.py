"""A second, minimal Functions v2 app that is not dicomflow: the devhost runs it unchanged
(tests/e2e/test_devhost_mini_app.py). POST /api/greet/<name> queues a greeting; a queue trigger
remembers it; GET /api/greeted/<name> says whether it was. Its only setting, MINI_STORAGE, is
"UseDevelopmentStorage=true" in its local.settings.json, as Core Tools users write it."""

import contextlib
import os

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _greeted() -> ContainerClient:
    container = ContainerClient.from_connection_string(os.environ["MINI_STORAGE"], "greeted")
    if not container.exists():
        container.create_container()
    return container


@app.route(route="greet/{name}", methods=["POST"])
def greet(req: func.HttpRequest) -> func.HttpResponse:
    queue = QueueClient.from_connection_string(os.environ["MINI_STORAGE"], "greetings",
                                               message_encode_policy=TextBase64EncodePolicy())
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    queue.send_message(req.route_params["name"])
    return func.HttpResponse(status_code=202)


@app.queue_trigger(arg_name="msg", queue_name="greetings", connection="MINI_STORAGE")
def remember(msg: func.QueueMessage) -> None:
    _greeted().upload_blob(msg.get_body().decode(), b"hello", overwrite=True)


@app.route(route="greeted/{name}", methods=["GET"])
def greeted(req: func.HttpRequest) -> func.HttpResponse:
    found = _greeted().get_blob_client(req.route_params["name"]).exists()
    return func.HttpResponse("yes" if found else "no", status_code=200 if found else 404)
