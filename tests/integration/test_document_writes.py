"""`tessera slo put` and `tessera profile put` against real etcd, a real scheduler and a real autoscaler:
concurrent edits never silently lose one (compare-and-swap on the etcd revision), the command says whether
the running services accepted the document, and a scheduler restart keeps a customised built-in profile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import ServiceProcess, wait_for

POLICY = """model: smollm2-135m
targets:
  ttft: {{percentile: 90, ms: 2000}}
  tpot: {{percentile: 90, ms: 100}}
inventory: {{cpu: {{free: 4}}}}
roles: [mixed]
instances: {{min: 0, max: 4}}
headroom: {headroom}
interval_s: 60
deployment: {{served_model: cas-model, worker_model: tiny, engine: sim, engine_args: {{sim_arch: smollm2-135m}}}}
"""
LEAST_LOADED = "name: least_loaded\nfilters: [model, health]\nscorers:\n  - {name: queue_depth, weight: 7.0}\n"


def tessera(*args: str, etcd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tessera.cli", *args, "--etcd", etcd],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def start(*args: str, etcd: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", *args, "--etcd", etcd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def revision_shown(command: str, name: str, etcd: str) -> int:
    shown = tessera(command, "show", name, etcd=etcd)
    assert shown.returncode == 0, shown.stderr
    return int(re.match(r"# revision: (\d+)\n", shown.stdout).group(1))


def stored_body(command: str, name: str, etcd: str) -> str:
    return tessera(command, "show", name, etcd=etcd).stdout.split("\n", 1)[1]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """etcd, a scheduler (sched-1) and an autoscaler (as-1) with nothing to run: (etcd endpoint, scheduler)."""
    from tessera.runtime.etcd.server import LocalEtcd
    from tessera.runtime.net import free_port

    tmp = tmp_path_factory.mktemp("document-writes")
    etcd = LocalEtcd(client_port=free_port(), data_dir=str(tmp / "etcd"), log_path=str(tmp / "etcd.log")).start()
    common = ["--etcd", etcd.endpoint, "--port", "0", "--lease-ttl", "2"]
    scheduler = ServiceProcess("scheduler", ["scheduler", *common, "--scheduler-id", "sched-1"], tmp).start()
    autoscaler = ServiceProcess(
        "autoscaler", ["autoscaler", *common, "--autoscaler-id", "as-1", "--worker-log-dir", str(tmp / "w")], tmp
    ).start()
    try:
        for kind in ("scheduler", "autoscaler"):
            wait_for(
                lambda kind=kind: kind in tessera("status", "--json", etcd=etcd.endpoint).stdout,
                60,
                what=f"the {kind} to register",
            )
        yield etcd.endpoint, scheduler
    finally:
        for s in (scheduler, autoscaler):
            s.stop()
        etcd.stop(wipe=True)


def test_two_concurrent_slo_puts_one_wins_the_other_is_told_and_nothing_is_lost(services, tmp_path):
    etcd, _ = services
    base = tmp_path / "base.yaml"
    base.write_text(POLICY.format(headroom=0.1))
    first = tessera("slo", "put", str(base), etcd=etcd)
    assert first.returncode == 0, first.stderr
    assert re.search(r"accepted by autoscaler as-1 at revision \d+", first.stdout), first.stdout
    read = revision_shown("slo", "cas-model", etcd)

    # Two operators edit the revision they both read, and put at the same moment.
    edits = {}
    for headroom in (0.3, 0.5):
        edits[headroom] = tmp_path / f"h{headroom}.yaml"
        edits[headroom].write_text(POLICY.format(headroom=headroom))
    racers = {
        h: start("slo", "put", str(p), "--if-revision", str(read), "--wait", "0", etcd=etcd) for h, p in edits.items()
    }
    done = {h: (p.wait(60), *p.communicate()) for h, p in racers.items()}
    winners = [h for h, (code, _, _) in done.items() if code == 0]
    assert len(winners) == 1, done
    winner, loser = winners[0], next(h for h in done if h not in winners)
    won_at = int(re.search(r"stored SLO policy cas-model at revision (\d+)", done[winner][1]).group(1))
    code, out, err = done[loser]
    assert code == 3 and "conflict" in err and f"since revision {read}" in err and f"now revision {won_at}" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # The stored document is the winner's, whole.
    assert stored_body("slo", "cas-model", etcd) == edits[winner].read_text()
    assert revision_shown("slo", "cas-model", etcd) == won_at

    # `show > file`, edit, `put file`: the '# revision:' line makes it safe without a flag...
    shown = tmp_path / "shown.yaml"
    shown.write_text(
        tessera("slo", "show", "cas-model", etcd=etcd).stdout.replace(f"headroom: {winner}", "headroom: 0.2")
    )
    assert tessera("slo", "put", str(shown), "--wait", "0", etcd=etcd).returncode == 0
    assert "headroom: 0.2" in stored_body("slo", "cas-model", etcd)
    assert not stored_body("slo", "cas-model", etcd).startswith("# revision")
    # ...and the same stale copy put again (someone else's edit since) is refused, not applied.
    shown.write_text(shown.read_text().replace("headroom: 0.2", "headroom: 0.9"))
    stale = tessera("slo", "put", str(shown), "--wait", "0", etcd=etcd)
    assert stale.returncode == 3 and "conflict" in stale.stderr
    assert "headroom: 0.2" in stored_body("slo", "cas-model", etcd)
    # A delete pinned to an old revision is refused the same way.
    stale_delete = tessera("slo", "delete", "cas-model", "--if-revision", str(read), etcd=etcd)
    assert stale_delete.returncode == 3 and "conflict" in stale_delete.stderr
    assert "headroom: 0.2" in stored_body("slo", "cas-model", etcd)


def test_slo_put_reports_the_autoscalers_refusal(services, tmp_path):
    etcd, _ = services
    # Parses (the command checks that), but the autoscaler's capacity model knows no such architecture.
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(POLICY.format(headroom=0.1).replace("model: smollm2-135m", "model: no-such-arch"))
    out = tessera("slo", "put", str(unknown), etcd=etcd)
    assert out.returncode == 4, out.stdout + out.stderr
    assert re.search(
        r"refused by autoscaler as-1 at revision \d+: unknown model architecture 'no-such-arch'", out.stderr
    )


def _plugin(directory: Path) -> dict[str, str]:
    """The environment of an operator whose machine has a scorer plugin the schedulers do not have."""
    directory.mkdir()
    (directory / "acme_scorers.py").write_text("def fewest(req, workers, ctx):\n    return [1.0 for w in workers]\n")
    info = directory / "acme_scorers-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-scorers\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tessera.placement.scorers]\nacme_fewest = acme_scorers:fewest\n")
    return {"PYTHONPATH": os.pathsep.join([str(directory), os.environ.get("PYTHONPATH", "")])}


def test_profile_put_reports_acceptance_and_refusal_and_a_restart_keeps_the_customisation(services, tmp_path):
    etcd, scheduler = services
    custom = tmp_path / "least_loaded.yaml"
    custom.write_text(LEAST_LOADED)
    out = tessera("profile", "put", str(custom), etcd=etcd)
    assert out.returncode == 0, out.stderr
    stored_at = int(re.search(r"accepted by scheduler sched-1 at revision (\d+)", out.stdout).group(1))

    # The operator's machine has a scorer plugin, so the command accepts the profile; the scheduler has not.
    plugin = tmp_path / "least_loaded_plugin.yaml"
    plugin.write_text(LEAST_LOADED.replace("queue_depth", "acme_fewest"))
    refused = tessera("profile", "put", str(plugin), etcd=etcd, env=_plugin(tmp_path / "site"))
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert re.search(r"refused by scheduler sched-1 at revision \d+: .*unknown scorer 'acme_fewest'", refused.stderr)
    # Put the working version back (its revision is the refused one's now).
    back = tessera("profile", "put", str(custom), etcd=etcd)
    assert back.returncode == 0 and "accepted by scheduler sched-1" in back.stdout, back.stdout + back.stderr
    stored_at = revision_shown("profile", "least_loaded", etcd)

    # A restart seeds the built-ins create-only: the customised least_loaded survives, and is what it loads.
    scheduler.stop()
    scheduler.start()
    wait_for(lambda: '"sched-1"' in tessera("status", "--json", etcd=etcd).stdout, 60, what="the scheduler back")
    assert stored_body("profile", "least_loaded", etcd) == LEAST_LOADED
    assert revision_shown("profile", "least_loaded", etcd) == stored_at
    again = tessera("profile", "put", str(custom), "--wait", "20", etcd=etcd)
    assert again.returncode == 0, again.stderr
    assert f"unchanged at revision {stored_at}" in again.stdout
    assert f"accepted by scheduler sched-1 at revision {stored_at}" in again.stdout, again.stdout
