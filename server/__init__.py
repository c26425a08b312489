"""Pronto inference server."""
