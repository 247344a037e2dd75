"""QA powers on fragment URLs (render as another visitor, `_context=1`, `_debug=1`) need the shop's QA key.

The key is the shop config's `[qa] key`, or else one derived from the server's signing keys
(HMAC-SHA256 of the shop id), so every worker knows it without storing it and
`vitrine shops qa-key SHOP` can print it. A shop with `[qa] open = true` (the demo) grants
QA powers to anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import base64

from server.shops import ShopConfig

QA_HEADER = "X-Vitrine-QA-Key"
QA_PARAM = "_qa_key"
_SALT = b"vitrine.qa-key:"


def derived_qa_key(secret: str, shop_id: str) -> str:
    digest = hmac.new(secret.encode(), _SALT + shop_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def qa_key(signing_keys: list[str], shop: ShopConfig) -> str:
    """The key to hand to QA: the configured one, else the one derived from the newest signing key."""
    return shop.qa.key or derived_qa_key(signing_keys[-1], shop.id)


def qa_allowed(signing_keys: list[str], shop: ShopConfig, given: str | None) -> bool:
    """May the caller who sent `given` (header or `_qa_key`) use QA powers on this shop?"""
    if shop.qa.open:
        return True
    if not given:
        return False
    accepted = [shop.qa.key] if shop.qa.key else [derived_qa_key(k, shop.id) for k in signing_keys]
    return any(hmac.compare_digest(given.encode(), k.encode()) for k in accepted)
