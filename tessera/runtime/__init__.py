"""The runtime every service stands on: etcd, gRPC, telemetry, process plumbing, model files.

The lowest layer: it imports nothing of Tessera's but the generated stubs (``tessera.v1``).
"""
