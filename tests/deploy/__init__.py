"""The deployment files: compose (with docker-compose 1.29, the strictest checker) and Kubernetes manifests."""
