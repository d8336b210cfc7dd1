"""host.json reading and blob path patterns of the in-process host (pure logic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devhost.host import HostConfig, HostError, _blob_path_matches, _timespan

ROOT = Path(__file__).resolve().parents[2]


def test_timespans() -> None:
    assert _timespan("00:00:02", 9) == 2.0
    assert _timespan("01:02:03.5", 9) == 3723.5
    assert _timespan("1.00:00:00", 9) == 86400
    assert _timespan(None, 9) == 9
    with pytest.raises(HostError, match="hh:mm:ss"):
        _timespan("2s", 9)


def test_host_json_of_the_test_app_and_defaults(tmp_path: Path) -> None:
    cfg = HostConfig.load(ROOT / "tests" / "devhost_app")
    assert (cfg.route_prefix, cfg.queue_max_dequeue, cfg.poison_blob_threshold) == ("api", 2, 2)
    assert cfg.queue_visibility_timeout == 0 and cfg.queue_max_polling == 1
    assert HostConfig.load(tmp_path) == HostConfig()  # no host.json: the Functions defaults
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}))
    assert HostConfig.load(tmp_path).route_prefix == ""
    (tmp_path / "host.json").write_text("{")
    with pytest.raises(HostError, match="invalid JSON"):
        HostConfig.load(tmp_path)


@pytest.mark.parametrize(("pattern", "blob", "expected"), [
    ("{name}", "a.dcm", True),
    ("{name}", "dir/a.dcm", True),
    ("", "anything", True),
    ("in/{name}.dcm", "in/a.dcm", True),
    ("in/{name}.dcm", "out/a.dcm", False),
    ("in/{name}.dcm", "in/a.json", False),
])
def test_blob_path_patterns(pattern: str, blob: str, expected: bool) -> None:
    assert _blob_path_matches(pattern, blob) is expected
