"""Which tenant holds its fair share of a model's requests at the router (the reserved-slot mark)."""

from __future__ import annotations

from services.router.fair_share import TenantShares


def test_a_tenant_alone_is_never_over_its_share():
    s = TenantShares()
    for _ in range(48):
        s.started("m", "noisy", 0.0)
    assert not s.over_share("m", "noisy", 0.0)


def test_the_flooding_tenant_is_over_its_share_and_the_quiet_one_is_not():
    s = TenantShares(active_s=10.0)
    for _ in range(48):
        s.started("m", "noisy", 0.0)
    s.started("m", "quiet", 1.0)
    assert s.over_share("m", "noisy", 1.0) and not s.over_share("m", "quiet", 1.0)
    s.finished("m", "quiet", 1.2)
    # between two requests of the quiet tenant the reserve stays kept from the noisy one...
    assert s.over_share("m", "noisy", 5.0)
    # ...until the quiet tenant has been idle for active_s
    assert not s.over_share("m", "noisy", 11.3)
    assert not s.over_share("m", "noisy", 11.3)  # idle tenants are forgotten, not counted later


def test_equal_shares_are_both_at_their_share_and_models_and_open_requests_are_apart():
    s = TenantShares()
    s.started("m", "a", 0.0)
    s.started("m", "b", 0.0)
    assert s.over_share("m", "a", 0.0) and s.over_share("m", "b", 0.0)
    assert not s.over_share("other", "a", 0.0)  # nothing in flight for that model
    s.started("m", "", 0.0)  # an open router: no tenant, never over a share, counts for nobody
    assert not s.over_share("m", "", 0.0)
    s.finished("m", "a", 0.5)
    s.finished("m", "a", 0.6)  # a second finish of the same request changes nothing
    assert s.over_share("m", "b", 0.6) and not s.over_share("m", "a", 0.6)
