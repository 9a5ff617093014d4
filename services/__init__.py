"""Tessera's four services: router, scheduler, autoscaler, worker."""
