"""Subscriptions from an events file (``--events``, e.g. ``infra/events.json``) and Event Grid filter
evaluation (pure logic).

The file uses Event Grid's own field names (``includedEventTypes``, ``subjectBeginsWith``,
``subjectEndsWith``, ``advancedFilters`` with ``operatorType``/``key``/``value(s)``) so the same
file feeds Bicep and the local fabric. Semantics follow Azure:

* every part of a filter must match (AND), advanced filters too;
* string comparisons are case-insensitive (subject matching as well: ``isSubjectCaseSensitive``
  defaults to false);
* a key that holds an array matches when any element matches (advanced filtering on arrays);
* a missing key fails every operator except the negations (``StringNotIn``, ``NumberNotIn``...) and
  ``IsNullOrUndefined``, which hold when the key is absent.

Both schemas are handled: Event Grid schema events (``eventType``, ``subject``, ``data``) and
CloudEvents 1.0 (``type``, ``subject``, ``data`` and extension attributes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMAS = ("EventGridSchema", "CloudEventSchemaV1_0")
ENDPOINTS = ("blobTrigger", "eventGridTrigger")
_CONTAINER_RE = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_MISSING = object()


class EventsConfigError(ValueError):
    """events.json is malformed; the message names the field and the fix (one line)."""


@dataclass(frozen=True)
class AdvancedFilter:
    operator: str
    key: str
    value: Any = None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Filter:
    included_event_types: tuple[str, ...] = ()
    subject_begins_with: str = ""
    subject_ends_with: str = ""
    advanced: tuple[AdvancedFilter, ...] = ()


@dataclass(frozen=True)
class Subscription:
    name: str
    topic: str
    endpoint: str
    function: str
    filter: Filter = field(default_factory=Filter)
    max_delivery_attempts: int = 30
    dead_letter_container: str | None = None

    def watched_container(self) -> str | None:
        """The blob container a storage subscription refers to (from subjectBeginsWith)."""
        m = re.match(r"^/blobServices/default/containers/([^/]+)/", self.filter.subject_begins_with)
        return m.group(1) if m else None


@dataclass(frozen=True)
class Topic:
    name: str
    kind: str
    schema: str


@dataclass(frozen=True)
class EventsConfig:
    topics: dict[str, Topic]
    subscriptions: tuple[Subscription, ...]

    def for_topic(self, topic: str) -> list[Subscription]:
        return [s for s in self.subscriptions if s.topic == topic]

    def custom_topic(self) -> str | None:
        """The topic the publish endpoint feeds (the first customTopic)."""
        return next((t.name for t in self.topics.values() if t.kind == "customTopic"), None)

    def system_topics(self) -> list[str]:
        """The storage system topics (their blob events come from the watcher)."""
        return [t.name for t in self.topics.values() if t.kind == "systemTopic"]

    def watched_containers(self) -> dict[str, str]:
        """Each container a system-topic subscription refers to, with that topic (first one wins)."""
        seen: dict[str, str] = {}
        for topic in self.system_topics():
            for s in self.for_topic(topic):
                c = s.watched_container()
                if c and c not in seen:
                    seen[c] = topic
        return seen


# --- parsing -----------------------------------------------------------------------------------

_VALUES_OPS = {
    "StringIn", "StringNotIn", "StringBeginsWith", "StringNotBeginsWith", "StringContains",
    "StringNotContains", "StringEndsWith", "StringNotEndsWith", "NumberIn", "NumberNotIn",
    "NumberInRange", "NumberNotInRange",
}
_VALUE_OPS = {"BoolEquals", "NumberLessThan", "NumberGreaterThan", "NumberLessThanOrEquals",
              "NumberGreaterThanOrEquals"}
_KEY_ONLY_OPS = {"IsNullOrUndefined", "IsNotNull"}
OPERATORS = tuple(sorted(_VALUES_OPS | _VALUE_OPS | _KEY_ONLY_OPS))


def _fail(path: str, where: str, problem: str, fix: str) -> EventsConfigError:
    return EventsConfigError(f"{path}: {where} {problem}: {fix}")


def load(path: Path) -> EventsConfig:
    """Read and validate an events.json file (raises :class:`EventsConfigError`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EventsConfigError(
            f"{path}: cannot be read ({exc.strerror}): pass an existing file with --events"
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventsConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}): fix the syntax"
        ) from None
    return parse(doc, str(path))


def parse(doc: Any, path: str = "events.json") -> EventsConfig:
    if not isinstance(doc, dict):
        raise _fail(path, "the document", "is not a JSON object", 'write {"topics": {...}, "subscriptions": [...]}')
    topics_doc = doc.get("topics")
    if not isinstance(topics_doc, dict) or not topics_doc:
        raise _fail(path, '"topics"', "is missing or not an object",
                    'declare e.g. {"storage": {"kind": "systemTopic", ...}, "events": {"kind": "customTopic", ...}}')
    topics: dict[str, Topic] = {}
    for name, t in topics_doc.items():
        where = f"topics.{name}"
        if not isinstance(t, dict):
            raise _fail(path, where, "is not an object", 'give it "kind" and "schema"')
        kind = t.get("kind")
        if kind not in ("systemTopic", "customTopic"):
            raise _fail(path, where + ".kind", f"is {kind!r}", 'use "systemTopic" or "customTopic"')
        schema = t.get("schema")
        if schema not in SCHEMAS:
            raise _fail(path, where + ".schema", f"is {schema!r}", f"use one of {', '.join(SCHEMAS)}")
        topics[name] = Topic(name, kind, schema)
    subs_doc = doc.get("subscriptions")
    if not isinstance(subs_doc, list):
        raise _fail(path, '"subscriptions"', "is missing or not a list", "give a list of subscription objects")
    subs: list[Subscription] = []
    names: set[str] = set()
    for i, s in enumerate(subs_doc):
        sub = _parse_subscription(s, f"subscriptions[{i}]", path, topics)
        if sub.name in names:
            raise _fail(path, f"subscriptions[{i}].name", f"{sub.name!r} is used twice", "give each one a unique name")
        names.add(sub.name)
        subs.append(sub)
    return EventsConfig(topics, tuple(subs))


def _str(s: Mapping[str, Any], key: str, where: str, path: str, *, required: bool = True) -> str:
    v = s.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v):
        raise _fail(path, f"{where}.{key}", f"is {v!r}", "give a non-empty string")
    return v


def _parse_subscription(s: Any, where: str, path: str, topics: Mapping[str, Topic]) -> Subscription:
    if not isinstance(s, dict):
        raise _fail(path, where, "is not an object", 'give "name", "topic", "endpoint", "function" and "filter"')
    name = _str(s, "name", where, path)
    where = f"subscriptions[{name}]"
    topic = _str(s, "topic", where, path)
    if topic not in topics:
        raise _fail(path, f"{where}.topic", f"{topic!r} is not declared", f"use one of {', '.join(topics)}")
    endpoint = _str(s, "endpoint", where, path)
    if endpoint not in ENDPOINTS:
        raise _fail(path, f"{where}.endpoint", f"is {endpoint!r}", f"use one of {', '.join(ENDPOINTS)}")
    function = _str(s, "function", where, path)
    f = s.get("filter", {})
    if not isinstance(f, dict):
        raise _fail(path, f"{where}.filter", "is not an object", "give includedEventTypes/subjectBeginsWith/...")
    types = f.get("includedEventTypes") or []
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise _fail(path, f"{where}.filter.includedEventTypes", f"is {types!r}", "give a list of event type strings")
    begins = _str(f, "subjectBeginsWith", where + ".filter", path, required=False)
    ends = _str(f, "subjectEndsWith", where + ".filter", path, required=False)
    adv_doc = f.get("advancedFilters") or []
    if not isinstance(adv_doc, list):
        raise _fail(path, f"{where}.filter.advancedFilters", "is not a list", "give a list of filter objects")
    advanced = tuple(
        _parse_advanced(a, f"{where}.filter.advancedFilters[{j}]", path) for j, a in enumerate(adv_doc)
    )
    retry = s.get("retryPolicy") or {}
    attempts = retry.get("maxDeliveryAttempts", 30) if isinstance(retry, dict) else None
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 30:
        raise _fail(path, f"{where}.retryPolicy.maxDeliveryAttempts", f"is {attempts!r}",
                    "give an integer from 1 to 30 (Event Grid's range)")
    dlc = s.get("deadLetterContainer")
    if dlc is not None and (not isinstance(dlc, str) or not _CONTAINER_RE.match(dlc)):
        raise _fail(path, f"{where}.deadLetterContainer", f"is {dlc!r}",
                    "give a valid container name (3-63 lowercase letters, digits, dashes)")
    sub = Subscription(
        name=name, topic=topic, endpoint=endpoint, function=function,
        filter=Filter(tuple(types), begins, ends, advanced),
        max_delivery_attempts=attempts, dead_letter_container=dlc,
    )
    if topics[topic].kind == "systemTopic" and endpoint == "blobTrigger" and sub.watched_container() is None:
        raise _fail(path, f"{where}.filter.subjectBeginsWith", f"is {begins!r}",
                    'start it with "/blobServices/default/containers/<container>/" so the watcher knows what to poll')
    return sub


def _parse_advanced(a: Any, where: str, path: str) -> AdvancedFilter:
    if not isinstance(a, dict):
        raise _fail(path, where, "is not an object", 'give "operatorType", "key" and "value" or "values"')
    op = a.get("operatorType")
    if op not in OPERATORS:
        raise _fail(path, f"{where}.operatorType", f"is {op!r}", f"use one of {', '.join(OPERATORS)}")
    key = _str(a, "key", where, path)
    if op in _VALUES_OPS:
        values = a.get("values")
        if not isinstance(values, list) or not values:
            raise _fail(path, f"{where}.values", f"is {values!r}", f"{op} needs a non-empty list")
        if op.startswith("Number"):
            ok = (all(_is_range(v) for v in values) if "Range" in op else all(_is_number(v) for v in values))
            if not ok:
                raise _fail(path, f"{where}.values", f"is {values!r}",
                            f"{op} needs {'[low, high] pairs' if 'Range' in op else 'numbers'}")
        return AdvancedFilter(op, key, values=tuple(tuple(v) if isinstance(v, list) else v for v in values))
    if op in _VALUE_OPS:
        value = a.get("value")
        if op == "BoolEquals" and not isinstance(value, bool):
            raise _fail(path, f"{where}.value", f"is {value!r}", "BoolEquals needs true or false")
        if op != "BoolEquals" and not _is_number(value):
            raise _fail(path, f"{where}.value", f"is {value!r}", f"{op} needs a number")
        return AdvancedFilter(op, key, value=value)
    return AdvancedFilter(op, key)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_range(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)


# --- evaluation --------------------------------------------------------------------------------

def event_type(event: Mapping[str, Any]) -> str:
    return str(event.get("eventType") if "eventType" in event else event.get("type", ""))


def lookup(event: Mapping[str, Any], key: str) -> Any:
    """The value of a filter key in an event (either schema), or a sentinel when absent."""
    lower = key.lower()
    if lower in ("eventtype", "type"):
        return event.get("eventType", event.get("type", _MISSING))
    if lower in ("topic", "source"):
        return event.get("topic", event.get("source", _MISSING))
    if lower in ("dataversion",):
        return event.get("dataVersion", _MISSING)
    if "." not in key:
        # Top-level attribute (subject, id, CloudEvents extensions), matched case-insensitively.
        for k, v in event.items():
            if k.lower() == lower:
                return v
        return _MISSING
    node: Any = event
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return _MISSING
        match = _MISSING
        for k, v in node.items():
            if k == part:
                match = v
                break
            if match is _MISSING and k.lower() == part.lower():
                match = v
        node = match
        if node is _MISSING:
            return _MISSING
    return node


def _as_str(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | int | float):
        return str(v).lower()
    return None


def _as_num(v: Any) -> float | None:
    if _is_number(v):
        return float(v)
    return None


def _positive(op: str, value: Any, f: AdvancedFilter) -> bool:
    """The positive form of an operator, for one scalar value."""
    if op in ("StringIn", "StringBeginsWith", "StringContains", "StringEndsWith"):
        s = _as_str(value)
        if s is None:
            return False
        wanted = [str(x).lower() for x in f.values]
        test: Callable[[str], bool] = {
            "StringIn": lambda w: s == w,
            "StringBeginsWith": s.startswith,
            "StringContains": lambda w: w in s,
            "StringEndsWith": s.endswith,
        }[op]
        return any(test(w) for w in wanted)
    if op == "NumberIn":
        n = _as_num(value)
        return n is not None and any(n == float(x) for x in f.values)
    if op == "NumberInRange":
        n = _as_num(value)
        return n is not None and any(float(lo) <= n <= float(hi) for lo, hi in f.values)
    n = _as_num(value)
    if op == "BoolEquals":
        return isinstance(value, bool) and value is f.value
    if n is None:
        return False
    return {
        "NumberLessThan": n < f.value,
        "NumberGreaterThan": n > f.value,
        "NumberLessThanOrEquals": n <= f.value,
        "NumberGreaterThanOrEquals": n >= f.value,
    }[op]


_NEGATIONS = {
    "StringNotIn": "StringIn", "StringNotBeginsWith": "StringBeginsWith", "StringNotContains": "StringContains",
    "StringNotEndsWith": "StringEndsWith", "NumberNotIn": "NumberIn", "NumberNotInRange": "NumberInRange",
}


def advanced_matches(event: Mapping[str, Any], f: AdvancedFilter) -> bool:
    value = lookup(event, f.key)
    if f.operator == "IsNullOrUndefined":
        return value is _MISSING or value is None
    if f.operator == "IsNotNull":
        return value is not _MISSING and value is not None
    items = value if isinstance(value, list) else [value]
    positive = _NEGATIONS.get(f.operator)
    if positive is not None:
        if value is _MISSING:
            return True
        return not any(_positive(positive, v, f) for v in items)
    if value is _MISSING:
        return False
    return any(_positive(f.operator, v, f) for v in items)


def matches(sub: Subscription | Filter, event: Mapping[str, Any]) -> bool:
    """Whether an event passes a subscription's filter (Azure semantics, see the module doc)."""
    f = sub.filter if isinstance(sub, Subscription) else sub
    if f.included_event_types and event_type(event).lower() not in {t.lower() for t in f.included_event_types}:
        return False
    subject = str(event.get("subject") or "").lower()
    if f.subject_begins_with and not subject.startswith(f.subject_begins_with.lower()):
        return False
    if f.subject_ends_with and not subject.endswith(f.subject_ends_with.lower()):
        return False
    return all(advanced_matches(event, a) for a in f.advanced)
