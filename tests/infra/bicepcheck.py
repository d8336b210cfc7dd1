"""Offline checks of the Bicep in ``infra/``: parse, cross-file, names and security rules.

No Bicep compiler installs on this machine (none on PyPI, npm or Debian), so the checks read the
source with two pinned parsers from PyPI (requirements-dev.txt):

* ``tree-sitter`` + ``tree-sitter-bicep``: a full syntax tree; any ERROR or MISSING node fails loudly.
  Also used for comments (stripped before text rules) and ``load*Content`` calls.
* ``pycep-parser`` (0.7.1): the file as JSON (parameters, variables, resources, modules), which the
  resource rules walk. It parses a subset of Bicep (no loops with ``if``, no decorators inside ``type``),
  so a file it rejects fails too: keep the syntax inside what both read (and checkov's older pycep).

checkov (its own venv, ``make infra-tools``) runs through :func:`run_checkov`, which fails when checkov
reports files it could not parse (checkov itself skips them and exits 0).

Every rule is a function returning a list of violations (empty = pass), so a test can feed it a small
bad snippet and see it trip.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter
import tree_sitter_bicep
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
INFRA_VENV = ROOT / ".venv-infra"

#: Role definition GUID -> built-in role name. Nothing else may be assigned.
ALLOWED_ROLES: Mapping[str, str] = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "76199698-9eea-4c19-bc75-cec21354c6b6": "Storage Table Data Reader",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
}

#: App settings the Flex Consumption plan rejects or ignores (its deprecation list).
FLEX_FORBIDDEN_SETTINGS = frozenset({
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
    "WEBSITE_USE_PLACEHOLDER_DOTNETISOLATED",
    "AzureWebJobsStorage",  # a connection string; identity-based settings use AzureWebJobsStorage__*
})

#: Text that only appears where a storage key, SAS or connection string is built (case-insensitive).
FORBIDDEN_TEXT = re.compile(r"accountkey|defaultendpointsprotocol|sharedaccesssignature|listaccountsas|listservicesas",
                            re.IGNORECASE)
#: The only resource type whose list* action we call: the function app host (system keys, not storage keys).
LIST_ALLOWED_TYPES = frozenset({"Microsoft.Web/sites/host"})

GUID = re.compile(r"'([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})'")
LOAD_FUNCTIONS = frozenset({"loadJsonContent", "loadTextContent", "loadYamlContent", "loadFileAsBase64"})


class BicepParseError(ValueError):
    """A Bicep file the offline parsers cannot read; the message names the file, line and parser."""


@cache
def _ts_parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


@cache
def _pycep() -> BicepParser:
    return BicepParser()


def _walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def syntax_errors(text: str) -> list[str]:
    """ERROR and MISSING nodes of tree-sitter-bicep, as ``line:col: ...`` (1-based)."""
    src = text.encode()
    tree = _ts_parser().parse(src)
    out = []
    for n in _walk(tree.root_node):
        if n.type == "ERROR" or n.is_missing:
            line, col = n.start_point
            frag = src[n.start_byte:n.end_byte][:60].decode(errors="replace")
            out.append(f"{line + 1}:{col + 1}: {'missing ' + n.type if n.is_missing else 'syntax error'} near {frag!r}")
    return out


@dataclass(frozen=True)
class BicepFile:
    path: Path
    text: str
    tree: tree_sitter.Tree
    doc: dict[str, Any]

    @classmethod
    def from_text(cls, text: str, path: Path | None = None) -> BicepFile:
        path = path or INFRA / "snippet.bicep"
        errors = syntax_errors(text)
        if errors:
            raise BicepParseError(f"{path}: tree-sitter-bicep cannot parse it: " + "; ".join(errors[:5]))
        try:
            doc = _pycep().parse(text=text)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BicepParseError(
                f"{path}: pycep-parser cannot parse it ({first}). Keep to the syntax it reads: no loops with "
                "'if', no decorators inside 'type' (see docs/architecture.md, facts checked)."
            ) from exc
        return cls(path=path, text=text, tree=_ts_parser().parse(text.encode()), doc=dict(doc))

    @classmethod
    def load(cls, path: Path) -> BicepFile:
        return cls.from_text(path.read_text(encoding="utf-8"), path)

    @property
    def name(self) -> str:
        try:
            return str(self.path.relative_to(ROOT))
        except ValueError:
            return str(self.path)

    def code_without_comments(self) -> str:
        """The source with every comment blanked out (strings such as 'https://' stay intact)."""
        src = bytearray(self.text.encode())
        for n in _walk(self.tree.root_node):
            if n.type == "comment":
                src[n.start_byte:n.end_byte] = b" " * (n.end_byte - n.start_byte)
        return src.decode()

    def variable(self, name: str) -> Any:
        return self.doc.get("variables", {})[name]["value"]

    def resolve(self, value: Any) -> Any:
        """Follow variable names (pycep writes identifiers and string literals alike) to their values."""
        seen = 0
        variables = self.doc.get("variables", {})
        while isinstance(value, str) and value in variables and seen < 20:
            value = variables[value]["value"]
            seen += 1
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def resources(self, rtype: str | None = None, *, include_existing: bool = False) -> Iterator[tuple[str, dict]]:
        """(symbol, body) of each resource declaration, loops and conditions unwrapped."""
        for symbol, res in self.doc.get("resources", {}).items():
            if res.get("existing") and not include_existing:
                continue
            if rtype is not None and res["type"] != rtype:
                continue
            yield symbol, unwrap(res["config"])

    def modules(self) -> Iterator[tuple[str, str, dict]]:
        """(symbol, path, body) of each module declaration, loops and conditions unwrapped."""
        for symbol, mod in self.doc.get("modules", {}).items():
            yield symbol, mod["detail"]["path"], unwrap(mod["config"])


def unwrap(config: Any) -> Any:
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def infra_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


# ---------------------------------------------------------------------------------------------------------
# Rules: each returns a list of violations, "<file>: <what is wrong and what to do>".


def rule_param_descriptions(f: BicepFile) -> list[str]:
    out = []
    for name, param in f.doc.get("parameters", {}).items():
        if not any(d.get("type") == "description" and d.get("argument") for d in param.get("decorators", [])):
            out.append(f"{f.name}: parameter {name!r} has no @description(...)")
    return out


def rule_modules(f: BicepFile) -> list[str]:
    """Local module paths exist, passed params are declared there, required ones are passed."""
    out = []
    for symbol, rel, body in f.modules():
        if rel.startswith(("br:", "br/", "ts:", "ts/")):
            out.append(f"{f.name}: module {symbol!r} uses registry module {rel!r}; "
                       "use a local module under infra/modules")
            continue
        target = (f.path.parent / rel).resolve()
        if not target.is_file():
            out.append(f"{f.name}: module {symbol!r} points at {rel!r}, which does not exist")
            continue
        if INFRA / "modules" not in target.parents:
            out.append(f"{f.name}: module {symbol!r} ({rel}) is not under infra/modules")
        declared = BicepFile.load(target).doc.get("parameters", {})
        passed = body.get("params") or {}
        if not isinstance(passed, dict):
            out.append(f"{f.name}: module {symbol!r} params must be an object literal")
            continue
        for name in passed:
            if name not in declared:
                out.append(f"{f.name}: module {symbol!r} passes {name!r}, which {rel} does not declare")
        for name, param in declared.items():
            if param.get("default") is None and name not in passed:
                out.append(f"{f.name}: module {symbol!r} does not pass required parameter {name!r} of {rel}")
    return out


def load_calls(f: BicepFile) -> list[tuple[str, str]]:
    """(function, path argument) of each loadJsonContent/loadTextContent/... call."""
    src = f.text.encode()
    calls = []
    for n in _walk(f.tree.root_node):
        if n.type != "call_expression":
            continue
        fn = n.child_by_field_name("function")
        name = src[fn.start_byte:fn.end_byte].decode() if fn is not None else ""
        if name not in LOAD_FUNCTIONS:
            continue
        args = n.child_by_field_name("arguments")
        first = next((c for c in (args.named_children if args is not None else []) if c.type != "comment"), None)
        literal = src[first.start_byte:first.end_byte].decode() if first is not None else ""
        calls.append((name, literal))
    return calls


def rule_load_files(f: BicepFile) -> list[str]:
    out = []
    for name, literal in load_calls(f):
        if not (literal.startswith("'") and literal.endswith("'") and "${" not in literal):
            out.append(f"{f.name}: {name}({literal}) needs a plain string literal path")
            continue
        target = f.path.parent / literal[1:-1]
        if not target.is_file():
            out.append(f"{f.name}: {name}('{literal[1:-1]}') file does not exist ({target})")
            continue
        if name == "loadJsonContent":
            try:
                json.loads(target.read_text(encoding="utf-8"))
            except ValueError as exc:
                out.append(f"{f.name}: {name}('{literal[1:-1]}') is not valid JSON: {exc}")
    return out


def _resource_types(f: BicepFile) -> dict[str, str]:
    return {sym: res["type"] for sym, res in f.doc.get("resources", {}).items()}


def rule_no_storage_keys(f: BicepFile) -> list[str]:
    """No storage keys, SAS or connection strings; list*() only on the function app host (system keys)."""
    out = []
    code = f.code_without_comments()
    for m in FORBIDDEN_TEXT.finditer(code):
        line = code.count("\n", 0, m.start()) + 1
        out.append(f"{f.name}:{line}: {m.group(0)!r} builds a storage key, SAS or connection string; "
                   "use the managed identity")
    types = _resource_types(f)
    for m in re.finditer(r"(?:\b([A-Za-z_]\w*)\s*\.\s*)?\b(list\w*)\s*\(", code):
        receiver, fn = m.group(1), m.group(2)
        line = code.count("\n", 0, m.start()) + 1
        if receiver is None:
            out.append(f"{f.name}:{line}: {fn}(...) as a free function; call it on a Microsoft.Web/sites/host resource")
        elif types.get(receiver) not in LIST_ALLOWED_TYPES:
            out.append(f"{f.name}:{line}: {receiver}.{fn}() on {types.get(receiver, 'an unknown symbol')}: "
                       "only the function app host's system keys may be listed (never storage keys)")
    return out


def rule_storage_accounts(f: BicepFile) -> list[str]:
    out = []
    expected = {
        "supportsHttpsTrafficOnly": True,
        "minimumTlsVersion": "TLS1_2",
        "allowSharedKeyAccess": False,
        "allowBlobPublicAccess": False,
    }
    for sym, body in f.resources("Microsoft.Storage/storageAccounts"):
        if dig(body, "sku", "name") != "Standard_RAGZRS":
            sku = dig(body, "sku", "name")
            out.append(f"{f.name}: storage account {sym!r} sku must be Standard_RAGZRS, got {sku!r}")
        props = body.get("properties") or {}
        for key, want in expected.items():
            if props.get(key) != want or type(props.get(key)) is not type(want):
                got = props.get(key)
                out.append(f"{f.name}: storage account {sym!r} properties.{key} must be {want!r}, got {got!r}")
    return out


def rule_blob_services(f: BicepFile) -> list[str]:
    out = []
    for sym, body in f.resources("Microsoft.Storage/storageAccounts/blobServices"):
        props = body.get("properties") or {}
        checks = {
            "isVersioningEnabled": props.get("isVersioningEnabled"),
            "deleteRetentionPolicy.enabled": dig(props, "deleteRetentionPolicy", "enabled"),
            "containerDeleteRetentionPolicy.enabled": dig(props, "containerDeleteRetentionPolicy", "enabled"),
            "changeFeed.enabled": dig(props, "changeFeed", "enabled"),
        }
        for key, value in checks.items():
            if value is not True:
                out.append(f"{f.name}: blob service {sym!r} properties.{key} must be true, got {value!r}")
    for sym, body in f.resources("Microsoft.Storage/storageAccounts/blobServices/containers"):
        access = dig(body, "properties", "publicAccess")
        if access not in (None, "None"):
            out.append(f"{f.name}: container {sym!r} publicAccess must be 'None', got {access!r}")
    return out


def _role_guid(f: BicepFile, expr: Any) -> str | None:
    """The role GUID of a roleDefinitionId expression (a literal, a variable, or roles.<key>)."""
    expr = f.resolve(expr)
    if isinstance(expr, dict) and "function" in expr:
        params = expr["function"].get("parameters", {})
        return _role_guid(f, params.get("resource_name_1"))
    if isinstance(expr, dict) and dig(expr, "operator", "type") == "property_accessor":
        ops = expr["operator"]["operands"]
        obj = f.resolve(ops["operand_1"])
        if isinstance(obj, dict):
            return _role_guid(f, obj.get(ops["operand_2"]))
        return None
    if isinstance(expr, str):
        m = re.search(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", expr)
        return m.group(0).lower() if m else None
    return None


def rule_role_assignments(f: BicepFile) -> list[str]:
    out = []
    for sym, body in f.resources("Microsoft.Authorization/roleAssignments"):
        name = body.get("name")
        fn = dig(name, "function") if isinstance(name, dict) else None
        if not fn or fn.get("type") != "guid" or len([v for v in fn.get("parameters", {}).values() if v]) != 3:
            out.append(f"{f.name}: role assignment {sym!r} name must be guid(scope, principal, role)")
        guid = _role_guid(f, dig(body, "properties", "roleDefinitionId"))
        if guid not in ALLOWED_ROLES:
            out.append(f"{f.name}: role assignment {sym!r} assigns {guid or 'an unresolvable role'}, "
                       f"not in the allow-list ({', '.join(sorted(ALLOWED_ROLES.values()))})")
    # Every GUID literal is an allowed role and carries a comment naming it.
    for lineno, line in enumerate(f.text.splitlines(), 1):
        for m in GUID.finditer(line):
            guid = m.group(1).lower()
            if guid not in ALLOWED_ROLES:
                out.append(f"{f.name}:{lineno}: GUID {guid} is not an allowed role definition")
                continue
            rest = line[m.end():]
            comment = rest.split("//", 1)[1].strip() if "//" in rest else ""
            if comment != ALLOWED_ROLES[guid]:
                out.append(f"{f.name}:{lineno}: role GUID {guid} needs the comment '// {ALLOWED_ROLES[guid]}', "
                           f"got {comment!r}")
    return out


def rule_monitoring(f: BicepFile) -> list[str]:
    out = []
    for sym, body in f.resources("Microsoft.Insights/components"):
        if dig(body, "properties", "DisableLocalAuth") is not True:
            out.append(f"{f.name}: Application Insights {sym!r} needs properties.DisableLocalAuth: true")
    for sym, body in f.resources("Microsoft.OperationalInsights/workspaces"):
        if dig(body, "properties", "features", "disableLocalAuth") is not True:
            out.append(f"{f.name}: Log Analytics {sym!r} needs properties.features.disableLocalAuth: true")
    return out


def rule_event_grid(f: BicepFile) -> list[str]:
    out = []
    for sym, body in f.resources("Microsoft.EventGrid/topics"):
        if dig(body, "properties", "disableLocalAuth") is not True:
            out.append(f"{f.name}: custom topic {sym!r} needs properties.disableLocalAuth: true (Entra ID only)")
        if dig(body, "properties", "inputSchema") != "CloudEventSchemaV1_0":
            out.append(f"{f.name}: custom topic {sym!r} inputSchema must be CloudEventSchemaV1_0")
    for sym, body in f.resources("Microsoft.EventGrid/systemTopics"):
        if dig(body, "properties", "topicType") != "Microsoft.Storage.StorageAccounts":
            out.append(f"{f.name}: system topic {sym!r} topicType must be Microsoft.Storage.StorageAccounts")
    schemas = {
        "Microsoft.EventGrid/systemTopics/eventSubscriptions": "EventGridSchema",
        "Microsoft.EventGrid/topics/eventSubscriptions": "CloudEventSchemaV1_0",
    }
    for rtype, schema in schemas.items():
        for sym, body in f.resources(rtype):
            props = body.get("properties") or {}
            if props.get("eventDeliverySchema") != schema:
                out.append(f"{f.name}: {sym!r} ({rtype}) eventDeliverySchema must be {schema}, "
                           f"got {props.get('eventDeliverySchema')!r}")
            if "deadLetterDestination" in props:
                out.append(f"{f.name}: {sym!r} uses deadLetterDestination; use deadLetterWithResourceIdentity")
            if "deadLetterWithResourceIdentity" not in props:
                out.append(f"{f.name}: {sym!r} has no deadLetterWithResourceIdentity")
            elif "SystemAssigned" not in json.dumps(props["deadLetterWithResourceIdentity"]):
                out.append(f"{f.name}: {sym!r} must dead-letter with the topic's system-assigned identity (the storage "
                           "firewall admits a trusted service with no other)")
            out += _webhook_problems(f, sym, props.get("destination"))
    return out


def _webhook_problems(f: BicepFile, sym: str, destination: Any) -> list[str]:
    """Event Grid delivers through Front Door's hooks endpoint of the region, with the host's system key in a secret
    header: never to the app's own host name (the apps admit nothing around Front Door), never an AzureFunction
    endpoint (Event Grid would call the app directly), never the key in the URL (URLs are logged)."""
    out = []
    if not isinstance(destination, dict) or destination.get("endpointType") != "WebHook":
        return [f"{f.name}: {sym!r} destination must be a WebHook through Front Door's hooks endpoint, got "
                f"{(destination or {}).get('endpointType') if isinstance(destination, dict) else destination!r}"]
    props = destination.get("properties") or {}
    url = json.dumps(f.resolve(props.get("endpointUrl")))
    if "https://${hooksHost}/runtime/webhooks/" not in url:
        out.append(f"{f.name}: {sym!r} webhook must be https://<hooks host>/runtime/webhooks/... (Front Door's hooks "
                   f"endpoint of the region), got {url}")
    for bad, why in (("defaultHostName", "the app's own host name goes around Front Door"),
                     ("code=", "a key in the URL ends up in logs"), ("listKeys", "a key in the URL ends up in logs")):
        if bad in url:
            out.append(f"{f.name}: {sym!r} webhook URL has {bad!r}: {why}")
    mappings = props.get("deliveryAttributeMappings") or []
    key = [m for m in mappings if isinstance(m, dict) and m.get("name") == "x-functions-key"]
    if not key or dig(key[0], "properties", "isSecret") is not True or "systemKeys" not in json.dumps(key[0]):
        out.append(f"{f.name}: {sym!r} must send the host's system key as a secret x-functions-key delivery attribute")
    return out


def rule_key_vault(f: BicepFile) -> list[str]:
    out = []
    for sym, body in f.resources("Microsoft.KeyVault/vaults"):
        props = body.get("properties") or {}
        for key in ("enableRbacAuthorization", "enablePurgeProtection"):
            if props.get(key) is not True:
                out.append(f"{f.name}: Key Vault {sym!r} needs properties.{key}: true")
        if props.get("accessPolicies"):
            out.append(f"{f.name}: Key Vault {sym!r} uses access policies; use RBAC")
    return out


def _setting_entries(f: BicepFile, expr: Any, depth: int = 0) -> list[dict]:
    """The {name, value} entries of an appSettings expression: a list, a variable, concat(...) of those, or a
    conditional whose branches are lists (a setting given only in some deployments counts as given)."""
    expr = f.resolve(expr)
    if depth > 10:
        return []
    if isinstance(expr, list):
        if all(isinstance(e, dict) and "name" in e for e in expr):
            return expr
        return [e for item in expr for e in _setting_entries(f, item, depth + 1)]
    if isinstance(expr, dict):
        fn = expr.get("function")
        if isinstance(fn, dict):
            return [e for arg in (fn.get("parameters") or {}).values() for e in _setting_entries(f, arg, depth + 1)]
        return [e for v in expr.values() for e in _setting_entries(f, v, depth + 1)]
    return []


def app_settings(f: BicepFile) -> dict[str, Any]:
    """Name -> value expression of every app setting the file gives a function app."""
    settings: dict[str, Any] = {}
    for _sym, body in f.resources("Microsoft.Web/sites"):
        for entry in _setting_entries(f, dig(body, "properties", "siteConfig", "appSettings")):
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                settings[entry["name"]] = entry.get("value")
    for _sym, body in f.resources("Microsoft.Web/sites/config"):
        if body.get("name") == "appsettings" and isinstance(body.get("properties"), dict):
            settings.update(body["properties"])
    return settings


def rule_function_apps(f: BicepFile) -> list[str]:
    out = []
    for sym, body in f.resources("Microsoft.Web/sites"):
        props = body.get("properties") or {}
        if props.get("httpsOnly") is not True:
            out.append(f"{f.name}: site {sym!r} needs httpsOnly: true")
        if dig(props, "siteConfig", "minTlsVersion") != "1.2":
            out.append(f"{f.name}: site {sym!r} siteConfig.minTlsVersion must be '1.2'")
        if dig(props, "siteConfig", "ftpsState") != "Disabled":
            out.append(f"{f.name}: site {sym!r} siteConfig.ftpsState must be 'Disabled'")
        if dig(props, "functionAppConfig", "runtime") != {"name": "python", "version": "3.11"}:
            out.append(f"{f.name}: site {sym!r} functionAppConfig.runtime must be python 3.11")
        if dig(body, "identity", "type") != "UserAssigned":
            out.append(f"{f.name}: site {sym!r} needs a user-assigned identity (identity.type 'UserAssigned')")
        auth = dig(props, "functionAppConfig", "deployment", "storage", "authentication", "type")
        if auth not in ("UserAssignedIdentity", "SystemAssignedIdentity"):
            out.append(f"{f.name}: site {sym!r} deployment storage must authenticate with a managed identity")
    for name in app_settings(f):
        if name in FLEX_FORBIDDEN_SETTINGS:
            out.append(f"{f.name}: app setting {name!r} is not allowed on Flex Consumption; remove it")
    for sym, body in f.resources("Microsoft.Web/serverfarms"):
        if dig(body, "sku", "name") != "FC1":
            out.append(f"{f.name}: plan {sym!r} must be Flex Consumption (sku FC1)")
    return out


#: Resource types whose logs must reach Log Analytics through a diagnostic setting in the same file.
DIAGNOSED_TYPES = frozenset({
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Storage/storageAccounts/blobServices",
    "Microsoft.Web/sites",
    "Microsoft.EventGrid/topics",
    "Microsoft.EventGrid/systemTopics",
    "Microsoft.KeyVault/vaults",
    "Microsoft.Cdn/profiles",
})


def rule_diagnostics(f: BicepFile) -> list[str]:
    scoped = {body.get("scope") for _sym, body in f.resources("Microsoft.Insights/diagnosticSettings")
              if dig(body, "properties", "workspaceId")}
    out = []
    for sym, res in f.doc.get("resources", {}).items():
        if res["type"] in DIAGNOSED_TYPES and not res.get("existing") and sym not in scoped:
            out.append(f"{f.name}: {res['type']} {sym!r} has no diagnostic setting to Log Analytics "
                       f"(Microsoft.Insights/diagnosticSettings with scope: {sym} and a workspaceId)")
    return out


def rule_no_service_tag_bypass(f: BicepFile) -> list[str]:
    """An access restriction by service tag admits every customer of that service: only Front Door's, and only with
    this profile's X-Azure-FDID. (AzureEventGrid admitted anyone's Event Grid to every route, around the WAF.)"""
    out = []
    for where in ("variables", "resources"):
        for name, decl in (f.doc.get(where) or {}).items():
            for key, value in _keys(decl):
                if key != "ipSecurityRestrictions" and key != "scmIpSecurityRestrictions" and key != "value":
                    continue
                for entry in _setting_entries_any(f, value):
                    if entry.get("tag") != "ServiceTag":
                        continue
                    headers = {str(k).strip("'").lower() for k in (entry.get("headers") or {})}
                    if entry.get("ipAddress") != "AzureFrontDoor.Backend" or "x-azure-fdid" not in headers:
                        out.append(f"{f.name}: {where[:-1]} {name!r} admits service tag {entry.get('ipAddress')!r}"
                                   f"{'' if 'x-azure-fdid' in headers else ' without an X-Azure-FDID header'}: "
                                   "every customer of that service gets around Front Door; admit Front Door alone "
                                   "(AzureFrontDoor.Backend with this profile's X-Azure-FDID)")
    return out


def _setting_entries_any(f: BicepFile, expr: Any) -> list[dict]:
    """Dicts inside an expression (lists, variables, concat, conditionals), for rules that look for entries."""
    found = []
    for _k, v in _keys({"x": f.resolve(expr)}):
        v = f.resolve(v)
        if isinstance(v, dict) and "tag" in v:
            found.append(v)
        elif isinstance(v, list):
            found += [e for e in (f.resolve(i) for i in v) if isinstance(e, dict) and "tag" in e]
    return found


def rule_front_door(f: BicepFile) -> list[str]:
    """Front Door Premium (managed WAF rules, Private Link), every endpoint behind a WAF policy that blocks, with a
    managed rule set, a per-client rate limit and scrubbed logs; HTTPS only; nothing cached (every answer is one
    caller's patient data)."""
    out = []
    params = f.doc.get("parameters", {})
    for sym, body in f.resources("Microsoft.Cdn/profiles"):
        if dig(body, "sku", "name") != "Premium_AzureFrontDoor":
            out.append(f"{f.name}: Front Door {sym!r} must be Premium_AzureFrontDoor (managed WAF rule sets and "
                       f"Private Link origins exist only there), got {dig(body, 'sku', 'name')!r}")
    for sym, body in f.resources("Microsoft.Cdn/profiles/afdEndpoints/routes"):
        props = body.get("properties") or {}
        if props.get("supportedProtocols") != ["Https"] or props.get("forwardingProtocol") != "HttpsOnly":
            out.append(f"{f.name}: route {sym!r} must take and forward HTTPS only")
        if "cacheConfiguration" in props:
            out.append(f"{f.name}: route {sym!r} caches: answers carry one caller's patient data; remove "
                       "cacheConfiguration")
    for sym, body in f.resources("Microsoft.Network/FrontDoorWebApplicationFirewallPolicies"):
        props = body.get("properties") or {}
        mode = dig(props, "policySettings", "mode")
        mode = params.get(mode, {}).get("default", mode) if isinstance(mode, str) else mode
        if mode != "Prevention" or dig(props, "policySettings", "enabledState") != "Enabled":
            out.append(f"{f.name}: WAF policy {sym!r} must be enabled in Prevention mode (by default), got {mode!r}")
        sets = [m.get("ruleSetType") for m in dig(props, "managedRules", "managedRuleSets") or []]
        if "Microsoft_DefaultRuleSet" not in sets:
            out.append(f"{f.name}: WAF policy {sym!r} needs the managed rule set Microsoft_DefaultRuleSet")
        rules = dig(props, "customRules", "rules") or []
        limits = [r for r in rules if r.get("ruleType") == "RateLimitRule" and r.get("action") == "Block"
                  and {"variableName": "SocketAddr"} in (r.get("groupBy") or [])]
        if not limits:
            out.append(f"{f.name}: WAF policy {sym!r} needs a rate-limit rule per client address that blocks")
        scrub = dig(props, "policySettings", "logScrubbing") or {}
        scrubbed = {r.get("matchVariable") for r in scrub.get("scrubbingRules") or []}
        if scrub.get("state") != "Enabled" or not {"QueryStringArgNames", "RequestUri"} <= scrubbed:
            out.append(f"{f.name}: WAF policy {sym!r} must scrub query strings and URIs from its log (QIDO queries "
                       "name patients)")
    endpoints = {sym for sym, _b in f.resources("Microsoft.Cdn/profiles/afdEndpoints")}
    covered = set()
    for _sym, body in f.resources("Microsoft.Cdn/profiles/securityPolicies"):
        for assoc in dig(body, "properties", "parameters", "associations") or []:
            for domain in assoc.get("domains") or []:
                covered.add(str(domain.get("id")).split("'operand_1': '")[-1].split("'")[0])
    for sym in sorted(endpoints - covered):
        out.append(f"{f.name}: endpoint {sym!r} is not behind the WAF policy (a securityPolicies association)")
    return out


def _secure_params(f: BicepFile) -> set[str]:
    return {name for name, p in (f.doc.get("parameters") or {}).items()
            if any(d.get("type") == "secure" for d in p.get("decorators") or [])}


def _node_text(f: BicepFile, node: tree_sitter.Node) -> str:
    return f.text.encode()[node.start_byte:node.end_byte].decode()


def property_values(f: BicepFile, key: str | re.Pattern[str],
                    within: tree_sitter.Node | None = None) -> list[tuple[str, str]]:
    """(syntax node type, source text) of the value of every ``key: value`` object property (under ``within``):
    tree-sitter tells an identifier (a parameter, a variable) from a string literal, which pycep does not."""
    out = []
    for n in _walk(within or f.tree.root_node):
        if n.type != "object_property" or len(n.named_children) < 2:
            continue
        name = _node_text(f, n.named_children[0]).strip("'")
        if (key.fullmatch(name) if isinstance(key, re.Pattern) else name == key):
            value = n.named_children[-1]
            out.append((value.type, _node_text(f, value)))
    return out


SALT_NAME = re.compile(r"\w*Salt")


def rule_secret_values(f: BicepFile) -> list[str]:
    """Secret values never appear in Bicep: a salt parameter (a name ending in Salt) is @secure() without a default
    and is passed on only as itself, every Key Vault secret the deployment writes takes its value from a @secure()
    parameter, and no output returns a @secure() parameter (deployment outputs are readable by anyone with Reader)."""
    out = []
    secure = _secure_params(f)
    for name, param in (f.doc.get("parameters") or {}).items():
        if SALT_NAME.fullmatch(name) and param.get("type") == "string":
            if name not in secure:
                out.append(f"{f.name}: parameter {name!r} holds a salt: it must be @secure()")
            if param.get("default") is not None:
                out.append(f"{f.name}: parameter {name!r} holds a salt: it must have no default (a value in Bicep)")
    for kind, text in property_values(f, SALT_NAME):
        if kind != "identifier":
            out.append(f"{f.name}: a salt is given as {text[:40]} ({kind}); pass the @secure() parameter itself")
    for n in _walk(f.tree.root_node):
        if n.type != "resource_declaration":
            continue
        head = _node_text(f, n).split("{", 1)[0]
        if "Microsoft.KeyVault/vaults/secrets@" not in head or re.search(r"\bexisting\b", head):
            continue
        for kind, text in property_values(f, "value", within=n):
            if kind != "identifier" or text not in secure:
                out.append(f"{f.name}: a Key Vault secret's value is {text[:40]}: it must be a @secure() parameter, "
                           "never a literal or a computed value")
    for name, output in (f.doc.get("outputs") or {}).items():
        used = set(re.findall(r"'([A-Za-z_]\w*)'", str(output.get("value")))) | {str(output.get("value"))}
        if used & secure:
            out.append(f"{f.name}: output {name!r} returns the @secure() parameter {sorted(used & secure)[0]!r}")
    return out


SECURITY_RULES = (
    rule_secret_values,
    rule_no_service_tag_bypass,
    rule_front_door,
    rule_diagnostics,
    rule_no_storage_keys,
    rule_storage_accounts,
    rule_blob_services,
    rule_role_assignments,
    rule_monitoring,
    rule_event_grid,
    rule_key_vault,
    rule_function_apps,
)


# ---------------------------------------------------------------------------------------------------------
# infra/events.json against the app.

EVENT_GRID_FILTER_FIELDS = frozenset({
    "includedEventTypes", "subjectBeginsWith", "subjectEndsWith", "isSubjectCaseSensitive", "advancedFilters",
    "enableAdvancedFilteringOnArrays",
})
EVENT_GRID_RETRY_FIELDS = frozenset({"maxDeliveryAttempts", "eventTimeToLiveInMinutes"})
TOPIC_SCHEMAS = {"systemTopic": "EventGridSchema", "customTopic": "CloudEventSchemaV1_0"}
SUBSCRIPTION_NAME = re.compile(r"^[A-Za-z0-9-]{3,64}$")


def check_events(events: Mapping[str, Any], functions: Mapping[str, list[dict]], *, event_types: set[str],
                 containers: set[str]) -> list[str]:
    """infra/events.json against the app: functions, trigger kinds, event types, containers, field names.

    ``functions`` maps function name -> its bindings (``get_function_json()["bindings"]``).
    """
    out = []
    topics = events.get("topics") or {}
    for key, topic in topics.items():
        kind = topic.get("kind")
        if kind not in TOPIC_SCHEMAS:
            out.append(f"topic {key!r}: kind must be one of {sorted(TOPIC_SCHEMAS)}, got {kind!r}")
        elif topic.get("schema") != TOPIC_SCHEMAS[kind]:
            out.append(f"topic {key!r}: a {kind} delivers {TOPIC_SCHEMAS[kind]}, got {topic.get('schema')!r}")
    names = [s.get("name") for s in events.get("subscriptions", [])]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        out.append(f"subscription name {dup!r} is used twice")
    for sub in events.get("subscriptions", []):
        label = f"subscription {sub.get('name')!r}"
        if not SUBSCRIPTION_NAME.match(str(sub.get("name"))):
            out.append(f"{label}: name must be 3-64 letters, digits or hyphens")
        topic = topics.get(sub.get("topic"))
        if topic is None:
            out.append(f"{label}: topic {sub.get('topic')!r} is not in topics")
        fn = sub.get("function")
        bindings = functions.get(fn)
        if bindings is None:
            out.append(f"{label}: function {fn!r} is not in function_app.app.get_functions() "
                       f"({', '.join(sorted(functions))})")
        else:
            triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
            endpoint = sub.get("endpoint")
            if endpoint == "blobTrigger":
                if not any(b["type"] == "blobTrigger" and b.get("source") == "EventGrid" for b in triggers):
                    out.append(f"{label}: endpoint blobTrigger needs {fn!r} to be a blob trigger with "
                               "source=EventGrid (func.BlobSource.EVENT_GRID)")
            elif endpoint == "eventGridTrigger":
                if not any(b["type"] == "eventGridTrigger" for b in triggers):
                    out.append(f"{label}: endpoint eventGridTrigger needs {fn!r} to have an eventGridTrigger binding")
            else:
                out.append(f"{label}: endpoint must be 'blobTrigger' or 'eventGridTrigger', got {endpoint!r}")
        flt = sub.get("filter") or {}
        for field in sorted(set(flt) - EVENT_GRID_FILTER_FIELDS):
            out.append(f"{label}: filter field {field!r} is not an Event Grid filter field")
        for af in flt.get("advancedFilters") or []:
            if not {"operatorType", "key"} <= set(af):
                out.append(f"{label}: advanced filter {af!r} needs operatorType and key")
        for et in flt.get("includedEventTypes") or []:
            if et not in event_types and not str(et).startswith("Microsoft.Storage."):
                out.append(f"{label}: event type {et!r} is not in shared/events/types.py")
            if topic is not None:
                storage_type = str(et).startswith("Microsoft.Storage.")
                if storage_type != (topic.get("kind") == "systemTopic"):
                    out.append(f"{label}: event type {et!r} is never published on topic {sub.get('topic')!r}")
        begins = flt.get("subjectBeginsWith")
        if topic is not None and topic.get("kind") == "systemTopic" and begins:
            m = re.match(r"^/blobServices/default/containers/([^/]+)/", begins)
            if not m or m.group(1) not in containers:
                out.append(f"{label}: subjectBeginsWith {begins!r} must name a container the app uses")
        for field in sorted(set(sub.get("retryPolicy") or {}) - EVENT_GRID_RETRY_FIELDS):
            out.append(f"{label}: retryPolicy field {field!r} is not an Event Grid retry field")
        dl = sub.get("deadLetterContainer")
        if dl is not None and dl not in containers:
            out.append(f"{label}: deadLetterContainer {dl!r} is not a container the app uses")
    return out


# ---------------------------------------------------------------------------------------------------------
# checkov, from its own venv.


class CheckovError(RuntimeError):
    """checkov is missing, crashed, or could not parse a file (it would otherwise skip it silently)."""


@dataclass(frozen=True)
class CheckovReport:
    failed: list[dict]
    skipped: list[dict]
    passed: list[dict]
    parsing_errors: list[str]

    def unjustified_skips(self) -> list[str]:
        """Skips without a reason after the check ID (``// checkov:skip=CKV_X: reason``)."""
        def reason(skip: dict) -> str:
            text = str(skip.get("check_result", {}).get("suppress_comment") or "").strip()
            return "" if text == "No comment provided" else text  # checkov's filler for a bare skip

        return [s["check_id"] for s in self.skipped if len(reason(s)) < 10]

    def under(self, folder: str) -> CheckovReport:
        """The part of the report about files under ``folder`` (relative to the scanned directory)."""
        prefix = "/" + folder.strip("/") + "/"

        def mine(results: list[dict]) -> list[dict]:
            return [r for r in results if ("/" + str(r.get("file_path", "")).lstrip("/")).startswith(prefix)]

        return CheckovReport(failed=mine(self.failed), skipped=mine(self.skipped), passed=mine(self.passed),
                             parsing_errors=[e for e in self.parsing_errors if prefix in e])

    def require_parsed(self) -> CheckovReport:
        """Itself, or CheckovError naming the files checkov could not parse (checkov skips them and exits 0)."""
        if self.parsing_errors:
            raise CheckovError("checkov could not parse (and would silently skip): " + ", ".join(self.parsing_errors))
        return self


def checkov_binary() -> Path:
    exe = INFRA_VENV / "bin" / "checkov"
    if not exe.exists():
        raise CheckovError(f"checkov is not installed at {exe}: run `make infra-tools` (its own venv, .venv-infra)")
    return exe


def checkov_report(directory: Path, *, timeout: float = 240) -> CheckovReport:
    """checkov over every Bicep file under ``directory``, offline, parsing errors included in the report (one run
    can then check several folders: :meth:`CheckovReport.under`, :meth:`CheckovReport.require_parsed`)."""
    checkov_binary()  # installed, or a clear error
    proc = subprocess.run(
        # checkov itself, with its JSONPath grammar built once (tests/infra/checkov_cached.py: a third of the time).
        [str(INFRA_VENV / "bin" / "python"), str(Path(__file__).with_name("checkov_cached.py")),
         "--directory", str(directory), "--framework", "bicep", "--skip-download", "--output", "json"],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode not in (0, 1):
        raise CheckovError(f"checkov exited {proc.returncode}: {proc.stderr[-2000:]}")
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise CheckovError(f"checkov printed no JSON report: {proc.stdout[:500]!r} {proc.stderr[-1500:]!r}") from exc
    reports = data if isinstance(data, list) else [data]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    if not bicep:
        # checkov prints a bare summary when it found nothing to scan.
        raise CheckovError(f"checkov scanned no Bicep file under {directory}: {str(data)[:300]}")
    results = bicep[0].get("results", {})
    return CheckovReport(
        failed=results.get("failed_checks", []),
        skipped=results.get("skipped_checks", []),
        passed=results.get("passed_checks", []),
        parsing_errors=list(results.get("parsing_errors", [])),
    )


def run_checkov(directory: Path, *, timeout: float = 240) -> CheckovReport:
    """checkov over every Bicep file under ``directory``, offline; raises on parsing errors."""
    return checkov_report(directory, timeout=timeout).require_parsed()


# ---------------------------------------------------------------------------------------------------------
# Names and settings shared between the Bicep and the code.

#: main.bicep variable -> what the code calls it.
STORAGE_NAME_VARIABLES = {
    "localContainers": "shared/storage/layout.py LOCAL",
    "regionalContainers": "shared/storage/layout.py REGIONAL",
    "appQueues": "shared/storage/layout.py QUEUES",
    "appTables": "shared/index/tables.py TABLES",
}
#: region.bicep parameter -> the main.bicep variable every region module must pass to it.
REGION_PARAMS = {"localContainers": "localContainers", "regionalContainers": "regionalContainers",
                 "queues": "appQueues", "tables": "appTables"}


def storage_names(main: BicepFile) -> dict[str, set[str]]:
    """The container/queue/table names main.bicep creates, by variable (see STORAGE_NAME_VARIABLES)."""
    out = {}
    for var in STORAGE_NAME_VARIABLES:
        try:
            value = main.resolve(main.variable(var))
        except KeyError:
            value = None
        out[var] = {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()
    return out


def check_storage_names(main: BicepFile, expected: Mapping[str, set[str]]) -> list[str]:
    """main.bicep's name lists equal the code's, and reach the data storage account of every region."""
    out = []
    for var, names in storage_names(main).items():
        want = set(expected[var])
        if names != want:
            out.append(f"{main.name}: var {var} must equal {STORAGE_NAME_VARIABLES[var]}: "
                       f"missing {sorted(want - names)}, extra {sorted(names - want)}")
    regions = [(sym, body) for sym, path, body in main.modules() if path.endswith("modules/region.bicep")]
    if not regions:
        out.append(f"{main.name}: no module deploys modules/region.bicep")
    for sym, body in regions:
        params = body.get("params") or {}
        for param, var in REGION_PARAMS.items():
            if params.get(param) != var:
                out.append(f"{main.name}: module {sym!r} must pass {param}: {var}, got {params.get(param)!r}")
    return out


def check_bindings(functions: Mapping[str, list[dict]], names: Mapping[str, set[str]]) -> list[str]:
    """Every queue and blob container a function binds to is one that infra creates. A binding names a
    container as the code does: local containers by their name (regional ones have a per-region name, which
    a binding cannot know, so none may be bound)."""
    out = []
    for fn, bindings in sorted(functions.items()):
        for b in bindings:
            queue = b.get("queueName")
            if queue and queue not in names["appQueues"]:
                out.append(f"function {fn!r} binds queue {queue!r}, which infra does not create")
            path = b.get("path")
            if path and str(b.get("type", "")).startswith("blob"):
                container = str(path).split("/", 1)[0]
                if container in names["regionalContainers"]:
                    out.append(f"function {fn!r} binds regional container {container!r}: its name differs per "
                               "region (<name>-<region key>); bind a local container or use the blob store")
                elif container not in names["localContainers"]:
                    out.append(f"function {fn!r} binds container {container!r}, which infra does not create")
            table = b.get("tableName")
            if table and table not in names["appTables"]:
                out.append(f"function {fn!r} binds table {table!r}, which infra does not create")
    return out


SERVICE_URI_BY_BINDING = {"blob": "blobServiceUri", "queue": "queueServiceUri", "table": "tableServiceUri"}


def check_app_settings(names: set[str], functions: Mapping[str, list[dict]], config_source: str) -> list[str]:
    """The function app's settings are the ones the app reads (shared/config.py) and its bindings need."""
    from shared.config import EVENTS_CONNECTION, PEER_STORAGE_CONNECTION, STORAGE_CONNECTION, Settings

    out = []
    samples = {"DICOMFLOW_REGION": "primary", "DICOMFLOW_PEER_REGION": "secondary"}
    env = {n: samples.get(n, "60" if n.startswith("DICOMFLOW_") else f"https://{n.lower()}.example") for n in names}
    try:
        settings = Settings.from_env(env)
        settings.require_storage()
    except ValueError as exc:
        return [f"app settings do not configure the app: {exc}"]
    st = settings.storage
    if st.connection_string:
        out.append(f"app settings set {STORAGE_CONNECTION} (a connection string); "
                   f"use {STORAGE_CONNECTION}__* (identity)")
    for field in ("blob_service_uri", "queue_service_uri", "table_service_uri", "client_id"):
        if getattr(st, field) is None:
            out.append(f"app settings leave shared/config.py storage.{field} unset")
    if settings.events_endpoint is None:
        out.append(f"app settings lack {EVENTS_CONNECTION}__topicEndpointUri")
    if not settings.auth.configured:
        out.append("app settings leave sign-in unconfigured: set DICOMFLOW_AUTH_ISSUER and DICOMFLOW_AUTH_AUDIENCE")
    if settings.events_client_id is None:
        out.append(f"app settings lack {EVENTS_CONNECTION}__clientId")
    if not settings.audit.patient_salt:
        out.append("app settings leave the audit trail's patient salt unset (DICOMFLOW_AUDIT_PATIENT_SALT): patient "
                   "digests would be plain SHA-256 of guessable IDs")
    if settings.region.paired and not settings.region.follows_peer:
        out.append(f"app settings pair two regions but give no {PEER_STORAGE_CONNECTION}__tableServiceUri: the peer's "
                   "change feed would never be read")
    if settings.region.paired and settings.region.peer_storage.client_id is None:
        out.append(f"app settings lack {PEER_STORAGE_CONNECTION}__clientId (the identity that reads the peer's feed)")
    for n in sorted(names):
        if n.startswith("DICOMFLOW_") and f'"{n}"' not in config_source:
            out.append(f"app setting {n!r} is not read by shared/config.py (typo?)")
    for conn, services in _connections(functions).items():
        prefix = conn + "__"
        if conn in names:
            out.append(f"app setting {conn!r} is a connection string; use identity-based {prefix}* settings")
        if names and f"{prefix}credential" not in names:
            out.append(f"connection {conn!r} lacks {prefix}credential=managedidentity")
        for service in sorted(services):
            uri = SERVICE_URI_BY_BINDING[service]
            if f"{prefix}{uri}" not in names and f"{prefix}serviceUri" not in names:
                out.append(f"connection {conn!r} ({service} binding) lacks {prefix}{uri}")
    return out


def _connections(functions: Mapping[str, list[dict]]) -> dict[str, set[str]]:
    conns: dict[str, set[str]] = {"AzureWebJobsStorage": {"blob", "queue", "table"}}  # the host itself
    for bindings in functions.values():
        for b in bindings:
            btype = str(b.get("type", ""))
            service = next((s for s in SERVICE_URI_BY_BINDING if btype.startswith(s)), None)
            if service and b.get("connection"):
                conns.setdefault(b["connection"], set()).add(service)
    return conns


# ---------------------------------------------------------------------------------------------------------
# Deployment wiring: azure.yaml and the postdeploy hook use stage 1's outputs and pass stage 2's parameters.

AZD_BUILTIN = frozenset({"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID", "AZURE_PRINCIPAL_ID"})


def check_stage2_wiring(script: str, stage2: BicepFile, main: BicepFile) -> list[str]:
    out = []
    outputs = set(main.doc.get("outputs", {})) | AZD_BUILTIN
    passed = dict(re.findall(r"^\s*(\w+)=\"\$(\w+)\"", script, re.MULTILINE))
    params = stage2.doc.get("parameters", {})
    for name, param in params.items():
        if param.get("default") is None and name not in passed:
            out.append(f"postdeploy.sh does not pass stage 2 parameter {name!r}")
    for name, var in sorted(passed.items()):
        if name not in params:
            out.append(f"postdeploy.sh passes {name!r}, which stage2/main.bicep does not declare")
        if var not in outputs:
            out.append(f"postdeploy.sh passes ${var}, which is not an output of infra/main.bicep")
    return out


# ---------------------------------------------------------------------------------------------------------
# Deployment faults: Bicep that type-checks but that Azure refuses, or that fails on a first (or a later)
# deployment. Each found by review once; each has a snippet in tests/infra/test_deploy_faults.py that trips it.


def _keys(obj: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair at any depth of a pycep value."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                yield str(k), v
                stack.append(v)
        elif isinstance(o, list):
            stack.extend(o)


def rule_no_archive_tier(f: BicepFile) -> list[str]:
    """No lifecycle action moves blobs to the archive tier: every account here is Standard_RAGZRS
    (rule_storage_accounts), and the archive tier exists only for LRS, GRS and RA-GRS accounts."""
    out = []
    for where in ("variables", "resources", "modules", "parameters"):
        for name, decl in (f.doc.get(where) or {}).items():
            if any(k == "tierToArchive" for k, _v in _keys(decl)):
                out.append(f"{f.name}: {where[:-1]} {name!r} moves blobs to the archive tier (tierToArchive), which "
                           "Standard_RAGZRS accounts do not support; use tierToCold (online) or delete")
    return out


def _symbols(f: BicepFile) -> dict[str, tree_sitter.Node]:
    """Module and resource symbols of a file -> their declaration nodes."""
    src = f.text.encode()
    out = {}
    for n in f.tree.root_node.named_children:
        if n.type in ("module_declaration", "resource_declaration"):
            ident = n.named_children[0]
            out[src[ident.start_byte:ident.end_byte].decode()] = n
    return out


def _referenced(f: BicepFile, node: tree_sitter.Node, variables: Mapping[str, tree_sitter.Node],
                seen: set[str] | None = None) -> set[str]:
    """Identifiers a subtree refers to (object keys excluded), variables followed to what they refer to."""
    src = f.text.encode()
    seen = set() if seen is None else seen
    names: set[str] = set()
    for n in _walk(node):
        if n.type != "identifier":
            continue
        parent = n.parent
        if parent is not None and parent.type == "object_property" and parent.named_children[0] == n:
            continue  # a property name, not a reference
        name = src[n.start_byte:n.end_byte].decode()
        names.add(name)
        if name in variables and name not in seen:
            seen.add(name)
            names |= _referenced(f, variables[name], variables, seen)
    return names


def dependencies(f: BicepFile) -> dict[str, set[str]]:
    """Module/resource symbol -> every module/resource it waits for, directly (a reference to its outputs or
    properties, through variables too, or dependsOn) or transitively: the order ARM deploys them in."""
    src = f.text.encode()
    symbols = _symbols(f)
    variables = {}
    for n in f.tree.root_node.named_children:
        if n.type == "variable_declaration":
            ident = n.named_children[0]
            variables[src[ident.start_byte:ident.end_byte].decode()] = n.named_children[-1]
    direct = {sym: (_referenced(f, decl.named_children[-1], variables) & set(symbols)) - {sym}
              for sym, decl in symbols.items()}
    closure: dict[str, set[str]] = {}
    for sym in symbols:
        todo, done = list(direct[sym]), set()
        while todo:
            d = todo.pop()
            if d not in done:
                done.add(d)
                todo.extend(direct.get(d, ()))
        closure[sym] = done
    return closure


def check_peering_order(main: BicepFile) -> list[str]:
    """Both directions of the VNet peering wait for both networks and for both regions (whose private endpoints
    and VNet integration also change the networks), and for each other: two operations on one virtual network at
    once fail with AnotherOperationInProgress, and a peering created before its network fails outright."""
    out = []
    deps = dependencies(main)
    mods = {sym: path for sym, path, _body in main.modules()}
    peerings = sorted(s for s, p in mods.items() if p.endswith("modules/peering.bicep"))
    networks = sorted(s for s, p in mods.items() if p.endswith("modules/network.bicep"))
    regions = sorted(s for s, p in mods.items() if p.endswith("modules/region.bicep"))
    for sym in peerings:
        for need in networks + regions:
            if need not in deps[sym]:
                out.append(f"{main.name}: peering module {sym!r} does not wait for {need!r}: pass its outputs "
                           f"(e.g. {need}!.outputs.name) or list it in dependsOn")
    for i, a in enumerate(peerings):
        for b in peerings[i + 1:]:
            if a not in deps[b] and b not in deps[a]:
                out.append(f"{main.name}: peering modules {a!r} and {b!r} can run at the same time; make one "
                           "depend on the other")
    return out


def check_immutability_from_creation(region: BicepFile, storage: BicepFile) -> list[str]:
    """The region's own archive container gets version-level immutability support when it is created, whatever
    archiveImmutabilityDays says: Azure enables it on an existing container only by a migration, so a later
    deployment that turns retention on would fail. The time-based policy alone may depend on the days."""
    out = []
    data = [body for _s, path, body in region.modules()
            if path == "storage.bicep" and "immutableContainer" in (body.get("params") or {})]
    if not data:
        out.append(f"{region.name}: no storage module is given immutableContainer (the region's own archive)")
    for body in data:
        value = body["params"]["immutableContainer"]
        if not isinstance(value, str) or "archiveContainer" not in value or "regionKey" not in value:
            out.append(f"{region.name}: immutableContainer must be the region's own archive container from its "
                       f"creation ('${{archiveContainer}}-${{regionKey}}'), not conditional: got {value!r}")
    for sym, body in storage.resources("Microsoft.Storage/storageAccounts/blobServices/containers"):
        enabled = dig(body, "properties", "immutableStorageWithVersioning", "enabled")
        if "immutabilityDays" in json.dumps(enabled):
            out.append(f"{storage.name}: container {sym!r} enables version-level immutability only with retention "
                       "days; enable it at creation and let the days drive the policy alone")
    return out


def check_zone_redundancy(main: BicepFile, function_app: BicepFile, gateway: BicepFile) -> list[str]:
    """Flex Consumption and the gateway's Container Apps environment are zone redundant unless turned off."""
    out = []
    params = main.doc.get("parameters", {})
    for name in ("primaryZoneRedundant", "secondaryZoneRedundant"):
        if params.get(name, {}).get("default") is not True:
            out.append(f"{main.name}: parameter {name!r} must default to true (Flex Consumption zone redundancy is "
                       "generally available)")
    if function_app.doc.get("parameters", {}).get("zoneRedundant", {}).get("default") is not True:
        out.append(f"{function_app.name}: parameter 'zoneRedundant' must default to true")
    for sym, body in function_app.resources("Microsoft.Web/serverfarms"):
        if dig(body, "properties", "zoneRedundant") != "zoneRedundant":
            out.append(f"{function_app.name}: plan {sym!r} must take properties.zoneRedundant from the parameter")
    for sym, body in gateway.resources("Microsoft.App/managedEnvironments"):
        value = dig(body, "properties", "zoneRedundant")
        if value is not True and value != "zoneRedundant":
            out.append(f"{gateway.name}: environment {sym!r} must be zone redundant (properties.zoneRedundant)")
    if gateway.doc.get("parameters", {}).get("zoneRedundant", {}).get("default", True) is not True:
        out.append(f"{gateway.name}: parameter 'zoneRedundant' must default to true")
    return out


def gateway_env(gateway: BicepFile) -> dict[str, Any]:
    """Name -> value expression of the DIMSE gateway container's environment (concat(...) of lists followed)."""
    env: dict[str, Any] = {}
    for _sym, body in gateway.resources("Microsoft.App/containerApps"):
        for container in dig(body, "properties", "template", "containers") or []:
            for entry in _setting_entries(gateway, container.get("env")):
                if isinstance(entry.get("name"), str):
                    env[entry["name"]] = entry.get("value")
    return env


ADMITTING = ("allow-list", "mutual TLS", "allow-list and mutual TLS")


def _allowed_values(f: BicepFile, param: str) -> list[Any] | None:
    for d in f.doc.get("parameters", {}).get(param, {}).get("decorators", []):
        if d.get("type") == "allowed":
            return list(d.get("argument") or [])
    return None


def check_gateway_admission(gateway: BicepFile, region: BicepFile) -> list[str]:
    """The gateway never listens beyond loopback without an AE allow-list or mutual TLS (a certificate and a client
    CA), twice over: the caller states how it is admitted in a parameter whose allowed values name no open gateway
    (so a deployment without either fails, the refusal's reason as the value), and the container's
    DICOMFLOW_GATEWAY_HOST is 0.0.0.0 only when admitted, else 127.0.0.1."""
    out = []
    allowed = _allowed_values(gateway, "admission")
    if allowed is None or sorted(allowed) != sorted(ADMITTING):
        out.append(f"{gateway.name}: parameter 'admission' must allow exactly {list(ADMITTING)} (no open gateway), "
                   f"got {allowed!r}")
    env = gateway_env(gateway)
    host = json.dumps(env.get("DICOMFLOW_GATEWAY_HOST"))
    if not ('"admitted"' in host and '"0.0.0.0"' in host and '"127.0.0.1"' in host):
        out.append(f"{gateway.name}: DICOMFLOW_GATEWAY_HOST must be `admitted ? '0.0.0.0' : '127.0.0.1'`, got {host}")
    variables = gateway.doc.get("variables", {})
    admitted = json.dumps(variables.get("admitted", {}).get("value"))
    if not ("allowedAeTitles" in admitted and "mutualTls" in admitted):
        out.append(f"{gateway.name}: var admitted must be an AE allow-list or mutual TLS, got {admitted}")
    mutual = json.dumps(variables.get("mutualTls", {}).get("value"))
    if not ('"tls"' in mutual and "tlsClientCaCertificate" in mutual and '"and"' in mutual):
        out.append(f"{gateway.name}: var mutualTls must need both the certificate (tls) and tlsClientCaCertificate")
    if "DICOMFLOW_GATEWAY_TLS_CA_FILE" not in gateway.text:
        out.append(f"{gateway.name}: the client CA is never given to the gateway (DICOMFLOW_GATEWAY_TLS_CA_FILE)")
    given = [body.get("params") or {} for _s, path, body in region.modules() if path == "gateway.bicep"]
    for params in given:
        expr = region.resolve(params.get("admission"))
        text = json.dumps(expr)
        values = re.findall(r'"((?:allow-list|mutual TLS|refused)[^"]*)"', text)
        open_refused = any(v.startswith("refused") and "gatewayAllowedAeTitles" in v for v in values)
        if not open_refused or not set(ADMITTING) <= set(values):
            out.append(f"{region.name}: the gateway's admission must be computed from the allow-list and mutual TLS "
                       f"with a 'refused: ...' value otherwise, got {text[:200]}")
    if not given:
        out.append(f"{region.name}: no gateway module")
    return out


# ---------------------------------------------------------------------------------------------------------
# The audit trail's patient salt (DICOMFLOW_AUDIT_PATIENT_SALT): one Key Vault secret per region with one value,
# which every reader takes from its vault, and which azd carries from one deployment to the next.

AUDIT_SALT_SETTING = "DICOMFLOW_AUDIT_PATIENT_SALT"


def _salt_entry(f: BicepFile, entries_expr: Any) -> dict | None:
    found = [e for e in _setting_entries(f, entries_expr) if e.get("name") == AUDIT_SALT_SETTING]
    return found[0] if found else None


def _required_param(f: BicepFile, expr: Any) -> str | None:
    """The name of the parameter without a default that ``expr`` is, else None."""
    params = f.doc.get("parameters") or {}
    return expr if isinstance(expr, str) and expr in params and params[expr].get("default") is None else None


def check_audit_salt(main: BicepFile, region: BicepFile, key_vault: BicepFile, function_app: BicepFile,
                     gateway: BicepFile) -> list[str]:
    """Both regions' function apps and DIMSE gateways take DICOMFLOW_AUDIT_PATIENT_SALT from their region's Key Vault
    (a Key Vault reference; a Container Apps secret read with the gateway's identity), the vault's secret is written
    from main.bicep's @secure() parameter, and both regions get the same parameter and secret name."""
    out = []
    # main.bicep -> both regions: the same parameter, the same secret name.
    regions = [body.get("params") or {} for _s, path, body in main.modules() if path.endswith("region.bicep")]
    if len(regions) != 2:
        out.append(f"{main.name}: expected two region modules, found {len(regions)}")
    for params in regions:
        if params.get("auditPatientSalt") != "auditPatientSalt" or "auditPatientSalt" not in _secure_params(main):
            out.append(f"{main.name}: each region must get the @secure() parameter auditPatientSalt")
        if params.get("auditPatientSaltSecretName") != "auditPatientSaltSecretName":
            out.append(f"{main.name}: each region must get var auditPatientSaltSecretName (one secret name)")
    # region.bicep -> its vault writes the secret; the readers get it from the vault's outputs.
    modules = {path: body.get("params") or {} for _s, path, body in region.modules()}
    kv = modules.get("keyVault.bicep", {})
    if kv.get("auditPatientSalt") != "auditPatientSalt" or "auditPatientSalt" not in _secure_params(region):
        out.append(f"{region.name}: keyVault.bicep must get the @secure() parameter auditPatientSalt")
    secrets = [(sym, body) for sym, body in key_vault.resources("Microsoft.KeyVault/vaults/secrets")
               if dig(body, "properties", "value") == "auditPatientSalt"]
    if len(secrets) != 1 or secrets[0][1].get("name") != "auditPatientSaltSecretName":
        out.append(f"{key_vault.name}: one secret named auditPatientSaltSecretName must hold auditPatientSalt")
    else:
        sym = secrets[0][0]
        outputs = {n: str(o.get("value")) for n, o in (key_vault.doc.get("outputs") or {}).items()}
        if f"'{sym}'" not in outputs.get("auditPatientSaltSecretName", "") or "'name'" not in outputs.get(
                "auditPatientSaltSecretName", ""):
            out.append(f"{key_vault.name}: output auditPatientSaltSecretName must be {sym}.name (readers wait for it)")
        if f"'{sym}'" not in outputs.get("auditPatientSaltSecretUri", "") or "'secretUri'" not in outputs.get(
                "auditPatientSaltSecretUri", ""):
            out.append(f"{key_vault.name}: output auditPatientSaltSecretUri must be {sym}.properties.secretUri")
    # The function app: a Key Vault reference to that secret in this region's vault.
    setting = app_settings(function_app).get(AUDIT_SALT_SETTING)
    param = _required_param(function_app, setting)
    if param is None or ("identifier", param) not in property_values(function_app, "value"):
        out.append(f"{function_app.name}: app setting {AUDIT_SALT_SETTING} must be a required parameter (a Key "
                   f"Vault reference), got {setting!r}")
    else:
        given = property_values(region, param)
        if len(given) != 1 or given[0][0] != "string" or not given[0][1].startswith(
                "'@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName="
                "${keyVault.outputs.auditPatientSaltSecretName})"):
            out.append(f"{region.name}: {param} must be '@Microsoft.KeyVault(VaultName=${{keyVault.outputs.name}};"
                       f"SecretName=${{keyVault.outputs.auditPatientSaltSecretName}})', got {given}")
    # The gateway: a secretRef to a Container Apps secret that Key Vault holds, read with the gateway's identity.
    for _sym, app in gateway.resources("Microsoft.App/containerApps"):
        containers = dig(app, "properties", "template", "containers") or []
        entry = next((e for c in containers if (e := _salt_entry(gateway, c.get("env"))) is not None), None)
        if entry is None or "value" in entry or not isinstance(entry.get("secretRef"), str):
            out.append(f"{gateway.name}: {AUDIT_SALT_SETTING} must come from a secret (secretRef), got {entry!r}")
            continue
        secret = next((s for s in _setting_entries(gateway, dig(app, "properties", "configuration", "secrets"))
                       if s.get("name") == entry["secretRef"]), None)
        url = _required_param(gateway, (secret or {}).get("keyVaultUrl"))
        if secret is None or "value" in secret or url is None or secret.get("identity") != "identityId":
            out.append(f"{gateway.name}: secret {entry['secretRef']!r} must be read from Key Vault (keyVaultUrl, a "
                       f"required parameter) with the gateway's identity (identityId), got {secret!r}")
        elif property_values(region, url) != [("member_expression", "keyVault.outputs.auditPatientSaltSecretUri")]:
            out.append(f"{region.name}: {url} must be keyVault.outputs.auditPatientSaltSecretUri, got "
                       f"{property_values(region, url)}")
    return out


# azd's own substitutions in main.parameters.json, as azd (cli/azd/pkg/cmdsubst, pkg/infra/provisioning/bicep)
# applies them: ${NAME} / ${NAME=default} from the azd environment first, then $(command args...) where args are
# word characters, whitespace and dashes. secretOrRandomPassword <vault> <secret> reads the secret; with any other
# number of arguments (an empty vault name) or a 404, it generates a password; any other error stops azd.
AZD_ENV_REF = re.compile(r"\$\{(\w+)(?:=([^}]*))?\}")
AZD_COMMAND = re.compile(r"\$\(\s*(\w+)([\w\s-]*)\)")


def azd_parameters(text: str, env: Mapping[str, str], commands: Mapping[str, Any]) -> dict[str, Any]:
    """main.parameters.json as azd hands it to ARM: ``commands`` maps a command name to a function of its
    argument list (unknown commands stay as they are, as in azd)."""
    substituted = AZD_ENV_REF.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)

    def run(m: re.Match[str]) -> str:
        fn = commands.get(m.group(1))
        return str(fn(m.group(2).split())) if fn else m.group(0)

    return dict(json.loads(AZD_COMMAND.sub(run, substituted))["parameters"])
