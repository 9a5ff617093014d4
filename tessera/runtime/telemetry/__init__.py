"""Logging, Prometheus metrics and OpenTelemetry tracing, set up the same way in every service."""
