"""The shop's secret key: what the shop's backend signs customer ids with (`identify`).

The key is derived, never stored: HMAC-SHA256 of the shop id and a per-shop version number
(table shop_keys) under the server's secret key, so every worker knows it and `vitrine shops
key SHOP` can print it. Rotating it bumps the version: the old key stops working at once
(within `VERSION_TTL_S` on the other workers). The server's own secret keys are a list for
rotation (VITRINE_SECRET_KEYS): a signature made with a key derived from any of them is
accepted, and the key shown is derived from the newest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from typing import Callable

from server.store import Store

_SALT = b"vitrine.shop-key:"
KEY_PREFIX = "vsk_"
VERSION_TTL_S = 1.0  # how long a worker uses a shop's key version before reading it again
SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")


def derive_key(secret: str, shop: str, version: int) -> str:
    digest = hmac.new(secret.encode(), _SALT + f"{shop}:{version}".encode(), hashlib.sha256).digest()
    return KEY_PREFIX + base64.urlsafe_b64encode(digest[:24]).decode()


def sign(key: str, customer_id: str) -> str:
    """The signature the shop's backend makes: hex HMAC-SHA256 of the customer id under the key."""
    return hmac.new(key.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


class ShopKeys:
    """Each shop's secret key as this process knows it, and the check of a signature."""

    def __init__(self, store: Store, signing_keys: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.signing_keys = list(signing_keys)
        self._clock = clock
        self._lock = threading.Lock()
        self._versions: dict[str, tuple[float, int]] = {}

    def version(self, shop: str) -> int:
        now = self._clock()
        with self._lock:
            held = self._versions.get(shop)
        if held is not None and now - held[0] < VERSION_TTL_S:
            return held[1]
        version = self.store.shop_key_version(shop)
        with self._lock:
            self._versions[shop] = (now, version)
        return version

    def key(self, shop: str) -> str:
        """The shop's key now (from the newest server secret): what `vitrine shops key` prints."""
        return derive_key(self.signing_keys[-1], shop, self.version(shop))

    def rotate(self, shop: str) -> str:
        """A new key for the shop; the old one stops working."""
        version = self.store.rotate_shop_key(shop)
        with self._lock:
            self._versions[shop] = (self._clock(), version)
        return derive_key(self.signing_keys[-1], shop, version)

    def verify(self, shop: str, customer_id: str, signature: str) -> bool:
        """Whether `signature` is this customer id signed with the shop's key (constant time)."""
        version = self.version(shop)
        given = signature.lower().encode()
        return any(
            hmac.compare_digest(given, sign(derive_key(secret, shop, version), customer_id).encode())
            for secret in self.signing_keys
        )
