"""The least-cost fleet as an integer program: instance counts per type covering the demand.

Formulation (one model, one request shape; capacities from capacity.py, per instance):

    minimise    sum_j (cost_j + eps_j) * x_j
    subject to  sum_{j mixed}   cap_j * x_j + y >= D     demand: mixed instances + the P/D pool
                sum_{j prefill} cap_j * x_j - y >= 0     the pool's prompts fit its prefill instances
                sum_{j decode}  cap_j * x_j - y >= 0     ... and its decodes fit its decode instances
                sum_{j of kind k} dev_j * x_j  <= free_k  devices of each accelerator kind
                min <= sum_j x_j <= max                  instance limits
                sum_{j mixed} x_j <= M*z,  sum_{j prefill or decode} x_j <= M*(1-z)
                x_j integer >= 0,  0 <= y <= D,  z in {0, 1}   y: requests/s served disaggregated

Capacities are per request of this shape, so a prefill instance's capacity already measures
prompt work and a decode instance's measures decode work: min(prefill, decode capacity) is
what a P/D pool serves, and `y` lets the solver split the load between the pool and mixed
instances at whatever ratio is cheapest; the prefill:decode ratio falls out of the counts.

A fleet is either mixed instances or a prefill/decode pool, never both (`z`): the router does not
split requests between a mixed instance and a pool in the proportion the program assumes. It
picks each request's decode side among decode and mixed workers by their load, and a decode
worker prefills a prompt itself where a copy would not pay, so the mixed instances of such a
fleet carried more than their capacity. On Mooncake's trace (long, shared-prefix prompts) a
fleet of one A100 decode, one MI300X prefill and one mixed MI300X left the mixed one at 1.6
req/s against a capacity of 1.1-1.5, and 39% of its requests missed TPOT: 84% within the SLOs
where the same loop restricted to a pool met 99.9% at a lower cost.
eps_j is a tie-breaker of a hundredth of a cent per instance (half that for types already
running), so among equal-cost fleets the smaller one, and the current one, wins.

Why an exact MILP, and scipy.optimize.milp: the counts are small integers where rounding a
linear relaxation up is wrong by a whole instance of the most expensive type, and greedy
"best req/s per dollar first" fails under inventory limits and the P/D coupling. The
problem has one integer per (accelerator, tp, role), tens at most, so HiGHS (the
branch-and-cut solver inside SciPy) proves the optimum in milliseconds. SciPy is already a
project dependency and is pure-wheel, unlike OR-Tools or PuLP+CBC, and this is the same
integer program Melange and AIBrix's GPU optimizer solve over GPU types (they add SLO
buckets; we fold the SLO into per-type capacities). The cost of exactness is nil here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tessera.planning.fleet import InstanceType

TIE_BREAK = 1e-4  # $/h per instance: fewer instances win among equal-cost fleets (HiGHS's
# absolute gap is 1e-6, so a smaller one would not be honoured)
COVER_SLACK = 1e-9  # relative: demand met to within this counts as met


@dataclass(frozen=True)
class Candidate:
    """An instance type the solver may buy: its per-instance capacity (req/s) and price ($/h)."""

    itype: InstanceType
    rate_rps: float
    cost_per_hour: float


def _rows(cands: Sequence[Candidate], free: Mapping[str, int]) -> tuple[np.ndarray, list[str]]:
    """Constraint matrix rows over (x..., y): cover, prefill, decode, then one row per kind."""
    n = len(cands)
    rows = np.zeros((3 + len(free), n + 1))
    kinds = sorted(free)
    for j, c in enumerate(cands):
        role_row = {"mixed": 0, "prefill": 1, "decode": 2}[c.itype.role]
        rows[role_row, j] = c.rate_rps
        rows[3 + kinds.index(c.itype.accelerator), j] = c.itype.devices
    rows[0, n], rows[1, n], rows[2, n] = 1.0, -1.0, -1.0
    return rows, kinds


def _upper(c: Candidate, free: Mapping[str, int]) -> int:
    return free.get(c.itype.accelerator, 0) // c.itype.devices


def _one_shape(cands: Sequence[Candidate], free: Mapping[str, int], width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows over (x..., the program's other columns, z) keeping a fleet to mixed instances (z = 1)
    or to a prefill/decode pool (z = 0), and their upper bounds; None where the candidates are of
    one shape only. `width`: the program's columns before z."""
    mixed = [j for j, c in enumerate(cands) if c.itype.role == "mixed"]
    pool = [j for j, c in enumerate(cands) if c.itype.role != "mixed"]
    if not mixed or not pool:
        return None
    big = float(sum(_upper(c, free) for c in cands))
    rows = np.zeros((2, width + 1))
    rows[0, mixed], rows[0, width] = 1.0, -big  # mixed count - M z <= 0
    rows[1, pool], rows[1, width] = 1.0, big  # pool count + M z <= M
    return rows, np.array([0.0, big])


def solve(
    cands: Sequence[Candidate],
    demand_rps: float,
    free: Mapping[str, int],
    min_instances: int = 0,
    max_instances: int | None = None,
    prefer: Mapping[InstanceType, int] | None = None,
    keep: Mapping[InstanceType, int] | None = None,
) -> dict[InstanceType, int] | None:
    """The least-cost counts serving `demand_rps`, or None when no fleet within the limits can.
    `keep`: at least these counts of these types (None when one is not a candidate)."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # scipy is slow to import; only the solver needs it

    cands = [c for c in cands if c.rate_rps > 0 and _upper(c, free) > 0]
    keep = {t: n for t, n in (keep or {}).items() if n}
    if not set(keep) <= {c.itype for c in cands}:
        return None
    if not cands:
        return {} if demand_rps <= 0 and min_instances == 0 else None
    prefer = prefer or {}
    n = len(cands)
    cost = np.array([c.cost_per_hour + TIE_BREAK * (0.5 if prefer.get(c.itype) else 1.0) for c in cands] + [0.0])
    rows, kinds = _rows(cands, free)
    need = demand_rps * (1.0 - COVER_SLACK)
    lower = np.array([need, 0.0, 0.0] + [-np.inf] * len(kinds))
    upper = np.array([np.inf, np.inf, np.inf] + [float(free[k]) for k in kinds])
    total = np.append(np.ones(n), 0.0)
    cap = max_instances if max_instances is not None else np.inf
    constraints = [LinearConstraint(rows, lower, upper), LinearConstraint(total[None, :], min_instances, cap)]
    lo = [min(keep.get(c.itype, 0), _upper(c, free)) for c in cands] + [0.0]
    hi = [_upper(c, free) for c in cands] + [max(demand_rps, 0.0)]
    integrality = np.append(np.ones(n), 0)
    shape = _one_shape(cands, free, n + 1)
    if shape is not None:
        constraints = [_widened(k) for k in constraints] + [LinearConstraint(shape[0], -np.inf, shape[1])]
        cost, integrality, lo, hi = np.append(cost, 0.0), np.append(integrality, 1), lo + [0.0], hi + [1.0]
    res = milp(
        cost,
        integrality=integrality,
        bounds=Bounds(np.array(lo, float), np.array(hi, float)),
        constraints=constraints,
        options={"mip_rel_gap": 0.0, "time_limit": 10.0},
    )
    if res.x is None or res.status not in (0, 1):
        return None
    counts = {c.itype: int(round(v)) for c, v in zip(cands, res.x[:n]) if round(v) > 0}
    return counts if served(cands, counts) >= need * (1 - 1e-7) else None


def served(cands: Sequence[Candidate], counts: Mapping[InstanceType, int]) -> float:
    """Requests/s a fleet serves: mixed capacity + min(prefill, decode capacity)."""
    by_role = {"mixed": 0.0, "prefill": 0.0, "decode": 0.0}
    rates = {c.itype: c.rate_rps for c in cands}
    for itype, n in counts.items():
        by_role[itype.role] += n * rates.get(itype, 0.0)
    return by_role["mixed"] + min(by_role["prefill"], by_role["decode"])


def max_servable(
    cands: Sequence[Candidate], free: Mapping[str, int], max_instances: int | None = None, limit_rps: float = math.inf
) -> float:
    """The most requests/s any fleet within the inventory and instance cap serves (at most limit_rps)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    cands = [c for c in cands if c.rate_rps > 0 and _upper(c, free) > 0]
    if not cands:
        return 0.0
    n = len(cands)
    rows, kinds = _rows(cands, free)
    rows = np.hstack([rows, np.zeros((rows.shape[0], 1))])
    rows[0, n + 1] = -1.0  # cover row: mixed + y - s >= 0
    lower = np.array([0.0, 0.0, 0.0] + [-np.inf] * len(kinds))
    upper = np.array([np.inf, np.inf, np.inf] + [float(free[k]) for k in kinds])
    total = np.append(np.ones(n), [0.0, 0.0])
    cap = max_instances if max_instances is not None else np.inf
    top = sum(_upper(c, free) * c.rate_rps for c in cands)
    s_max = min(limit_rps, top)
    hi = [_upper(c, free) for c in cands] + [top, s_max]
    objective = np.append(np.zeros(n + 1), -1.0)
    integrality = np.append(np.ones(n), [0, 0])
    constraints = [LinearConstraint(rows, lower, upper), LinearConstraint(total[None, :], 0, cap)]
    shape = _one_shape(cands, free, n + 2)
    if shape is not None:
        constraints = [_widened(k) for k in constraints] + [LinearConstraint(shape[0], -np.inf, shape[1])]
        objective, integrality, hi = np.append(objective, 0.0), np.append(integrality, 1), hi + [1.0]
    res = milp(
        objective,
        integrality=integrality,
        bounds=Bounds(np.zeros(len(hi)), np.array(hi, float)),
        constraints=constraints,
        options={"mip_rel_gap": 0.0, "time_limit": 10.0},
    )
    return max(float(-res.fun), 0.0) if res.x is not None else 0.0


def _widened(constraint: Any) -> Any:
    """A LinearConstraint with one more (zero) column, for the shape variable z."""
    from scipy.optimize import LinearConstraint

    a = np.atleast_2d(np.asarray(constraint.A, float))
    return LinearConstraint(np.hstack([a, np.zeros((a.shape[0], 1))]), constraint.lb, constraint.ub)
