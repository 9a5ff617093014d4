"""Integration tests: real etcd, services as processes, vLLM and sim workers, the official clients."""
