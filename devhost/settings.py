"""The hosted app's settings: ``local.settings.json`` (or ``--settings``) and ``--env``, nothing else.

The devhost knows no app. An app reaches the devhost's own endpoints through placeholders that are
expanded in any setting value (``local.settings.json`` ``Values`` and ``--env``)::

    "MyStorage": "{devhost:storage}"                   ->  the running Azurite's connection string
    "MyEvents__topicEndpointUri": "{devhost:events_endpoint}"

:data:`PLACEHOLDERS` is the one table of them: a new endpoint is one new entry (name, what it is,
how to get its value from the running stack). ``UseDevelopmentStorage=true`` (Core Tools' shorthand
for Azurite on 10000-10002) is rewritten to the running Azurite's connection string when Azurite
runs on other ports, so a Core Tools ``local.settings.json`` works unchanged on any ports.

Order (later wins): the host's own Functions-runtime settings (``FUNCTIONS_WORKER_RUNTIME``,
``AzureWebJobsStorage``: what a Functions host provides), then the settings file's ``Values``,
then ``--env K=V``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from devhost.azurite import DEFAULT_PORTS, Azurite

FILE_NAME = "local.settings.json"
_PLACEHOLDER_RE = re.compile(r"\{devhost:([A-Za-z_][A-Za-z0-9_]*)\}")
_DEV_STORAGE_RE = re.compile(r"^\s*UseDevelopmentStorage\s*=\s*true\s*;?\s*$", re.IGNORECASE)


class SettingsError(ValueError):
    """The settings cannot be used; the message names the file or setting and the fix (one line)."""


class Stack(Protocol):
    """What a placeholder may read: the parsed ``up`` options, the Azurite in use, the local keys."""

    @property
    def args(self) -> Any: ...

    @property
    def azurite(self) -> Azurite: ...

    @property
    def keys(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Placeholder:
    help: str
    value: Callable[[Stack], str]


def http_origin(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def events_endpoint(fabric_port: int) -> str:
    return f"{http_origin(fabric_port)}/api/events"


#: ``{devhost:<name>}`` -> what it is and its value. Extend with one entry per new endpoint.
PLACEHOLDERS: dict[str, Placeholder] = {
    "storage": Placeholder("the running Azurite's connection string (blob, queue, table)",
                           lambda s: s.azurite.connection_string),
    "events_endpoint": Placeholder("the event fabric's publish URL (Event Grid custom-topic endpoint)",
                                   lambda s: events_endpoint(s.args.fabric_port)),
    "events_key": Placeholder("the event fabric's key (aeg-sas-key; python -m devhost key --events)",
                              lambda s: s.keys["events"]),
    "http_url": Placeholder("the function host's origin, e.g. http://127.0.0.1:7071 (add the route prefix)",
                            lambda s: http_origin(s.args.http_port)),
    "issuer": Placeholder("the development OpenID issuer (discovery at <issuer>/.well-known/openid-configuration)",
                          lambda s: _issuer_url(s.args.fabric_port)),
}


def _issuer_url(fabric_port: int) -> str:
    from devhost.issuer import issuer_url

    return issuer_url(fabric_port)


@dataclass(frozen=True)
class SettingsFile:
    path: Path | None  # None: there is none
    values: dict[str, str]
    cors: str


def read_file(path: Path, *, required: bool) -> SettingsFile:
    """``Values`` and ``Host.CORS`` of a local.settings.json (empty when it is missing and not required)."""
    if not path.exists():
        if required:
            raise SettingsError(f"--settings {path}: no such file: give the app's local.settings.json")
        return SettingsFile(None, {}, "")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        values = doc.get("Values") or {}
        if not isinstance(values, dict):
            raise AttributeError
        cors = str((doc.get("Host") or {}).get("CORS") or "")
    except (ValueError, AttributeError):
        raise SettingsError(f'{path} is not valid JSON with a "Values" object: fix it or remove it') from None
    return SettingsFile(path, {str(k): "" if v is None else str(v) for k, v in values.items()}, cors)


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in pairs:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise SettingsError(f"--env {kv!r} is not K=V: write e.g. --env MY_SETTING=value")
        out[k] = v
    return out


def placeholder_values(stack: Stack, names: Iterable[str] | None = None) -> dict[str, str]:
    """The value of each placeholder (or of ``names`` only) for a running stack."""
    wanted = PLACEHOLDERS if names is None else {n: PLACEHOLDERS[n] for n in names}
    return {name: p.value(stack) for name, p in wanted.items()}


def expand(name: str, value: str, stack: Stack, *, where: str) -> str:
    """One setting value with its placeholders expanded and ``UseDevelopmentStorage=true`` rewritten."""
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in PLACEHOLDERS:
            known = ", ".join("{devhost:%s}" % k for k in PLACEHOLDERS)  # noqa: UP031 - braces in the text
            raise SettingsError(f"{where}: setting {name} uses {m.group(0)}, which devhost does not provide: "
                                f"use one of {known}")
        return PLACEHOLDERS[key].value(stack)

    value = _PLACEHOLDER_RE.sub(sub, value)
    if _DEV_STORAGE_RE.match(value) and stack.azurite.ports != DEFAULT_PORTS:
        value = stack.azurite.connection_string
    return value


def app_settings(stack: Stack, file: SettingsFile, env_pairs: Iterable[str]) -> dict[str, str]:
    """The environment the app gets: host settings < the settings file < ``--env``, all expanded."""
    merged: dict[str, tuple[str, str]] = {
        "FUNCTIONS_WORKER_RUNTIME": ("python", "the host"),
        "AzureWebJobsStorage": ("{devhost:storage}", "the host"),
    }
    source = str(file.path) if file.path else FILE_NAME
    merged.update({k: (v, source) for k, v in file.values.items()})
    merged.update({k: (v, "--env") for k, v in parse_env(env_pairs).items()})
    return {k: expand(k, v, stack, where=src) for k, (v, src) in merged.items()}
