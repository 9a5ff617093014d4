"""etcd at the edges: the key layout, a resilient client, leased registration, watches, leader election,
and a local etcd server."""
