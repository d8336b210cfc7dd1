"""The routing rules document: JSON Schema, model, matching, and the last good rules.

``dicomflow-config/routing/rules.json``::

    {"rules": [
      {"name": "neuro-mr-to-pacs",
       "trigger": "Dicom.StudyStable",
       "conditions": {"Modality": ["MR", "CT"], "BodyPartExamined": "HEAD*", "derived": false},
       "destinations": [
         {"type": "dicom", "aeTitle": "PACS", "host": "10.0.0.5", "port": 104},
         {"type": "dicomweb", "url": "https://viewer.example/dicom-web"},
         {"type": "worklist", "group": "neuroradiology"},
         {"type": "export", "container": "research", "deidentify": true}],
       "retry": {"maxAttempts": 5, "backoffSeconds": 30}}]}

Destinations cannot turn routing against the app: an export container is never one of the app's own
(archive, inbox, quarantine, metadata, config, dead letters: any region's, :func:`layout.is_app_container`),
a STOW-RS URL is ``https://`` (``http://`` only to 127.0.0.1, ::1 or localhost, for local development and
the tests' peers), and the document holds no credential: ``"tls": true`` on a ``dicom`` destination uses the
TLS material of the app settings (:mod:`shared.routing.tls`), as STOW-RS over https does.

A rule fires on its trigger event types (``Dicom.StudyStable`` by default: a study
routes when it is stable; ``Dicom.ImageCreated`` routes instance by instance).
Conditions filter the instances in scope: a string is an exact value or a wildcard
(``*`` any run, ``?`` one character, as in PS3.4 C.2.2.2.4), a list matches any of
its members, ``derived`` (a result object: SEG, SR, ...; see :mod:`shared.dicom.facts`) and
``aiPriority`` are booleans. A document that fails the
schema is rejected with the rule's index, name and field; the last good rules stay
in force (kept in the config container, so a new worker sees them too).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from shared import schemas
from shared.errors import BadInput, Reason
from shared.events.types import EventType
from shared.ports import BlobStore
from shared.storage import layout

log = logging.getLogger(__name__)


#: The document's JSON Schema, published as a file (editors and ``python -m tools config`` use the same
#: one). Its trigger enum is the event types infra/events.json delivers to routing (a unit test keeps them equal).
SCHEMA_PATH = Path(__file__).with_name("rules.schema.json")
SCHEMA, _VALIDATOR = schemas.load(SCHEMA_PATH)


@dataclass(frozen=True, slots=True)
class Destination:
    type: str
    options: Mapping[str, Any]

    @property
    def id(self) -> str:
        """A stable identity for the ledger (changes when the target changes)."""
        o = self.options
        if self.type == "dicom":
            return f"dicom:{o['aeTitle']}@{o['host']}:{o['port']}"
        if self.type == "dicomweb":
            return f"dicomweb:{o['url']}"
        if self.type == "worklist":
            return f"worklist:{o['group']}"
        return f"export:{o['container']}/{o.get('prefix', '')}{'#deid' if o.get('deidentify') else ''}"

    @property
    def per_study(self) -> bool:
        return self.type == "worklist"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    triggers: tuple[str, ...]
    conditions: Mapping[str, Any]
    destinations: tuple[Destination, ...]
    max_attempts: int = 5
    backoff_seconds: float = 30.0
    enabled: bool = True

    def fires_on(self, event_type: str) -> bool:
        return self.enabled and event_type in self.triggers

    def matches(self, facts: Mapping[str, Any]) -> bool:
        """True when every condition holds for ``facts`` (instance attributes + event facts)."""
        for key, wanted in self.conditions.items():
            have = facts.get(key)
            if isinstance(wanted, bool):
                if bool(have) != wanted:
                    return False
                continue
            options = wanted if isinstance(wanted, list) else [wanted]
            text = "" if have is None else str(have).strip()
            if not any(fnmatch.fnmatchcase(text, pattern) for pattern in options):
                return False
        return True


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    source: str = "none"  # "current", "last-good" or "none"
    rejected: str | None = None  # why the current document was refused, if it was

    def for_event(self, event_type: str) -> list[Rule]:
        return [r for r in self.rules if r.fires_on(event_type)]


#: ``http://`` is accepted only for this machine (local development; the tests' Orthanc and storescp).
_LOOPBACK_HTTP = re.compile(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/|$)", re.IGNORECASE)


def insecure_url(url: str) -> bool:
    """A STOW-RS URL that is neither https nor http to this machine."""
    return not (url.lower().startswith("https://") or _LOOPBACK_HTTP.match(url))


def _where(document: Any, error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        index = path[1]
        name = ""
        try:
            name = f" ({document['rules'][index]['name']!r})"
        except (KeyError, TypeError, IndexError):
            pass
        rest = path[2:]
        field_path = ""
        for part in rest:
            field_path += f"[{part}]" if isinstance(part, int) else (f".{part}" if field_path else str(part))
        return f"rule {index}{name} field {field_path or '(rule)'}"
    return "/".join(str(p) for p in path) or "(document)"


def _best(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The deepest error (so an if/then failure names the field, not the destination)."""
    if error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            return best
    return error


def validate(document: Any) -> None:
    """Raise :class:`BadInput` naming the first invalid rule's index, name and field."""
    errors = schemas.errors(_VALIDATOR, document)
    if errors:
        err = _best(errors[0])
        raise BadInput(Reason.ROUTING_BAD_RULES, f"Routing rules rejected: {_where(document, err)}: {_say(err)}")
    names = [r["name"] for r in document["rules"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise BadInput(Reason.ROUTING_BAD_RULES,
                           f"Routing rules rejected: rule {i} field name: {name!r} is used twice.")


def _say(err: jsonschema.ValidationError) -> str:
    """The schema's message, or ours where the schema's would not say what to do."""
    value, field = err.instance, (err.absolute_path[-1] if err.absolute_path else "")
    if field == "container" and isinstance(value, str) and layout.is_app_container(value):
        return (f"{value!r} is one of the app's own containers (archive, inbox, config, ...: any region's); "
                "export to a container of your own")
    if field == "url" and isinstance(value, str) and insecure_url(value):
        return f"{value!r} is not https:// (plain http is accepted only to this machine, for local development)"
    return str(err.message)


def parse(raw: bytes) -> tuple[Rule, ...]:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(Reason.ROUTING_BAD_RULES,
                       f"Routing rules rejected: {layout.RULES_DOC} is not JSON ({exc}).") from None
    validate(document)
    rules = []
    for r in document["rules"]:
        trigger = r.get("trigger", str(EventType.STUDY_STABLE))
        retry = r.get("retry", {})
        rules.append(
            Rule(
                name=r["name"],
                triggers=tuple(trigger if isinstance(trigger, list) else [trigger]),
                conditions=dict(r.get("conditions", {})),
                destinations=tuple(Destination(d["type"], dict(d)) for d in r["destinations"]),
                max_attempts=int(retry.get("maxAttempts", 5)),
                backoff_seconds=float(retry.get("backoffSeconds", 30.0)),
                enabled=bool(r.get("enabled", True)),
            )
        )
    return tuple(rules)


class RulesStore:
    """Rules from the config container, the last good ones kept.

    The current document is read on every call (one small blob; routing runs per
    stable study, not per instance). When it validates it is copied to
    :data:`layout.RULES_LAST_GOOD`; when it does not, the rejection is logged and written to
    :data:`layout.RULES_STATUS`, and the last good document is used instead.
    """

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def _read(self, name: str) -> bytes | None:
        return self.blobs.read(layout.CONFIG, name)

    def _write(self, name: str, body: bytes) -> None:
        self.blobs.write(layout.CONFIG, name, body, content_type="application/json")

    def _status(self, state: str, message: str) -> None:
        self._write(layout.RULES_STATUS, orjson.dumps({"state": state, "message": message,
                                                       "document": layout.RULES_DOC}))

    def current(self) -> RuleSet:
        raw = self._read(layout.RULES_DOC)
        if raw is None:
            return RuleSet()
        try:
            rules = parse(raw)
        except BadInput as exc:
            log.error("%s; the last good rules stay in force.", exc.message)
            self._status("rejected", exc.message)
            good = self._read(layout.RULES_LAST_GOOD)
            try:
                return RuleSet(parse(good) if good else (), "last-good" if good else "none", exc.message)
            except BadInput:  # kept by an earlier version whose checks it no longer passes
                return RuleSet((), "none", exc.message)
        if self._read(layout.RULES_LAST_GOOD) != raw:
            self._write(layout.RULES_LAST_GOOD, raw)
            self._status("accepted", f"{len(rules)} rules in force")
        return RuleSet(rules, "current")

    def put(self, raw: bytes) -> RuleSet:
        """Validate, then upload: the way tools should change rules (a bad document never lands)."""
        parse(raw)
        self._write(layout.RULES_DOC, raw)
        return self.current()
