"""gRPC plumbing shared by the services: server setup and enum conversions."""
