"""Adapters between the pure engine and the outside world: workloads, routers, metrics."""
