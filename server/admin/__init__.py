"""The shop dashboard at /admin/: sign-in, and each shop's numbers read from the rollups."""
