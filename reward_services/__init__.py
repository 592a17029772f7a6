"""Reward models as gRPC services: server, batching, health, registry and a resilient client."""
