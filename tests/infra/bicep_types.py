"""Offline type check of every Bicep resource body against Azure's own resource type definitions.

The definitions are the ones the Bicep compiler checks bodies against: ``types.json`` files of
Azure/bicep-types-az (MIT), one per provider and API version, kept outside the repository (in CI at
``../shared/bicep-types``; set ``BICEP_TYPES_DIR`` to point at a copy: the folder that holds
``generated/``). Nothing here is copied from them; they are read at test time.

What is checked, for every ``resource`` declaration of every file under ``infra/``:

* the ``type@apiVersion`` exists in the definitions;
* every property name of the body, at every depth, is defined for that type (a typo fails, with the
  closest defined name suggested), unless the object is a free-form map (``additionalProperties``);
* values whose type can be known offline fit: string literals against enumerations (extensible ones
  too: ``'GET' | ... | string`` takes any string in the definitions, but the service refuses what it does
  not document; :data:`OPEN_ENUMS` lists exceptions), string length and pattern, integer ranges,
  booleans, objects, arrays (literal items and ``for`` bodies), both branches of ``cond ? a : b``,
  variables (followed to their value), and parameters (their declared type, and each ``@allowed`` value);
* no read-only property is assigned, and every required property of an object literal is given;
* ``existing`` resources name a type and version that exist;
* every ``<module>.outputs.<name>`` names an output the module declares, and every
  ``<resource>.properties.<a>.<b>`` path exists in the resource's type.

Expressions whose value needs deployment-time information (function calls, references to other
resources, loop variables) are not judged: Bicep itself checks most of those at deployment.

Built on the tree-sitter-bicep syntax tree (:mod:`tests.infra.bicepcheck`), which tells string
literals from identifiers and knows every node's line.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter

from tests.infra.bicepcheck import ROOT, BicepFile

TYPES_ENV = "BICEP_TYPES_DIR"
#: Property flags of bicep-types (``ObjectTypePropertyFlags``).
REQUIRED, READ_ONLY, WRITE_ONLY = 1, 2, 4
#: Words of a resource body that are Bicep syntax, not properties of the type.
RESOURCE_KEYWORDS = frozenset({"parent", "scope", "dependsOn"})
#: (resource type, property path) of extensible enumerations whose service really accepts values beyond the
#: documented ones, so they are not enforced (paths as in problems, list indexes as ``[*]``). Empty: every
#: extensible enumeration in infra/ is held to its documented values; add an entry only with a reason.
OPEN_ENUMS: frozenset[tuple[str, str]] = frozenset()


class TypesMissing(RuntimeError):
    """``BICEP_TYPES_DIR`` names a folder without the definitions."""


def types_dir() -> Path | None:
    """The bicep-types folder: ``$BICEP_TYPES_DIR``, else the first ``<ancestor>/shared/bicep-types`` of the
    repository that holds ``generated/`` (CI: ``../shared/bicep-types``), else None."""
    env = os.environ.get(TYPES_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path / "generated").is_dir():
            raise TypesMissing(f"{TYPES_ENV}={env}: no generated/ folder there; point it at a copy of "
                               "Azure/bicep-types-az (the folder that holds generated/)")
        return path
    for parent in ROOT.parents:
        candidate = parent / "shared" / "bicep-types"
        if (candidate / "generated").is_dir():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------------------
# The definitions


@dataclass(frozen=True)
class TypeRef:
    """One type of one types.json file."""

    file: Path
    index: int

    @property
    def node(self) -> dict[str, Any]:
        return _load(self.file)[self.index]

    @property
    def kind(self) -> str:
        return str(self.node["$type"])

    def ref(self, ref: Mapping[str, Any]) -> TypeRef:
        return TypeRef(self.file, int(str(ref["$ref"]).rsplit("/", 1)[1]))


@cache
def _load(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


class TypeIndex:
    """Every resource type of the definitions, by ``type@apiVersion`` (case-insensitive, as ARM)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.resources: dict[str, TypeRef] = {}
        #: Resource functions (``listKeys``...) by ``type@apiVersion``: a type that has only functions (such as
        #: ``Microsoft.Web/sites/host``) may still be declared ``existing`` to call them.
        self.functions: dict[str, set[str]] = {}
        for path in sorted(root.glob("generated/**/types.json")):
            for i, t in enumerate(_load(path)):
                if t.get("$type") == "ResourceType":
                    ref = TypeRef(path, i).ref(t["body"])
                    self.resources.setdefault(str(t["name"]).lower(), ref)
                elif t.get("$type") == "ResourceFunctionType":
                    key = f"{t['resourceType']}@{t['apiVersion']}".lower()
                    self.functions.setdefault(key, set()).add(str(t["name"]).lower())

    def resource(self, rtype: str, version: str) -> TypeRef | None:
        return self.resources.get(f"{rtype}@{version}".lower())

    def versions(self, rtype: str) -> list[str]:
        prefix = rtype.lower() + "@"
        return sorted(k.split("@", 1)[1] for k in self.resources if k.startswith(prefix))


def describe(t: TypeRef, depth: int = 0) -> str:
    n = t.node
    kind = n["$type"]
    if kind == "StringLiteralType":
        return repr(n["value"])
    if kind == "UnionType" and depth < 2:
        return " | ".join(describe(t.ref(e), depth + 1) for e in n["elements"])
    if kind == "ObjectType":
        return f"object {n.get('name', '')}".strip()
    return {"StringType": "string", "IntegerType": "int", "BooleanType": "bool", "ArrayType": "array",
            "AnyType": "any", "DiscriminatedObjectType": "object"}.get(kind, kind)


# ---------------------------------------------------------------------------------------------------------
# Values as far as they can be known offline


@dataclass(frozen=True)
class Value:
    """``kind``: string | int | bool | object | array | null | unknown. ``literal``: the value when known;
    ``node``: the object/array/for node to descend into; ``choices``: @allowed values of a parameter."""

    kind: str
    literal: Any = None
    node: tree_sitter.Node | None = None
    choices: tuple[Any, ...] = ()
    origin: str = ""


UNKNOWN = Value("unknown")


@dataclass
class Scope:
    file: BicepFile
    params: dict[str, tuple[str, tuple[Any, ...]]] = field(default_factory=dict)
    variables: dict[str, tree_sitter.Node] = field(default_factory=dict)
    resources: dict[str, tuple[str, str]] = field(default_factory=dict)  # symbol -> (type, version)
    modules: dict[str, str] = field(default_factory=dict)  # symbol -> path
    loop_vars: frozenset[str] = frozenset()

    def text(self, node: tree_sitter.Node) -> str:
        return self.file.text.encode()[node.start_byte:node.end_byte].decode()


def _children(node: tree_sitter.Node, kind: str) -> Iterator[tree_sitter.Node]:
    return (c for c in node.named_children if c.type == kind)


def _string_literal(scope: Scope, node: tree_sitter.Node) -> str | None:
    """The value of a string node without interpolation (escapes resolved), else None."""
    if node.type != "string" or any(c.type == "interpolation" for c in node.named_children):
        return None
    raw = scope.text(node)
    body = raw[3:-3] if raw.startswith("'''") else raw[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t", "$": "$"}.get(m.group(1), m.group(1)), body)


def evaluate(scope: Scope, node: tree_sitter.Node, depth: int = 0) -> Value:
    kind = node.type
    if kind == "string":
        lit = _string_literal(scope, node)
        return Value("string", lit)
    if kind == "number":
        return Value("int", int(scope.text(node)))
    if kind == "boolean":
        return Value("bool", scope.text(node) == "true")
    if kind == "null":
        return Value("null")
    if kind == "object":
        return Value("object", node=node)
    if kind in ("array", "for_statement"):
        return Value("array", node=node)
    if kind == "parenthesized_expression" and node.named_children:
        return evaluate(scope, node.named_children[0], depth)
    if kind == "unary_expression":
        op = node.child_by_field_name("operator")
        if op is not None and scope.text(op) == "!":
            return Value("bool")
        if op is not None and scope.text(op) == "-":
            inner = evaluate(scope, node.named_children[-1], depth)
            return Value("int", -inner.literal if isinstance(inner.literal, int) else None)
        return UNKNOWN
    if kind == "binary_expression":
        op = node.child_by_field_name("operator")
        if op is not None and scope.text(op) in ("==", "!=", "<", ">", "<=", ">=", "&&", "||", "=~", "!~"):
            return Value("bool")
        return UNKNOWN
    if kind == "identifier" and depth < 20:
        name = scope.text(node)
        if name in scope.loop_vars:
            return UNKNOWN
        if name in scope.variables:
            return evaluate(scope, scope.variables[name], depth + 1)
        if name in scope.params:
            ptype, allowed = scope.params[name]
            return Value(ptype if ptype in ("string", "int", "bool", "object", "array") else "unknown",
                         choices=allowed, origin=f"parameter {name!r}")
        if name in ("true", "false"):
            return Value("bool", name == "true")
    return UNKNOWN


# ---------------------------------------------------------------------------------------------------------
# The checker


class Checker:
    def __init__(self, index: TypeIndex) -> None:
        self.index = index
        self.problems: list[str] = []

    # -- entry points --------------------------------------------------------------------------------------
    def check(self, f: BicepFile) -> list[str]:
        self.problems = []
        scope = self._scope(f)
        for decl in _children(f.tree.root_node, "resource_declaration"):
            self._resource(scope, decl)
        self._references(scope, f.tree.root_node)
        return self.problems

    def _scope(self, f: BicepFile) -> Scope:
        scope = Scope(f)
        root = f.tree.root_node
        pending_decorators: list[tree_sitter.Node] = []
        for node in root.named_children:
            if node.type == "decorators":
                pending_decorators = list(_children(node, "decorator"))
                continue
            if node.type == "parameter_declaration":
                name = scope.text(node.named_children[0])
                type_node = next(_children(node, "type"), None)
                ptype = scope.text(type_node).strip() if type_node is not None else "unknown"
                scope.params[name] = (ptype, self._allowed(scope, pending_decorators))
            elif node.type == "variable_declaration":
                ident, value = node.named_children[0], node.named_children[-1]
                scope.variables[scope.text(ident)] = value
            elif node.type == "resource_declaration":
                rtype = _string_literal(scope, node.named_children[1]) or ""
                t, _, v = rtype.partition("@")
                scope.resources[scope.text(node.named_children[0])] = (t, v)
            elif node.type == "module_declaration":
                scope.modules[scope.text(node.named_children[0])] = _string_literal(scope, node.named_children[1]) or ""
            pending_decorators = []
        return scope

    def _allowed(self, scope: Scope, decorators: list[tree_sitter.Node]) -> tuple[Any, ...]:
        for d in decorators:
            call = next(_children(d, "call_expression"), None)
            fn = call.child_by_field_name("function") if call is not None else None
            if call is None or fn is None or scope.text(fn) != "allowed":
                continue
            args = call.child_by_field_name("arguments")
            array = next(_children(args, "array"), None) if args is not None else None
            if array is None:
                return ()
            return tuple(evaluate(scope, item).literal for item in array.named_children if item.type != "comment")
        return ()

    def _problem(self, scope: Scope, node: tree_sitter.Node, message: str) -> None:
        self.problems.append(f"{scope.file.name}:{node.start_point[0] + 1}: {message}")

    # -- resources -------------------------------------------------------------------------------------------
    def _resource(self, scope: Scope, decl: tree_sitter.Node) -> None:
        symbol = scope.text(decl.named_children[0])
        rtype = _string_literal(scope, decl.named_children[1]) or ""
        t, _, version = rtype.partition("@")
        body_type = self.index.resource(t, version)
        label = f"resource {symbol!r} ({rtype})"
        existing = any(c.type == "existing" for c in decl.children)
        if body_type is None and existing and f"{t}@{version}".lower() in self.index.functions:
            return  # declared only to call its functions (listKeys)
        if body_type is None:
            known = self.index.versions(t)
            hint = f"; known versions: {', '.join(known[-4:])}" if known else "; no such resource type"
            self._problem(scope, decl, f"{label}: type and API version not in the definitions{hint}")
            return
        body = decl.named_children[-1]
        loop_vars = set(scope.loop_vars)
        while body.type in ("for_statement", "if_statement"):
            if body.type == "for_statement":
                loop_vars |= self._loop_vars(scope, body)
                body = body.child_by_field_name("body") or body.named_children[-1]
            else:
                body = body.named_children[-1]
        inner = Scope(scope.file, scope.params, scope.variables, scope.resources, scope.modules, frozenset(loop_vars))
        if body.type != "object":
            return
        if existing:
            for key, _value, prop in self._properties(inner, body):
                if key not in ("name", "parent", "scope"):
                    self._problem(inner, prop, f"{label}: an existing resource takes only name, parent and scope, "
                                               f"not {key!r}")
            return
        self._object(inner, body, body_type, label, "", top=True)

    def _loop_vars(self, scope: Scope, for_node: tree_sitter.Node) -> set[str]:
        names = set()
        for c in for_node.named_children:
            if c.type == "identifier" and c == for_node.named_children[0]:
                names.add(scope.text(c))
            if c.type == "for_loop_parameters":
                names |= {scope.text(v) for v in c.named_children if v.type in ("loop_variable", "loop_enumerator")}
        return names

    def _properties(self, scope: Scope, obj: tree_sitter.Node) -> Iterator[tuple[str | None, tree_sitter.Node,
                                                                                 tree_sitter.Node]]:
        """(key or None when computed, value, property node) of an object literal."""
        for prop in _children(obj, "object_property"):
            key_node, value = prop.named_children[0], prop.named_children[-1]
            if key_node.type == "identifier":
                yield scope.text(key_node), value, prop
            else:
                yield _string_literal(scope, key_node), value, prop

    # -- values against types ---------------------------------------------------------------------------------
    def _object(self, scope: Scope, obj: tree_sitter.Node, t: TypeRef, label: str, path: str, *,
                top: bool = False) -> None:
        node = t.node
        if node["$type"] == "DiscriminatedObjectType":
            t, node = self._discriminated(scope, obj, t)
        if node["$type"] not in ("ObjectType",):
            return
        props: dict[str, Any] = dict(node.get("properties") or {})
        extra = node.get("additionalProperties")
        given: set[str] = set()
        for key, value, prop in self._properties(scope, obj):
            where = f"{path}.{key}" if path else str(key)
            if key is None:  # a computed key: only a map takes it
                if extra is None:
                    self._problem(scope, prop, f"{label}: {path or 'the body'} is not a map; a computed key is "
                                               "not a property of it")
                else:
                    self._value(scope, value, t.ref(extra), label, f"{path}[*]")
                continue
            given.add(key)
            if top and key in RESOURCE_KEYWORDS:
                continue
            spec = props.get(key)
            if spec is None:
                if extra is not None:
                    self._value(scope, value, t.ref(extra), label, where)
                    continue
                close = difflib.get_close_matches(key, list(props), n=1, cutoff=0.6)
                case = next((p for p in props if p.lower() == key.lower()), None)
                hint = f" (did you mean {(case or close[0])!r}?)" if (case or close) else ""
                self._problem(scope, prop, f"{label}: property {where!r} is not defined for this type{hint}")
                continue
            flags = int(spec.get("flags", 0))
            if flags & READ_ONLY and not flags & REQUIRED:
                self._problem(scope, prop, f"{label}: property {where!r} is read-only; it cannot be assigned")
                continue
            self._value(scope, value, t.ref(spec["type"]), label, where)
        for name, spec in props.items():
            flags = int(spec.get("flags", 0))
            if flags & REQUIRED and not flags & READ_ONLY and name not in given:
                self._problem(scope, obj, f"{label}: required property {(path + '.' if path else '') + name!r} "
                                          "is missing")

    def _discriminated(self, scope: Scope, obj: tree_sitter.Node, t: TypeRef) -> tuple[TypeRef, dict[str, Any]]:
        node = t.node
        disc = node["discriminator"]
        chosen = None
        for key, value, _prop in self._properties(scope, obj):
            if key == disc:
                chosen = evaluate(scope, value).literal
        elements = node.get("elements") or {}
        base = dict(node.get("baseProperties") or {})
        if isinstance(chosen, str) and chosen in elements:
            el = t.ref(elements[chosen])
            merged = {**base, **(el.node.get("properties") or {})}
            return el, {"$type": "ObjectType", "properties": merged,
                        "additionalProperties": el.node.get("additionalProperties")}
        # Unknown discriminator value: every element's properties are possible.
        merged = dict(base)
        for ref in elements.values():
            merged.update(t.ref(ref).node.get("properties") or {})
        if chosen is not None and elements and isinstance(chosen, str):
            self.problems.append(f"{scope.file.name}:{obj.start_point[0] + 1}: {disc} {chosen!r} is not one of "
                                 f"{sorted(elements)}")
        return t, {"$type": "ObjectType", "properties": merged}

    def _value(self, scope: Scope, node: tree_sitter.Node, t: TypeRef, label: str, path: str) -> None:
        node = self._deref_node(scope, node)
        if node.type == "ternary_expression":
            for branch in ("consequence", "alternative"):
                child = node.child_by_field_name(branch)
                if child is not None:
                    self._value(scope, child, t, label, path)
            return
        value = evaluate(scope, node)
        if value.kind == "unknown" or value.kind == "null":
            return
        self._fits(scope, node, value, t, label, path)

    def _fits(self, scope: Scope, node: tree_sitter.Node, value: Value, t: TypeRef, label: str, path: str) -> None:
        n = t.node
        kind = n["$type"]
        if kind == "AnyType":
            return
        if kind == "UnionType":
            options = [t.ref(e) for e in n["elements"]]
            if value.kind == "string":
                literals = [o.node["value"] for o in options if o.kind == "StringLiteralType"]
                open_string = any(o.kind == "StringType" for o in options)
                # An extensible enumeration ('GET' | 'HEAD' | ... | string) is checked like a closed one: the
                # definitions accept any string there, but the service refuses a value it does not document
                # (Front Door's request methods are one). OPEN_ENUMS lists the places where it does not.
                checked = literals and not (open_string and self._open_enum(label, path))
                for candidate in self._candidates(value):
                    if checked and candidate not in literals:
                        close = next((x for x in literals if str(x).lower() == str(candidate).lower()), None)
                        hint = f" (did you mean {close!r}?)" if close else ""
                        kind_note = (" (an extensible enumeration: the type takes any string, the service only "
                                     "these)") if open_string else ""
                        self._problem(scope, node, f"{label}: {path} is {candidate!r}{self._via(value)}, not one of "
                                                   f"{', '.join(map(repr, literals))}{hint}{kind_note}")
                if open_string or literals:
                    return
            matching = [o for o in options if self._kind_of(o) in (value.kind, "any")]
            if not matching:
                self._problem(scope, node, f"{label}: {path} expects {describe(t)}, got {value.kind}{self._via(value)}")
                return
            if value.kind == "object" and value.node is not None:
                objs = [o for o in matching if o.kind in ("ObjectType", "DiscriminatedObjectType")]
                if len(objs) == 1:
                    self._object(scope, self._deref_node(scope, node), objs[0], label, path)
            return
        expected = self._kind_of(t)
        if expected != value.kind and not (expected == "string" and value.kind == "string"):
            self._problem(scope, node, f"{label}: {path} expects {describe(t)}, got {value.kind}{self._via(value)}")
            return
        if kind == "StringLiteralType":
            for candidate in self._candidates(value):
                if candidate != n["value"]:
                    self._problem(scope, node, f"{label}: {path} must be {n['value']!r}, got {candidate!r}"
                                               f"{self._via(value)}")
        elif kind == "StringType":
            for candidate in self._candidates(value):
                if not isinstance(candidate, str):
                    continue
                if ("minLength" in n and len(candidate) < n["minLength"]) or (
                        "maxLength" in n and len(candidate) > n["maxLength"]):
                    self._problem(scope, node, f"{label}: {path} {candidate!r} must be {n.get('minLength', 0)}-"
                                               f"{n.get('maxLength', '…')} characters")
                if "pattern" in n and not re.search(n["pattern"], candidate):
                    self._problem(scope, node, f"{label}: {path} {candidate!r} does not match {n['pattern']}")
        elif kind == "IntegerType":
            for candidate in self._candidates(value):
                if not isinstance(candidate, int):
                    continue
                if ("minValue" in n and candidate < n["minValue"]) or ("maxValue" in n and candidate > n["maxValue"]):
                    self._problem(scope, node, f"{label}: {path} {candidate} is outside "
                                               f"{n.get('minValue', '-∞')}..{n.get('maxValue', '∞')}")
        elif kind in ("ObjectType", "DiscriminatedObjectType") and value.node is not None:
            self._object(scope, self._deref_node(scope, node), t, label, path)
        elif kind == "ArrayType" and value.node is not None:
            item = t.ref(n["itemType"])
            arr = self._deref_node(scope, node)
            if arr.type == "for_statement":
                body = arr.child_by_field_name("body") or arr.named_children[-1]
                inner = Scope(scope.file, scope.params, scope.variables, scope.resources, scope.modules,
                              scope.loop_vars | self._loop_vars(scope, arr))
                self._value(inner, body, item, label, f"{path}[*]")
            else:
                for i, element in enumerate(c for c in arr.named_children if c.type != "comment"):
                    self._value(scope, element, item, label, f"{path}[{i}]")

    def _deref_node(self, scope: Scope, node: tree_sitter.Node) -> tree_sitter.Node:
        """Follow identifiers (variables) and parentheses to the literal node."""
        for _ in range(20):
            if node.type == "identifier" and scope.text(node) in scope.variables:
                node = scope.variables[scope.text(node)]
            elif node.type == "parenthesized_expression" and node.named_children:
                node = node.named_children[0]
            else:
                break
        return node

    @staticmethod
    def _open_enum(label: str, path: str) -> bool:
        """Whether an extensible enumeration at ``path`` of the resource in ``label`` really takes other values."""
        rtype = label.split("(", 1)[-1].split("@", 1)[0]
        generic = re.sub(r"\[\d+\]", "[*]", path)
        return (rtype, generic) in OPEN_ENUMS

    @staticmethod
    def _candidates(value: Value) -> tuple[Any, ...]:
        if value.literal is not None:
            return (value.literal,)
        return value.choices

    @staticmethod
    def _via(value: Value) -> str:
        return f" ({value.origin})" if value.origin else ""

    @staticmethod
    def _kind_of(t: TypeRef) -> str:
        return {"StringLiteralType": "string", "StringType": "string", "IntegerType": "int", "BooleanType": "bool",
                "ObjectType": "object", "DiscriminatedObjectType": "object", "ArrayType": "array",
                "AnyType": "any"}.get(t.kind, "any")

    # -- references -------------------------------------------------------------------------------------------
    def _references(self, scope: Scope, root: tree_sitter.Node) -> None:
        stack = [root]
        while stack:
            node = stack.pop()
            stack.extend(node.named_children)
            if node.type != "member_expression":
                continue
            chain = self._chain(scope, node)
            if chain is None or (node.parent is not None and node.parent.type == "member_expression"):
                continue  # judge the whole chain once, at its outermost member
            base, names = chain
            if base in scope.modules and names[:1] == ["outputs"] and len(names) >= 2:
                self._module_output(scope, node, base, names[1])
            elif base in scope.resources and names[:1] == ["properties"]:
                self._resource_path(scope, node, base, names)

    def _chain(self, scope: Scope, node: tree_sitter.Node) -> tuple[str, list[str]] | None:
        names: list[str] = []
        while node.type == "member_expression":
            prop = node.child_by_field_name("property")
            obj = node.child_by_field_name("object")
            if prop is None or obj is None:
                return None
            names.append(scope.text(prop))
            node = obj
        if node.type != "identifier":
            return None
        return scope.text(node), list(reversed(names))

    def _module_output(self, scope: Scope, node: tree_sitter.Node, module: str, output: str) -> None:
        target = (scope.file.path.parent / scope.modules[module]).resolve()
        if not target.is_file():
            return  # rule_modules reports it
        outputs = _outputs(target)
        if output not in outputs:
            close = difflib.get_close_matches(output, list(outputs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self._problem(scope, node, f"module {module!r} has no output {output!r}{hint}; "
                                       f"{Path(scope.modules[module]).name} declares {', '.join(sorted(outputs))}")

    def _resource_path(self, scope: Scope, node: tree_sitter.Node, symbol: str, names: list[str]) -> None:
        t = self.index.resource(*scope.resources[symbol])
        path = ""
        for name in names:
            if t is None:
                return
            n = t.node
            if n["$type"] == "DiscriminatedObjectType":
                merged = dict(n.get("baseProperties") or {})
                for ref in (n.get("elements") or {}).values():
                    merged.update(t.ref(ref).node.get("properties") or {})
                props = merged
            elif n["$type"] == "ObjectType":
                props = n.get("properties") or {}
                if name not in props and n.get("additionalProperties") is not None:
                    return
            else:
                return
            path = f"{path}.{name}" if path else name
            spec = props.get(name)
            if spec is None:
                close = difflib.get_close_matches(name, list(props), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self._problem(scope, node, f"{symbol}.{path}: {scope.resources[symbol][0]} has no such property{hint}")
                return
            if int(spec.get("flags", 0)) & WRITE_ONLY:
                self._problem(scope, node, f"{symbol}.{path} is write-only: it cannot be read back")
                return
            t = t.ref(spec["type"])


@cache
def _outputs(path: Path) -> frozenset[str]:
    f = BicepFile.load(path)
    return frozenset(f.text.encode()[n.named_children[0].start_byte:n.named_children[0].end_byte].decode()
                     for n in f.tree.root_node.named_children if n.type == "output_declaration")
