"""Every Bicep file parses (tree-sitter-bicep and pycep-parser) and the files fit together."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra.bicepcheck import (
    INFRA,
    BicepFile,
    BicepParseError,
    infra_files,
    load_calls,
    rule_load_files,
    rule_modules,
    rule_param_descriptions,
)

FILES = infra_files()
IDS = [str(p.relative_to(INFRA)) for p in FILES]
REQUIRED_MODULES = ("storage", "objectReplication", "functionApp", "roleAssignments", "eventGrid", "monitoring",
                    "keyVault", "frontDoor", "alerts", "gatewayDns")


def test_layout_is_azd_style() -> None:
    for rel in ("main.bicep", "main.parameters.json", "abbreviations.json", "stage2/main.bicep", "events.json"):
        assert (INFRA / rel).is_file(), f"infra/{rel} is missing"
    for name in REQUIRED_MODULES:
        assert (INFRA / "modules" / f"{name}.bicep").is_file(), f"infra/modules/{name}.bicep is missing"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_parses(path: Path) -> None:
    BicepFile.load(path)  # raises BicepParseError naming the parser, line and column


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_cross_file(path: Path, bicep_files: dict[str, BicepFile]) -> None:
    f = bicep_files[str(path.relative_to(INFRA))]
    assert rule_modules(f) + rule_load_files(f) + rule_param_descriptions(f) == []


def test_main_parameters_file_matches_main(bicep_files: dict[str, BicepFile]) -> None:
    declared = bicep_files["main.bicep"].doc["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(declared), f"main.parameters.json sets undeclared {sorted(set(given) - set(declared))}"
    required = {n for n, p in declared.items() if p.get("default") is None}
    assert required <= set(given), f"main.parameters.json lacks required {sorted(required - set(given))}"


def test_abbreviations_used_exist(bicep_files: dict[str, BicepFile]) -> None:
    abbrs = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"\babbrs\.(\w+)", bicep_files["main.bicep"].text))
    assert used, "main.bicep names nothing from abbreviations.json"
    assert used <= set(abbrs), f"abbreviations.json lacks {sorted(used - set(abbrs))}"


def test_stage2_loads_events_json(bicep_files: dict[str, BicepFile]) -> None:
    stage2 = bicep_files["stage2/main.bicep"]
    assert ("loadJsonContent", "'../events.json'") in load_calls(stage2)
    loops = [body for _sym, path, body in stage2.modules() if path.endswith("modules/eventSubscription.bicep")]
    assert len(loops) == 2, "one subscription module loop per region"
    raw = stage2.doc["modules"]
    for mod in raw.values():
        assert "events" in json.dumps(mod["config"]["loop_type"]), "subscriptions must come from events.json"


# --- negative tests: each rule trips on a small bad snippet ---------------------------------------------


def test_syntax_error_fails_loudly() -> None:
    with pytest.raises(BicepParseError, match="tree-sitter-bicep"):
        BicepFile.from_text("param location string =\nresource x 'A/b@2020-01-01' = {\n")


def test_syntax_outside_pycep_fails_loudly() -> None:
    # Valid Bicep (tree-sitter reads it), but pycep cannot: a loop with a condition.
    text = "param xs array\nresource r 'A/b@2020-01-01' = [for x in xs: if (x > 0) {\n  name: 'a'\n}]\n"
    with pytest.raises(BicepParseError, match="pycep-parser"):
        BicepFile.from_text(text)


def test_module_rule_trips() -> None:
    f = BicepFile.from_text(
        "module a 'modules/storage.bicep' = {\n  name: 'a'\n  params: {\n    name: 'x'\n    bogus: 1\n  }\n}\n"
        "module b 'modules/nope.bicep' = {\n  name: 'b'\n}\n",
        INFRA / "snippet.bicep",
    )
    problems = "\n".join(rule_modules(f))
    assert "passes 'bogus'" in problems
    assert "required parameter 'location'" in problems
    assert "does not exist" in problems


def test_load_rule_trips() -> None:
    f = BicepFile.from_text("var a = loadJsonContent('missing.json')\nvar b = loadJsonContent('../README.md')\n",
                            INFRA / "snippet.bicep")
    problems = "\n".join(rule_load_files(f))
    assert "missing.json') file does not exist" in problems
    assert "is not valid JSON" in problems


def test_description_rule_trips() -> None:
    f = BicepFile.from_text("@description('ok')\nparam a string\nparam b string\n")
    assert rule_param_descriptions(f) == [f"{f.name}: parameter 'b' has no @description(...)"]
