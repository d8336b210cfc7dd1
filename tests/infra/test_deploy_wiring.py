"""azure.yaml and the postdeploy hook fit stage 1's outputs and stage 2's parameters."""

from __future__ import annotations

import re

from tests.infra.bicepcheck import AZD_BUILTIN, INFRA, ROOT, BicepFile, check_stage2_wiring

SCRIPT = INFRA / "scripts" / "postdeploy.sh"


def test_hook_passes_stage2_parameters_from_stage1_outputs(bicep_files: dict[str, BicepFile]) -> None:
    text = SCRIPT.read_text()
    assert check_stage2_wiring(text, bicep_files["stage2/main.bicep"], bicep_files["main.bicep"]) == []
    assert "infra/stage2/main.bicep" in text


def test_azure_yaml_uses_stage1_outputs_and_the_hook(bicep_files: dict[str, BicepFile]) -> None:
    text = (ROOT / "azure.yaml").read_text()
    outputs = set(bicep_files["main.bicep"].doc["outputs"]) | AZD_BUILTIN
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used and used <= outputs, f"azure.yaml uses {sorted(used - outputs)}, not outputs of main.bicep"
    assert "run: ./infra/scripts/postdeploy.sh" in text
    assert re.search(r"^\s+module: main$", text, re.MULTILINE)


def test_wiring_rule_trips(bicep_files: dict[str, BicepFile]) -> None:
    text = SCRIPT.read_text()
    broken = text.replace('    primaryCustomTopic="$PRIMARY_CUSTOM_TOPIC" \\\n', "")
    broken = broken.replace('"$SECONDARY_SYSTEM_TOPIC"', '"$SECONDARY_TOPIC"')
    broken = broken.replace("    secondaryCustomTopic=", "    secondaryCustomTopics=")
    problems = "\n".join(check_stage2_wiring(broken, bicep_files["stage2/main.bicep"], bicep_files["main.bicep"]))
    assert "does not pass stage 2 parameter 'primaryCustomTopic'" in problems
    assert "$SECONDARY_TOPIC, which is not an output" in problems
    assert "passes 'secondaryCustomTopics', which stage2/main.bicep does not declare" in problems
