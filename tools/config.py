"""``python -m tools config``: read, write and validate the configuration documents.

The documents live in the ``dicomflow-config`` container, so they change without a deploy::

    python -m tools config list                       # what is set, and whether routing accepted it
    python -m tools config get models                 # print the stored document
    python -m tools config validate rules rules.json  # check a file (offline) against the schema
    python -m tools config set models models.json     # validate, then upload: a bad document never lands
    python -m tools config schema rules               # the JSON Schema file (point your editor at it)

Where (first that applies): ``--account-url https://<account>.blob.core.windows.net`` (Azure, signed in with
DefaultAzureCredential: ``az login`` or a managed identity, role Storage Blob Data Contributor on the
account; no keys), ``--connection-string`` (Azurite), else the running devhost (``.devhost/``).

Validation is the app's own: the JSON Schema files the app loads (``shared/inference/models.schema.json``,
``shared/routing/rules.schema.json``) and the checks beyond a schema (unique rule names). A new document
is one entry in :data:`DOCUMENTS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.errors import BadInput, Reason
from shared.inference import registry
from shared.ports import BlobStore
from shared.routing import rules
from shared.storage import layout
from tools import stack
from tools.cli import CommandError

HELP = "read, write and validate the AI model registry and the routing rules"


def _check_models(raw: bytes) -> str:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise BadInput(Reason.INFERENCE_BAD_REGISTRY,
                       f"Model registry {layout.MODELS_DOC} is not JSON: {exc}") from None
    registry.validate_document(document)
    models = document["models"]
    on = [m for m in models if m.get("enabled", True)]
    names = ", ".join(str(m.get("name") or m["kind"]) for m in on) or "none"
    return f"{len(models)} model(s), {len(on)} enabled: {names}"


def _check_rules(raw: bytes) -> str:
    parsed = rules.parse(raw)
    on = [r for r in parsed if r.enabled]
    return f"{len(parsed)} rule(s), {len(on)} enabled: {', '.join(r.name for r in on) or 'none'}"


@dataclass(frozen=True)
class Document:
    name: str
    blob: str  # in layout.CONFIG
    schema: Path
    #: Validate the raw document; raise BadInput naming the entry and field, or return a one-line summary.
    check: Callable[[bytes], str]
    what: str


DOCUMENTS: dict[str, Document] = {
    d.name: d for d in (
        Document("models", layout.MODELS_DOC, registry.SCHEMA_PATH, _check_models,
                 "AI models run on stable source series (inference)"),
        Document("rules", layout.RULES_DOC, rules.SCHEMA_PATH, _check_rules,
                 "routing rules: which studies, series or instances go where"),
    )
}


class ConfigError(CommandError):
    """One line for stderr; ``code`` is the exit code."""


# --- operations (used by the command, the demo and tests), on the app's blob port --------------------

def target_blobs(args: argparse.Namespace) -> tuple[BlobStore, str]:
    """The app's blob store for the chosen target, and where that is (for messages)."""
    from shared.services import Services

    settings, where = stack.settings_for(args)
    return Services.from_settings(settings).blobs, where


def read(blobs: BlobStore, doc: Document) -> bytes | None:
    """The stored document, or None when it is not set."""
    return blobs.read(layout.CONFIG, doc.blob)


def validate(doc: Document, raw: bytes) -> str:
    """The document's summary, or :class:`ConfigError` (exit 2) with the app's own message."""
    try:
        return doc.check(raw)
    except BadInput as exc:
        raise ConfigError(f"{doc.name} is not valid: {exc.message}", 2) from None


def write(blobs: BlobStore, doc: Document, raw: bytes) -> str:
    """Validate, then store (overwriting). Returns the summary."""
    summary = validate(doc, raw)
    blobs.ensure_containers([layout.CONFIG])
    if doc.name == "models":
        missing = [m["blob"] for m in json.loads(raw)["models"]
                   if m["kind"] == "onnx" and blobs.properties(layout.CONFIG, m["blob"]) is None]
        if missing:
            raise ConfigError(f"models names model file(s) not in {layout.CONFIG}: {', '.join(missing)}: upload "
                              f"them first (az storage blob upload --auth-mode login -c {layout.CONFIG} -n <name> "
                              "-f <file>)", 2)
    if doc.name == "rules":  # through routing's own store: it keeps the last good copy and its verdict
        rules.RulesStore(blobs).put(raw)
    else:
        blobs.write(layout.CONFIG, doc.blob, raw, content_type="application/json")
    return summary


# --- the command ------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="<action>")
    names = sorted(DOCUMENTS)

    def target(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        stack.add_target_arguments(p)
        return p

    target(sub.add_parser("list", help="each document: set or not, size, and routing's verdict"))
    p = target(sub.add_parser("get", help="print a stored document"))
    p.add_argument("name", choices=names)
    p.add_argument("-o", "--output", type=Path, help="write it to a file instead")
    p = target(sub.add_parser("set", help="validate a file, then store it"))
    p.add_argument("name", choices=names)
    p.add_argument("file", help="the JSON document ('-' for stdin)")
    p = target(sub.add_parser("validate", help="check a file (offline), or the stored document"))
    p.add_argument("name", choices=names)
    p.add_argument("file", nargs="?", help="the JSON document ('-' for stdin); without it, the stored one")
    p = sub.add_parser("schema", help="the JSON Schema file of a document")
    p.add_argument("name", choices=names)
    p.add_argument("--show", action="store_true", help="print the schema instead of its path")


def _load_file(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}", 2) from None


def run(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError, ClientAuthenticationError

    if args.action == "schema":
        doc = DOCUMENTS[args.name]
        print(doc.schema.read_text(encoding="utf-8") if args.show else doc.schema)
        return 0
    if args.action == "validate" and args.file:
        doc = DOCUMENTS[args.name]
        print(f"{doc.name}: valid ({validate(doc, _load_file(args.file))})")
        return 0
    raw_in = _load_file(args.file) if args.action == "set" else b""
    blobs, where = target_blobs(args)
    try:
        code = _remote(args, blobs, where, raw_in)
        if args.action == "set":
            _audit(args, DOCUMENTS[args.name])
        return code
    except ClientAuthenticationError as exc:
        raise ConfigError(f"{where} refused the sign-in ({type(exc).__name__}): run 'az login', or give your "
                          "identity the role Storage Blob Data Contributor on the account") from None
    except AzureError as exc:
        raise ConfigError(f"cannot reach {where}: {type(exc).__name__}. {stack.STACK_HINT}") from None


def _audit(args: argparse.Namespace, doc: Document) -> None:
    """A configuration change is audited (Security Alert, Software Configuration), with the operator's identity."""
    from shared import audit
    from shared.audit.record import EXECUTE, SECURITY_ALERT, SOFTWARE_CONFIGURATION, SUCCESS, Subjects
    from tools.audit import operator

    settings, _ = stack.settings_for(args)
    record = audit.new_record(settings, SECURITY_ALERT, EXECUTE, outcome=SUCCESS, requestor=operator(settings),
                              subjects=Subjects(resources=[f"{layout.CONFIG}/{doc.blob}"]),
                              types=(SOFTWARE_CONFIGURATION,), description=f"python -m tools config set {doc.name}")
    audit.emit(settings, record)
    audit.close_all()  # appended before the command returns


def _remote(args: argparse.Namespace, blobs: BlobStore, where: str, raw_in: bytes) -> int:
    if args.action == "list":
        print(f"Configuration in {layout.CONFIG} on {where}:")
        for doc in DOCUMENTS.values():
            raw = read(blobs, doc)
            if raw is None:
                state = "not set"
            else:
                try:
                    state = f"{len(raw)} bytes, {doc.check(raw)}"
                except BadInput as exc:
                    state = f"INVALID: {exc.message}"
            print(f"  {doc.name:<7} {doc.blob:<24} {state}")
            print(f"  {'':<7} {doc.what}")
        status_raw = blobs.read(layout.CONFIG, layout.RULES_STATUS)
        if status_raw:
            status = json.loads(status_raw)
            print(f"Routing's verdict on the rules: {status.get('state')}: {status.get('message')}")
        return 0
    doc = DOCUMENTS[args.name]
    if args.action == "get":
        raw = read(blobs, doc)
        if raw is None:
            raise ConfigError(f"{doc.name} is not set ({layout.CONFIG}/{doc.blob} on {where}): write one with "
                              f"'python -m tools config set {doc.name} FILE'")
        text = json.dumps(json.loads(raw), indent=2, ensure_ascii=False) + "\n"
        if args.output:
            args.output.write_text(text, encoding="utf-8")
            print(f"{doc.name}: written to {args.output}")
        else:
            sys.stdout.write(text)
        return 0
    if args.action == "validate":
        raw = read(blobs, doc)
        if raw is None:
            raise ConfigError(f"{doc.name} is not set ({layout.CONFIG}/{doc.blob} on {where})")
        print(f"{doc.name}: valid ({validate(doc, raw)}) in {layout.CONFIG}/{doc.blob} on {where}")
        return 0
    summary = write(blobs, doc, raw_in)
    print(f"{doc.name}: stored {layout.CONFIG}/{doc.blob} on {where} ({summary})")
    return 0
