"""Recommendations: the LightFM hybrid model's training, artifacts, evaluation and serving."""
