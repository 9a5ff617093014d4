"""A real Prometheus for tests, and the queries the shipped dashboards run.

The binaries are Debian's ``prometheus`` package; ``make prometheus`` installs it when absent
(``make test`` depends on it), and ``binaries()`` runs that target itself for a bare ``pytest``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tessera.runtime.net import free_port
from tests.support.harness import wait_for
from tests.support.paths import REPO

OBSERVABILITY = REPO / "deploy" / "observability"
DASHBOARDS = sorted((OBSERVABILITY / "grafana").glob("*.json"))
# What Grafana would put in for the dashboards' variables: every model and profile, a one-minute rate.
VARIABLES = {"$model": ".*", "$profile": ".*", "$__rate_interval": "1m"}


def binaries() -> tuple[str, str]:
    """prometheus and promtool, installed through `make prometheus` where missing."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        subprocess.run(["make", "-s", "prometheus"], cwd=REPO, check=True, timeout=600)
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    assert prometheus and promtool, "make prometheus did not install prometheus and promtool"
    return prometheus, promtool


def panel_targets() -> list[tuple[str, str, str, str]]:
    """(dashboard, panel title, query with the variables filled in, legend) of every panel query."""
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in VARIABLES.items():
                    expr = expr.replace(name, value)
                out.append((path.name, panel["title"], expr, target.get("legendFormat", "")))
    return out


def per_worker(legend: str) -> bool:
    """A panel whose legend names the accelerator shows per-worker series (build_dashboards.py's rule)."""
    return "{{accelerator}}" in legend


def cluster_config(sd_url: str, data_dir: Path, interval_s: int = 1) -> Path:
    """The shipped prometheus.yml with the discovery URL, intervals and rule path of a test cluster."""
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=f"{interval_s}s", evaluation_interval=f"{interval_s}s")
    config["rule_files"] = [str(OBSERVABILITY / f) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        for sd in job["http_sd_configs"]:
            kind = sd["url"].rsplit("/", 1)[-1]
            sd.update(url=f"{sd_url}/{kind}", refresh_interval=f"{interval_s}s")
    path = data_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    """A Prometheus process on a loopback port, with its data in ``data_dir``."""

    def __init__(self, config: Path, data_dir: Path) -> None:
        prometheus, _ = binaries()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.ready, 30, interval=0.2, what="Prometheus to be ready")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited:\n" + self.log_path.read_text()[-3000:])
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
