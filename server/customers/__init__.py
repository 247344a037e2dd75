"""Known customers: the shop's secret key, imported customers and orders, identified visitors."""
