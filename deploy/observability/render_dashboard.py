"""Plots the queries of the Grafana dashboard from Prometheus' HTTP API, one subplot per panel.

Not Grafana (it does not install here): the same PromQL as grafana/tessera-overview.json
(build_dashboards.py), run with query_range and drawn with matplotlib, for a picture of the
dashboard in the README.

    # against a Prometheus that scrapes a cluster (deploy/observability/prometheus.yml):
    python deploy/observability/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 15
    # or start everything here: tessera up (simulated H100s and MI300Xs), Prometheus on the
    # etcd-backed discovery, tessera bench in three load steps; then plot:
    python deploy/observability/render_dashboard.py --live --out docs/observability-dashboard.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import build_dashboards  # the panel list, beside this file
import yaml

HERE = Path(__file__).resolve().parent
MODEL = "tiny-llama"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _wait(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    body = _get(f"{prometheus}/api/v1/query_range?{params}")
    return body["data"]["result"] if body.get("status") == "success" else []


def legend(template: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        template = template.replace("{{" + key + "}}", value)
    return " ".join(w for w in template.split() if not w.startswith("{{")) or "value"


def render(prometheus: str, start: float, end: float, out: Path, rate_window: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variables = {"$model": ".*", "$profile": ".*", "$__rate_interval": rate_window}
    rows = build_dashboards.ROWS
    cols = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(5.2 * cols, 3.3 * len(rows)), squeeze=False)
    step = max(1.0, (end - start) / 300)
    for r, (row_title, panels) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(panels):
                ax.axis("off")
                continue
            title, unit, _description, queries = panels[c]
            for expr, template in queries:
                for name, value in variables.items():
                    expr = expr.replace(name, value)
                for series in query_range(prometheus, expr, start, end, step):
                    points = [(float(t) - start, float(v)) for t, v in series["values"]]
                    points = [(t, v) for t, v in points if not math.isnan(v) and not math.isinf(v)]
                    if points:
                        xs, ys = zip(*points)
                        ax.plot(xs, ys, label=legend(template, series["metric"]), linewidth=1.2)
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_ylabel(unit, fontsize=7)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=6, loc="upper left", ncol=1 + len(ax.lines) // 6)
            else:
                ax.text(0.5, 0.5, "no events in this window", ha="center", va="center", transform=ax.transAxes)
            if c == 0:
                ax.annotate(row_title, (0, 1.18), xycoords="axes fraction", fontsize=10, weight="bold")
        axes[-1][0].set_xlabel("seconds", fontsize=7)
    fig.suptitle(
        "Tessera overview: the Grafana dashboard's queries, plotted from Prometheus' HTTP API (not Grafana)",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


@contextlib.contextmanager
def live_cluster(workdir: Path, scrape_s: int):
    """tessera up with simulated H100s and MI300Xs, and Prometheus from prometheus.yml on its /sd."""
    port, sd_port, prom_port = _free_port(), _free_port(), _free_port()
    py = [sys.executable, "-m", "tessera.cli"]
    up = subprocess.Popen(
        [*py, "up", "--engine", "sim", "--model", "tiny", "--accelerators", "h100:2,mi300x:2"]
        + ["--sim-arch", "llama3-8b", "--port", str(port), "--grpc-port", str(_free_port())]
        + ["--scheduler-metrics-port", str(sd_port), "--ttft-slo-ms", "300", "--log-dir", str(workdir / "cluster")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    prom = None
    try:
        _wait("the cluster", lambda: sum(_get(f"http://127.0.0.1:{port}/health")["models"].values()) >= 4, 180)
        config = yaml.safe_load((HERE / "prometheus.yml").read_text())
        config["global"].update(scrape_interval=f"{scrape_s}s", evaluation_interval=f"{scrape_s}s")
        config["rule_files"] = [str(HERE / f) for f in config["rule_files"]]
        for job in config["scrape_configs"]:
            for sd in job["http_sd_configs"]:
                sd.update(url=f"http://127.0.0.1:{sd_port}/sd/" + sd["url"].rsplit("/", 1)[-1], refresh_interval="2s")
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={workdir / 'prometheus.yml'}"]
            + [f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        prometheus = f"http://127.0.0.1:{prom_port}"
        _wait("Prometheus", lambda: len(_get(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]) >= 7, 60)
        yield f"http://127.0.0.1:{port}", prometheus
    finally:
        for proc, sig in ((prom, signal.SIGTERM), (up, signal.SIGINT)):
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def bench(url: str, rate: float, prompts: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "tessera.cli", "bench", "--base-url", url, "--model", MODEL]
        + ["--dataset", "shared-prefix", "--shared-prefix-groups", "4", "--prompts-per-group", str(prompts // 4)]
        + ["--shared-prefix-len", "512", "--question-len", "64", "--random-output-len", "64"]
        + ["--request-rate", str(rate), "--warmup", "0", "--policy", "tessera,least_loaded"],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prometheus", default="http://127.0.0.1:9090")
    p.add_argument("--minutes", type=float, default=15, help="the window plotted, ending now")
    p.add_argument("--live", action="store_true", help="start a simulated cluster and Prometheus, load it, plot it")
    p.add_argument("--out", type=Path, default=Path("docs/observability-dashboard.png"))
    args = p.parse_args()
    if not args.live:
        end = time.time()
        render(args.prometheus, end - args.minutes * 60, end, args.out, "1m")
        return 0
    with tempfile.TemporaryDirectory(prefix="tessera-dashboard-") as tmp, live_cluster(Path(tmp), 2) as (url, prom):
        start = time.time()
        time.sleep(10)
        for rate, prompts in ((4, 40), (12, 120), (30, 240)):  # three load steps, the last past the TTFT objective
            bench(url, rate, prompts)
            time.sleep(5)
        time.sleep(10)
        render(prom, start, time.time(), args.out, "15s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
