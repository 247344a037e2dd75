"""Measurement: experiments, hold-out and their statistics."""
