"""Two regions that hold at the moment of loss (infra side): priority replication with its metrics, the alerts and
their action group, the global resource group, the failback gate and ingest that follows the active region."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.storage.layout import QUEUES
from tests.infra.bicepcheck import ROOT, BicepFile, app_settings, dig

#: Log lines the log alerts match, and the code that writes them (an alert on a line nobody writes never fires).
ALERT_LOG_LINES = {
    ": quarantined (": "shared/ingest/service.py",
    "poison-exhausted": "shared/ingest/redrive.py",
}


def _alerts(bicep_files: dict[str, BicepFile]) -> BicepFile:
    return bicep_files["modules/alerts.bicep"]


def _metric_criteria(f: BicepFile) -> dict[str, dict[str, Any]]:
    """Metric alert symbol -> its one criterion."""
    out = {}
    for sym, body in f.resources("Microsoft.Insights/metricAlerts"):
        (criterion,) = body["properties"]["criteria"]["allOf"]
        out[sym] = criterion
    return out


def _queries(f: BicepFile) -> dict[str, dict[str, Any]]:
    """Log alert symbol -> its one criterion (query, aggregation, threshold)."""
    out = {}
    for sym, body in f.resources("Microsoft.Insights/scheduledQueryRules"):
        (criterion,) = body["properties"]["criteria"]["allOf"]
        out[sym] = criterion
    return out


def test_every_alert_the_runbook_relies_on_exists(bicep_files: dict[str, BicepFile]) -> None:
    f = _alerts(bicep_files)
    metrics = {sym: c["metricName"] for sym, c in _metric_criteria(f).items()}
    assert metrics == {
        "originHealth": "OriginHealthPercentage",  # Front Door origin health
        "serverErrors": "Percentage5XX",  # HTTP 5xx rate
        "replicationLate": "PendingOperationsForReplication",  # replication pending > 15 min
        "deadLetters": "DeadLetteredCount",  # dead letters
        "gatewayDown": "Replicas",  # the gateway unreachable
    }
    queries = {sym: c["query"] for sym, c in _queries(f).items()}
    assert set(queries) == {"followerLag", "quarantineSpike", "poisoned", "poisonExhausted"}
    assert 'contains "follower lag_seconds="' in queries["followerLag"]  # the follower's lag line (h22's shape)
    assert queries["poisoned"].startswith("StorageQueueLogs") and '"-poison"' in queries["poisoned"]
    assert queries["quarantineSpike"].startswith("FunctionAppLogs")


def test_replication_alert_fires_on_anything_pending_past_15_minutes(bicep_files: dict[str, BicepFile]) -> None:
    f = _alerts(bicep_files)
    c = _metric_criteria(f)["replicationLate"]
    assert (c["timeAggregation"], c["operator"], c["threshold"]) == ("Maximum", "GreaterThan", 0)
    (dim,) = c["dimensions"]
    assert dim == {"name": "TimeBucket", "operator": "Exclude", "values": "replicationOnTimeBuckets"}
    # Excluded: the buckets up to 15 minutes only (a wrong bucket name makes the rule fire, never go silent).
    assert f.doc["parameters"]["replicationOnTimeBuckets"]["default"] == ["0-5mins", "5-10mins", "10-15mins"]
    (body,) = [b for s, b in f.resources("Microsoft.Insights/metricAlerts") if s == "replicationLate"]
    assert body["properties"]["windowSize"] == "PT15M"


def test_follower_lag_alert_is_five_minutes_on_the_lag_value(bicep_files: dict[str, BicepFile]) -> None:
    f = _alerts(bicep_files)
    c = _queries(f)["followerLag"]
    assert (c["timeAggregation"], c["metricMeasureColumn"], c["operator"], c["threshold"]) == (
        "Maximum", "lag", "GreaterThan", "followerLagSeconds")
    assert f.doc["parameters"]["followerLagSeconds"]["default"] == 300
    assert 'extract("lag_seconds=([0-9.]+)", 1, Message)' in c["query"]


def test_every_rule_notifies_the_action_group(bicep_files: dict[str, BicepFile]) -> None:
    f = _alerts(bicep_files)
    rules = list(f.resources("Microsoft.Insights/metricAlerts")) + list(
        f.resources("Microsoft.Insights/scheduledQueryRules"))
    assert len(rules) == 9
    for sym, body in rules:
        assert "'operand_1': 'actionGroup', 'operand_2': 'id'" in json.dumps(body["properties"]["actions"]).replace(
            '"', "'"), sym
        assert body["properties"]["enabled"] is True, sym


@pytest.mark.parametrize(("line", "source"), sorted(ALERT_LOG_LINES.items()))
def test_log_alerts_match_lines_the_app_writes(line: str, source: str, bicep_files: dict[str, BicepFile]) -> None:
    queries = " ".join(c["query"] for c in _queries(_alerts(bicep_files)).values())
    assert f'"{line}"' in queries
    code = (ROOT / source).read_text(encoding="utf-8")
    assert line in code.replace("%s", ""), f"{source} no longer writes {line!r}: the alert would never fire"


def test_poison_alert_covers_the_apps_queues() -> None:
    # The Functions host moves a message that failed maxDequeueCount times to <queue>-poison.
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] >= 1
    assert all(not q.endswith("-poison") for q in QUEUES)  # "-poison" matches the host's queues, not ours


def test_alerts_span_both_regions_from_the_global_group(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    (sym, params), = [(s, b["params"]) for s, p, b in main.modules() if p.endswith("modules/alerts.bicep")]
    assert main.doc["modules"][sym]["config"]["scope"] == "globalGroup"
    assert len(params["workspaceIds"]) == 2 and len(params["topicIds"]) == 4
    assert len(params["replicationPolicyIds"]) == 2
    # The replication metrics are the source side's policies, one per direction.
    policies = json.dumps(params["replicationPolicyIds"])
    assert "toSecondarySource" in policies and "toPrimarySource" in policies


# --- priority replication -------------------------------------------------------------------------------------------


def test_priority_replication_with_its_metrics_on_both_policies(bicep_files: dict[str, BicepFile]) -> None:
    rep = bicep_files["modules/objectReplication.bicep"]
    (_sym, policy), = rep.resources("Microsoft.Storage/storageAccounts/objectReplicationPolicies")
    assert rep.doc["resources"]["policy"]["api_version"] == "2025-08-01"  # the first API with priorityReplication
    assert policy["properties"]["priorityReplication"] == {"enabled": "priorityReplication"}
    assert policy["properties"]["metrics"] == {"enabled": True}
    assert rep.doc["parameters"]["priorityReplication"]["default"] is True
    main = bicep_files["main.bicep"]
    sides = [body["params"] for _s, path, body in main.modules() if path.endswith("objectReplication.bicep")]
    assert len(sides) == 4 and all("priorityReplication" not in p for p in sides)  # the default (on) everywhere


# --- the global resource group --------------------------------------------------------------------------------------


def test_global_resources_live_in_a_group_of_their_own(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    for sym in ("frontDoorProfile", "frontDoor", "privateDns", "viewer", "alerts", "gatewayName", "globalMonitoring"):
        config = main.doc["modules"][sym]["config"]
        scope = config.get("scope") or dig(config, "config", "scope")
        assert scope == "globalGroup", f"{sym} is in {scope}"
    group = main.doc["resources"]["globalGroup"]["config"]
    assert group["location"] == "globalLocation"
    # Not the primary's region by default: its metadata must outlive the primary region.
    assert main.doc["parameters"]["globalLocation"]["default"] == "secondaryLocation"
    # The regions keep only what is theirs.
    for sym in ("primary", "primaryMonitoring", "primaryNetwork"):
        config = main.doc["modules"][sym]["config"]
        assert (config.get("scope") or dig(config, "config", "scope")) == "primaryGroup", sym


# --- the failback gate and ingest that follows the active region ----------------------------------------------------


def test_failback_gate_on_the_primary_only(bicep_files: dict[str, BicepFile]) -> None:
    main = bicep_files["main.bicep"]
    regions = {sym: body["params"] for sym, path, body in main.modules() if path.endswith("region.bicep")}
    assert regions["primary"]["failbackMaxLagSeconds"] == "failbackMaxLagSeconds"
    assert "failbackMaxLagSeconds" not in regions["secondary"]  # 0: the secondary must answer while the primary is lost
    assert main.doc["parameters"]["failbackMaxLagSeconds"]["default"] == 300
    fa = bicep_files["modules/functionApp.bicep"]
    assert "DICOMFLOW_FAILBACK_MAX_LAG_SECONDS" in str(fa.variable("failbackGate"))
    # The operator's gate: the primary's API origins follow primaryOriginEnabled (az afd origin update).
    fd = bicep_files["modules/frontDoor.bicep"]
    primary = [b for s, b in fd.resources("Microsoft.Cdn/profiles/originGroups/origins") if s == "primaryOrigins"]
    assert "primaryOriginEnabled" in json.dumps(primary[0]["properties"]["enabledState"])
    # Front Door probes the health route the gate answers on.
    groups = [g["properties"] for _s, g in fd.resources("Microsoft.Cdn/profiles/originGroups")]
    probes = {g["healthProbeSettings"]["probePath"] for g in groups if "healthProbeSettings" in g}
    assert probes == {"/api/health"}
    given = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert given["primaryOriginEnabled"]["value"] == "${PRIMARY_ORIGIN_ENABLED=true}"
    assert given["ingestRegion"]["value"] == "${INGEST_REGION=primary}"


def test_uploads_follow_the_ingest_region(bicep_files: dict[str, BicepFile]) -> None:
    fd = bicep_files["modules/frontDoor.bicep"]
    origins = {s: b for s, b in fd.resources("Microsoft.Cdn/profiles/originGroups/origins")}
    # (pycep reads `ingestRegion == 'primary' ? 'Enabled' : 'Disabled'` with its own precedence; the text is plain)
    assert "enabledState: ingestRegion == 'primary' ? 'Enabled' : 'Disabled'" in fd.text
    assert "ingestRegion" in json.dumps(origins["primaryInboxOrigin"]["properties"]["enabledState"])
    assert origins["secondaryInboxOrigin"]["properties"]["enabledState"] == "Enabled"
    assert origins["secondaryInboxOrigin"]["properties"]["priority"] == 2
    (route,) = [b for s, b in fd.resources("Microsoft.Cdn/profiles/afdEndpoints/routes") if s == "inboxRoute"]
    assert route["properties"]["patternsToMatch"] == ["/${inboxContainer}/*"]
    main = bicep_files["main.bicep"]
    assert "INBOX_URL" in main.doc["outputs"] and "GATEWAY_NAME" in main.doc["outputs"]


def test_the_failback_gate_reaches_the_app_once_the_app_reads_it(bicep_files: dict[str, BicepFile]) -> None:
    """The gate's setting is the application's (shared/config.py, the one reader of settings); the function app
    must pass it as soon as the app reads it, and not before (test_names checks every setting is read). Until
    then functionApp.bicep holds it ready in var failbackGate; when this fails, pass it:
    `appSettings: concat(appSettings, failbackGate)` in functionApp.bicep."""
    reads = '"DICOMFLOW_FAILBACK_MAX_LAG_SECONDS"' in (ROOT / "shared" / "config.py").read_text(encoding="utf-8")
    passed = "DICOMFLOW_FAILBACK_MAX_LAG_SECONDS" in app_settings(bicep_files["modules/functionApp.bicep"])
    assert passed == reads, ("shared/config.py reads DICOMFLOW_FAILBACK_MAX_LAG_SECONDS: pass it to the app with "
                             "`appSettings: concat(appSettings, failbackGate)` in infra/modules/functionApp.bicep"
                             if reads else "the app does not read DICOMFLOW_FAILBACK_MAX_LAG_SECONDS yet")
