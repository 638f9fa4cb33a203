"""Tidegate: progressive delivery for Kubernetes."""

__version__ = "0.1.0"
