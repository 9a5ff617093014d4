"""API keys, tenants' rights and the rate-limit arithmetic: pure code, no etcd, no processes."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from services.router.auth import RequestGate, bearer_token
from services.router.errors import Forbidden, TenantsUnavailable, Unauthenticated
from services.router.rate_limits import reservation_size, retry_after_s, seconds_to_window_end, window_of
from services.router.tenants import ANONYMOUS, DEFAULT, TenantDirectory, principal_of
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.records import TenantRecord, hash_api_key, new_api_key
from tessera.runtime.net import free_port

# --- windows ---------------------------------------------------------------------------------------


def test_windows_are_wall_clock_minutes_every_router_agrees_on():
    assert window_of(1_800_000_000.0) == 30_000_000  # 1_800_000_000 s is exactly on a minute
    assert window_of(1_800_000_059.999) == 30_000_000
    assert window_of(1_800_000_060.0) == 30_000_001
    assert seconds_to_window_end(1_800_000_015.5) == pytest.approx(44.5)
    assert window_of(100.0, window_s=10) == 10


def test_retry_after_is_whole_seconds_to_the_window_end_and_never_zero():
    assert retry_after_s(1_800_000_015.5) == 45  # 44.5 s left: wait 45, not 44 (which would be refused again)
    assert retry_after_s(1_800_000_000.0) == 60
    assert retry_after_s(1_800_000_059.99) == 1


# --- reservations ----------------------------------------------------------------------------------


def test_a_reservation_covers_the_need_plus_a_share_of_what_is_left():
    assert reservation_size(limit=100_000, reserved=0, need=500, fraction=1 / 16) == 6250
    assert reservation_size(limit=100_000, reserved=0, need=9000, fraction=1 / 16) == 9000  # need wins
    # as the window fills, chunks shrink, so few units end up stranded at routers that do not use them
    assert reservation_size(limit=100_000, reserved=96_000, need=10, fraction=1 / 16) == 250


def test_small_limits_reserve_exactly_what_is_needed():
    assert reservation_size(limit=6, reserved=0, need=1) == 1
    assert reservation_size(limit=6, reserved=5, need=1) == 1


def test_a_reservation_never_passes_the_limit():
    assert reservation_size(limit=6, reserved=6, need=1) == 0
    assert reservation_size(limit=1000, reserved=900, need=101) == 0  # does not fit: refused, not partly granted
    assert reservation_size(limit=1000, reserved=900, need=100) == 100
    assert reservation_size(limit=10, reserved=0, need=0) == 0


def test_routers_sharing_a_counter_admit_exactly_the_limit_in_total():
    """Several routers draw requests of random sizes from one window's counter, as the CAS loop does."""
    rng = random.Random(7)
    limit, reserved = 50_000, 0
    held = [0] * 4  # units each router has reserved and not yet used
    admitted = refused = 0
    for _ in range(2000):
        r, need = rng.randrange(4), rng.randint(1, 900)
        if held[r] < need:
            grant = reservation_size(limit, reserved, need - held[r])
            assert reserved + grant <= limit
            if grant == 0:
                refused += 1
                continue
            reserved += grant
            held[r] += grant
        held[r] -= need
        admitted += need
    assert admitted <= limit and refused > 0
    # what the routers hold unused at the end is what a one-minute window strands: a few percent
    assert sum(held) == reserved - admitted and sum(held) < 0.05 * limit


# --- keys and records ------------------------------------------------------------------------------


def test_keys_are_openai_style_and_kept_only_as_sha256():
    key = new_api_key()
    assert key.startswith("sk-") and len(key) >= 40 and key != new_api_key()
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()
    record = TenantRecord(name="acme", key_sha256=[hash_api_key(key)])
    assert key not in record.to_json().decode()
    assert TenantRecord.from_json(record.to_json()) == record


def test_bad_tenant_records_are_refused():
    with pytest.raises(ValueError, match="tenant name"):
        TenantRecord(name="a/b")
    with pytest.raises(ValueError, match="rpm"):
        TenantRecord(name="a", rpm=-1)
    with pytest.raises(ValueError, match="SHA-256"):
        TenantRecord(name="a", key_sha256=["sk-not-a-hash"])
    with pytest.raises(ValueError):
        TenantRecord.from_json(json.dumps([1, 2]).encode())


def test_bearer_token():
    assert bearer_token("Bearer sk-abc") == "sk-abc"
    assert bearer_token("bearer   sk-abc ") == "sk-abc"
    assert bearer_token("Basic dXNlcjpwYXNz") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


# --- the gate, without etcd ------------------------------------------------------------------------


async def test_an_open_router_lets_everyone_in_and_a_keyed_one_only_its_keys():
    assert await RequestGate().authenticate(None) is ANONYMOUS
    gate = RequestGate(api_keys=["sk-one", "sk-two"])
    assert await gate.authenticate("Bearer sk-two") is DEFAULT
    with pytest.raises(Unauthenticated, match="didn't provide an API key"):
        await gate.authenticate(None)
    with pytest.raises(Unauthenticated, match="Incorrect API key") as wrong:
        await gate.authenticate("Bearer sk-three-wrong")
    assert "sk-three-wrong" not in wrong.value.message and wrong.value.status == 401
    # --require-api-key: closed even with no key and no tenant at all (nobody can get in until one exists)
    with pytest.raises(Unauthenticated):
        await RequestGate(require_key=True).authenticate("Bearer anything")


def test_tenant_rights_are_refused_naming_the_field():
    gate = RequestGate()
    p = principal_of(TenantRecord(name="acme", models=["tiny-llama"]))
    gate.authorize(p, "tiny-llama", 0, slo_header=False, profile_header=False)
    cases = [
        (dict(model="other"), "model", "model_not_allowed"),
        (dict(priority=1), "priority", "priority_not_allowed"),
        (dict(slo_header=True), "x-slo-ttft-ms", "header_not_allowed"),
        (dict(profile_header=True), "x-tessera-profile", "header_not_allowed"),
    ]
    for change, param, code in cases:
        call = dict(model="tiny-llama", priority=0, slo_header=False, profile_header=False) | change
        with pytest.raises(Forbidden) as refused:
            gate.authorize(p, **call)
        assert (refused.value.status, refused.value.param, refused.value.code) == (403, param, code)
    # a tenant allowed to set priority may do so up to its ceiling, not past it
    q = principal_of(TenantRecord(name="vip", allow_priority=True, max_priority=5, allow_slo_header=True))
    gate.authorize(q, "any", 5, slo_header=True, profile_header=False)
    with pytest.raises(Forbidden, match="above 5"):
        gate.authorize(q, "any", 6, slo_header=False, profile_header=False)


async def test_before_the_tenants_are_read_the_router_is_not_open():
    """etcd unreachable at start: no tenant list yet, so no request runs as ANONYMOUS by accident."""
    tenants = TenantDirectory(EtcdConnector(f"127.0.0.1:{free_port()}"))  # nothing listens there
    tenants.start()
    try:
        with pytest.raises(TenantsUnavailable):
            await RequestGate(tenants=tenants, sync_wait_s=0.2).authenticate(None)
        keyed = RequestGate(api_keys=["sk-one"], tenants=tenants, sync_wait_s=0.2)
        assert await keyed.authenticate("Bearer sk-one") is DEFAULT  # --api-key keys need no etcd
        with pytest.raises(Unauthenticated):
            await keyed.authenticate(None)
    finally:
        await tenants.close()
