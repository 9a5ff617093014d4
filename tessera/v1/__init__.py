"""Generated protobuf/gRPC stubs of protos/tessera/v1 (make protos). Do not edit."""
