"""``tessera status``: the workers etcd knows, with the load their scheduler sees, and the autoscaler's plan."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import grpc
from google.protobuf import json_format

from tessera.runtime.etcd import keys
from tessera.runtime.etcd import tls as etcd_tls
from tessera.runtime.etcd.client import DEFAULT_ENDPOINT, EtcdConnector
from tessera.runtime.etcd.records import ServiceRecord, identity_from_json
from tessera.runtime.rpc import tls
from tessera.runtime.rpc.enums import role_name
from tessera.runtime.rpc.server import channel
from tessera.v1 import autoscaler_pb2, autoscaler_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--etcd",
        default=os.environ.get("TESSERA_ETCD", DEFAULT_ENDPOINT),
        help="etcd endpoints host:port[,host:port] (env TESSERA_ETCD)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    tls.add_arguments(p)  # with TLS: a certificate naming the cli role
    etcd_tls.add_arguments(p)


async def gather_status(etcd: str) -> dict[str, Any]:
    connector = EtcdConnector(etcd)
    client = await connector.connect()
    try:
        workers = {
            kv.key.decode().rsplit("/", 1)[-1]: identity_from_json(kv.value)
            for kv in await client.get_prefix(keys.WORKERS.encode())
        }
        services = [ServiceRecord.from_json(kv.value) for kv in await client.get_prefix(keys.SERVICES.encode())]
    finally:
        await connector.discard(client)

    loads: dict[str, Any] = {}
    for svc in (s for s in services if s.kind == "scheduler"):
        ch = channel(svc.address, "scheduler")
        try:
            resp = await scheduler_pb2_grpc.SchedulerStub(ch).ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=2)
            loads = {w.identity.id: w for w in resp.workers}
            break
        except grpc.aio.AioRpcError:
            continue
        finally:
            await ch.close()

    plan = None
    for svc in (s for s in services if s.kind == "autoscaler"):
        ch = channel(svc.address, "autoscaler")
        try:
            p = await autoscaler_pb2_grpc.AutoscalerStub(ch).GetPlan(autoscaler_pb2.GetPlanRequest(), timeout=2)
            if p.this_is_leader or plan is None:
                plan = p
        except grpc.aio.AioRpcError:
            continue
        finally:
            await ch.close()

    rows = []
    for wid, ident in sorted(workers.items()):
        state = loads.get(wid)
        load = state.load if state else None
        rows.append(
            {
                "id": wid,
                "model": ident.model,
                "role": role_name(ident.role),
                "vendor": ident.vendor or "cpu",
                "accelerator": ident.accelerator,
                "accelerator_count": ident.accelerator_count,
                "data_parallel_ranks": list(ident.data_parallel_ranks),
                "engine": ident.engine,
                "kv_block_size": ident.kv_block_size,
                "kv_capacity_blocks": ident.kv_capacity_blocks,
                "address": ident.address,
                "http_address": ident.http_address,
                "metrics_address": ident.metrics_address,
                "group": ident.group,
                # the KV format it publishes: prefill/decode pairs form only between equal ones
                "kv_compat": (
                    json_format.MessageToDict(ident.kv_compat, preserving_proto_field_name=True)
                    if ident.HasField("kv_compat")
                    else None
                ),
                "healthy": state.healthy if state else None,
                "num_waiting": load.num_waiting if load else None,
                "num_running": load.num_running if load else None,
                "kv_cache_usage": round(load.kv_cache_usage, 4) if load else None,
                "tokens_in_flight": load.tokens_in_flight if load else None,
                # measured / predicted step times the worker learnt of its machine (None: not yet)
                "prefill_time_scale": round(load.prefill_time_scale, 3) if load and load.prefill_time_scale else None,
                "decode_time_scale": round(load.decode_time_scale, 3) if load and load.decode_time_scale else None,
            }
        )
    return {
        "etcd": etcd,
        "services": [
            {
                "kind": s.kind,
                "id": s.id,
                "address": s.address,
                "http_address": s.http_address,
                "metrics_address": s.metrics_address,
            }
            for s in services
        ],
        "workers": rows,
        "plan": json_format.MessageToDict(plan, preserving_proto_field_name=True) if plan else None,
    }


def render(status: dict[str, Any]) -> str:
    lines = [f"etcd {status['etcd']}"]
    for s in status["services"]:
        extra = f" http {s['http_address']}" if s["http_address"] else ""
        lines.append(f"  {s['kind']:<10} {s['id']:<40} grpc {s['address']}{extra}")
    lines.append("")
    header = (
        f"{'WORKER':<34} {'MODEL':<24} {'ROLE':<7} {'ACCEL':<10} {'ENGINE':<6} {'ADDRESS':<21} "
        f"{'WAIT':>4} {'RUN':>4} {'KV%':>6} {'TOKENS':>7}  HEALTHY"
    )
    lines.append(header)
    for w in status["workers"]:

        def fmt(v: Any, spec: str = "") -> str:
            return "-" if v is None else format(v, spec)

        kv = None if w["kv_cache_usage"] is None else 100 * w["kv_cache_usage"]
        lines.append(
            f"{w['id']:<34} {w['model']:<24} {w['role']:<7} {w['accelerator']:<10} {w['engine']:<6} {w['address']:<21} "
            f"{fmt(w['num_waiting']):>4} {fmt(w['num_running']):>4} {fmt(kv, '.1f'):>6} "
            f"{fmt(w['tokens_in_flight']):>7}  {fmt(w['healthy'])}"
        )
    if not status["workers"]:
        lines.append("(no workers registered)")
    plan = status.get("plan")
    if plan:
        lines.append("")
        lines.append(f"autoscaler plan (leader {plan.get('leader_id', '?')}):")
        for g in plan.get("groups", []):
            name = g["name"]
            lines.append(
                f"  {name}: {g.get('replicas', 0)} x {g['model']} wanted, "
                f"{plan.get('ready', {}).get(name, 0)} ready, {plan.get('pending', {}).get(name, 0)} starting"
            )
        for line in plan.get("explanation", []):
            lines.append(f"  {line}")
        for d in plan.get("recent_decisions", [])[-5:]:
            lines.append(f"    {d.get('action')} {d.get('group', '')} {d.get('instance', '')}: {d.get('reason', '')}")
    return "\n".join(lines)


def run_main(args: argparse.Namespace) -> int:
    try:
        tls.configure(args)
        etcd_tls.configure(args)
    except (tls.TLSConfigError, etcd_tls.EtcdTLSError) as exc:
        print(f"tessera status: {exc}", file=sys.stderr)
        return 2
    try:
        status = asyncio.run(asyncio.wait_for(gather_status(args.etcd), 10))
    except Exception as exc:  # noqa: BLE001 - one line for the user
        print(
            f"tessera status: cannot read the cluster from etcd {args.etcd}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        print(json.dumps(status, indent=2) if args.json else render(status))
    except BrokenPipeError:  # `tessera status | head`
        pass
    return 0
