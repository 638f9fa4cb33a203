"""The local development environment: control plane, Prometheus and data plane."""
