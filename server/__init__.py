"""Vitrine: a self-hosted personalization server for online shops."""

__version__ = "0.1.0"
