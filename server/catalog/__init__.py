"""The catalog as requests read it: each shop's items held in memory, and the item
aggregates (trending, bestsellers) they rank by, kept fresh by a version the store holds."""

from server.catalog.memory import Catalog, ShopCatalog

__all__ = ["Catalog", "ShopCatalog"]
