"""Escriba: self-hosted speech-to-text for Kubernetes."""

__version__ = "0.1.0"
