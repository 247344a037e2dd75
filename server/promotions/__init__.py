"""Coupons: pools of codes with their rules, codes issued to visitors, redemption by the
shop's checkout through the server-to-server API, and the log of every attempt
(docs/promotions.md)."""
