"""Node clients against a live cluster: the generated TypeScript client (clients/node) streams
Router.Generate, cancels mid-stream (the worker aborts the request) and finds the services by
reflection; the official Node `openai` package talks to the router's HTTP API.

The assertions are Node tests (clients/node/test, node:test); this file starts a cluster of real
processes with simulated workers, hands its addresses to `node --test` and fails with its report.
`make node-client` (part of `make test`) installs the npm packages and compiles the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.models import TINY
from tests.support.sim_cluster import SimCluster

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
NODE_TESTS = ("router.test.js", "openai.test.js")


@pytest.fixture(scope="module")
def node_tests() -> list[Path]:
    """The compiled tests, or a failure that says how to build them (a stale build tests old code)."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed (Node 20 or later)")
    dist = NODE_CLIENT / "dist"
    tests = [dist / "test" / name for name in NODE_TESTS]
    stamp = dist / ".built"  # written by every `npm run build` (tsc leaves unchanged outputs alone)
    if not stamp.exists() or not all(t.exists() for t in tests):
        pytest.fail(f"the Node tests are not built: run `make node-client` ({dist} missing)")
    built = stamp.stat().st_mtime
    sources = [*NODE_CLIENT.glob("src/**/*.ts"), *NODE_CLIENT.glob("test/**/*.ts")]
    stale = [str(s.relative_to(NODE_CLIENT)) for s in sources if s.stat().st_mtime > built]
    if stale:
        pytest.fail(f"the Node build is older than {', '.join(stale[:3])}: run `make node-client`")
    return tests


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with SimCluster.running(tmp_path_factory.mktemp("node-client")) as c:
        yield c


def test_node_client_and_openai_package_against_a_live_cluster(node_tests, sim):
    workers = {w["id"]: w["address"] for w in sim.status()["workers"]}
    env = {
        **os.environ,
        "TESSERA_GRPC_ADDRESS": f"127.0.0.1:{sim.grpc_port}",
        "TESSERA_HTTP_URL": sim.base_url,
        "TESSERA_MODEL": TINY,
        "TESSERA_WORKERS": json.dumps(workers),
    }
    # One file at a time: the cancel test reads a worker's counters, which another file's requests would move.
    out = subprocess.run(
        ["node", "--test", "--test-concurrency=1", *map(str, node_tests)],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0, report + "\n" + sim.logs()
    counts = {k: int(v) for k, v in re.findall(r"^# (tests|pass|fail) (\d+)$", report, re.MULTILINE)}
    assert counts.get("fail") == 0 and counts.get("pass") == counts.get("tests") >= 6, report
