"""The deployment files: compose (with docker-compose 1.29, the strictest checker), Kubernetes manifests, and
the distribution itself (a clean `pip install .`, sdist and wheel)."""
