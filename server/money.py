"""Amounts of money as shoppers read them: in templates (`money` filter) and campaign copy."""

from __future__ import annotations

CURRENCY_SYMBOLS = {"GBP": "£", "USD": "$", "EUR": "€", "JPY": "¥", "INR": "₹"}


def money(amount: float | None, currency: str = "") -> str:
    """`{{ item.price | money(item.currency) }}`: "£2.55", or "2.55 CHF" without a symbol."""
    if amount is None:
        return ""
    symbol = CURRENCY_SYMBOLS.get(currency.upper())
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {currency}".strip()
