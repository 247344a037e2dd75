"""The visitor: the per-visitor state every request reads (identity, context and audiences join it here)."""
