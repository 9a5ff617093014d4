"""The router: OpenAI-compatible HTTP and gRPC front door."""
