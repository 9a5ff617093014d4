"""deploy/observability/: Prometheus accepts the configuration and the alert rules, each alert fires on
the case it is for (promtool test rules), the dashboards are what build_dashboards.py writes, and
every metric they name is one Tessera exports. Seconds; the live check is
tests/integration/test_observability.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.support.paths import REPO
from tests.support.prometheus import DASHBOARDS, OBSERVABILITY, binaries, panel_targets

SOURCES = [*REPO.glob("services/*/*.py"), *REPO.glob("tessera/runtime/**/*.py")]


@pytest.fixture(scope="module")
def promtool() -> str:
    return binaries()[1]


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=OBSERVABILITY)


def test_promtool_accepts_the_config_and_its_rules(promtool):
    out = run(promtool, "check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and "rules found" in out.stdout  # the rule file was read with it


def test_promtool_accepts_the_rules(promtool):
    out = run(promtool, "check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_each_alert_fires_on_its_case_and_not_on_the_near_miss(promtool):
    out = run(promtool, "test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_alert_fails_its_case(promtool, tmp_path):
    """The rule tests can fail: raise the saturation threshold and its case no longer fires."""
    rules = (OBSERVABILITY / "alerts.yml").read_text().replace("> 0.05", "> 0.5")
    (tmp_path / "alerts.yml").write_text(rules)
    (tmp_path / "alerts_test.yml").write_text((OBSERVABILITY / "alerts_test.yml").read_text())
    out = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode != 0 and "TesseraSaturated" in out.stdout + out.stderr


def test_dashboards_are_what_the_script_writes():
    out = subprocess.run(
        [sys.executable, str(OBSERVABILITY / "build_dashboards.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert DASHBOARDS, "no dashboard in deploy/observability/grafana"
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] and board["panels"]


def test_every_metric_the_dashboards_and_alerts_name_is_exported():
    text = "\n".join(expr for *_, expr, _legend in panel_targets()) + (OBSERVABILITY / "alerts.yml").read_text()
    names = {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\btessera_[a-z_]+", text)}
    source = "\n".join(p.read_text() for p in SOURCES)
    missing = sorted(n for n in names if f'"{n}"' not in source)
    assert not missing, f"named in deploy/observability but exported nowhere: {missing}"
    assert len(names) > 20
