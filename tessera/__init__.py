"""Tessera's shared code, in layers that import only downward (ARCHITECTURE.md; `make lint` checks it).

- ``tessera.runtime`` (with the generated stubs in ``tessera.v1``): etcd, gRPC, telemetry, model files.
- ``tessera.engine_model``: the accelerator catalog, the performance model, the simulated engine's batching.
- ``tessera.placement`` and ``tessera.planning``: the scheduler's and the autoscaler's pure policies.
- ``services``: the router, scheduler, autoscaler and worker (a package of their own, beside this one).
- ``tessera.cli``, ``tessera.sim``, ``tessera.bench``: the apps built on everything below.
"""
