"""The worker: one inference engine instance behind the Worker gRPC API, registered in etcd."""
