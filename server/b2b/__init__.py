"""B2B: customer groups, their price lists with quantity tiers and the items they may not
buy (held in memory per worker, like the catalog), and reordering a customer's usual items."""

from server.b2b.prices import GroupPrice, PriceLists, ShopPriceList, group_prices_for, items_barred_for

__all__ = ["GroupPrice", "PriceLists", "ShopPriceList", "group_prices_for", "items_barred_for"]
