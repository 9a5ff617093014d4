"""`tessera tenant put|delete` and `tessera up --slo-policy` against real etcd: compare-and-swap on the
revision, as `tessera slo|profile put` (test_document_writes.py), so no edit is silently lost."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.integration.test_document_writes import POLICY, revision_shown, stored_body, tessera


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    from tessera.runtime.etcd.server import LocalEtcd
    from tessera.runtime.net import free_port

    tmp = tmp_path_factory.mktemp("tenant-up-writes")
    server = LocalEtcd(client_port=free_port(), data_dir=str(tmp / "etcd"), log_path=str(tmp / "etcd.log")).start()
    yield server.endpoint
    server.stop(wipe=True)


def tenant(etcd: str, *args: str) -> dict:
    """The record `tenant show` prints below its `# revision: N` line."""
    shown = tessera("tenant", "show", *args, etcd=etcd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout.split("\n", 1)[1])


def test_tenant_put_and_delete_refuse_a_stale_revision(etcd):
    first = tessera("tenant", "put", "acme", "--rpm", "10", etcd=etcd)
    assert first.returncode == 0, first.stderr
    read = revision_shown("tenant", "acme", etcd)
    assert f"at revision {read}" in first.stdout

    # Someone else changes acme after we read it; our edit pinned to what we read is refused, not applied.
    assert tessera("tenant", "put", "acme", "--rpm", "20", etcd=etcd).returncode == 0
    now = revision_shown("tenant", "acme", etcd)
    stale = tessera("tenant", "put", "acme", "--tpm", "500", "--if-revision", str(read), etcd=etcd)
    assert stale.returncode == 3, stale.stdout + stale.stderr
    assert f"since revision {read}" in stale.stderr and f"now revision {now}" in stale.stderr
    assert len(stale.stderr.strip().splitlines()) == 1 and "Traceback" not in stale.stderr
    assert (tenant(etcd, "acme")["rpm"], tenant(etcd, "acme")["tpm"]) == (20, 0)

    # 0 means "only if it does not exist yet"; the current revision goes through.
    exists = tessera("tenant", "put", "acme", "--tpm", "500", "--if-revision", "0", etcd=etcd)
    assert exists.returncode == 3 and "already exists" in exists.stderr
    fresh = tessera("tenant", "put", "acme", "--tpm", "500", "--if-revision", str(now), etcd=etcd)
    assert fresh.returncode == 0, fresh.stderr
    assert (tenant(etcd, "acme")["rpm"], tenant(etcd, "acme")["tpm"]) == (20, 500)

    stale_delete = tessera("tenant", "delete", "acme", "--if-revision", str(now), etcd=etcd)
    assert stale_delete.returncode == 3 and "conflict" in stale_delete.stderr
    assert tenant(etcd, "acme")["tpm"] == 500
    assert tessera("tenant", "delete", "acme", etcd=etcd).returncode == 0
    assert tessera("tenant", "show", "acme", etcd=etcd).returncode == 1


def test_concurrent_tenant_patches_keep_every_field(etcd):
    """Without --if-revision a put is a patch: racing patches of different fields all land."""
    assert tessera("tenant", "put", "race", etcd=etcd).returncode == 0
    patches = [["--rpm", "7"], ["--tpm", "70"], ["--max-priority", "3"], ["--allow-priority"], ["--models", "m1"]]
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "tenant", "put", "race", *p, "--etcd", etcd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in patches
    ]
    for r in racers:
        out, err = r.communicate(timeout=60)
        assert r.returncode == 0, out + err
    record = tenant(etcd, "race")
    assert (record["rpm"], record["tpm"], record["max_priority"], record["allow_priority"], record["models"]) == (
        7,
        70,
        3,
        True,
        ["m1"],
    )


def _up(etcd: str, policy, tmp_path) -> subprocess.CompletedProcess:
    from tessera.runtime.net import free_port

    return subprocess.run(
        [sys.executable, "-m", "tessera.cli", "up", "--etcd", etcd, "--engine", "sim", "--slo-policy", str(policy)]
        + ["--port", str(free_port()), "--log-dir", str(tmp_path / "up")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_does_not_overwrite_an_slo_policy_edited_in_etcd(etcd, tmp_path):
    from tessera.cli.etcd_documents import store
    from tessera.runtime.etcd import keys

    original = tmp_path / "policy.yaml"
    original.write_text(POLICY.format(headroom=0.1))
    # What `up` does on its first start with this file: create it; again with the same file: nothing.
    assert "stored SLO policy cas-model" in store(
        etcd, keys.SLO_POLICIES, "cas-model", original.read_bytes(), "SLO policy", "slo", str(original)
    )
    first = revision_shown("slo", "cas-model", etcd)
    assert f"unchanged at revision {first}" in store(
        etcd, keys.SLO_POLICIES, "cas-model", original.read_bytes(), "SLO policy", "slo", str(original)
    )

    # An operator tunes the running policy...
    edited = tmp_path / "edited.yaml"
    edited.write_text(POLICY.format(headroom=0.5))
    assert tessera("slo", "put", str(edited), "--wait", "0", etcd=etcd).returncode == 0
    tuned = revision_shown("slo", "cas-model", etcd)

    # ...and `up` restarted with the original file refuses to undo it, before starting anything.
    again = _up(etcd, original, tmp_path)
    assert again.returncode == 3, again.stdout + again.stderr
    assert re.search(rf"conflict: SLO policy cas-model in etcd \(revision {tuned}\) differs", again.stderr)
    assert f"tessera slo put {original} --if-revision {tuned}" in again.stderr
    assert "Traceback" not in again.stderr
    assert "headroom: 0.5" in stored_body("slo", "cas-model", etcd)

    # A `show` copy pinned to an old revision is refused the same way; pinned to the current one it replaces it.
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(f"# revision: {first}\n" + POLICY.format(headroom=0.2))
    stale = _up(etcd, pinned, tmp_path)
    assert stale.returncode == 3 and f"since revision {first}" in stale.stderr, stale.stderr
    assert "headroom: 0.5" in stored_body("slo", "cas-model", etcd)
    pinned.write_text(f"# revision: {tuned}\n" + POLICY.format(headroom=0.2))
    replaced = store(etcd, keys.SLO_POLICIES, "cas-model", pinned.read_bytes(), "SLO policy", "slo", str(pinned))
    assert "stored SLO policy cas-model" in replaced
    assert stored_body("slo", "cas-model", etcd) == POLICY.format(headroom=0.2)  # without the revision line
