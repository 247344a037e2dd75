"""E-mail sign-ups from a popup (POST /v1/leads): what a lead may hold, the interests a
sign-up form offers, and the per-visitor and per-address limit on how fast they come.

The reward (the campaign's `code`) is in the answer to a valid sign-up only, never in the
popup's HTML before it. docs/api.md#post-v1leads and docs/privacy.md#leads say what is kept.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict, deque
from datetime import date
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.consent.rules import ConsentIn

if TYPE_CHECKING:
    from server.campaigns import Campaign
    from server.catalog.memory import ShopCatalog

# An address as shops' e-mail tools take it: a local part without spaces, a domain of
# dot-separated labels with a top-level one (no IP literals, no quoted local parts).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(rf"^[^\s@<>()\[\],;:\"\\]{{1,64}}@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}$")
BIRTHDAY = re.compile(r"^(?:(\d{4})-)?(\d{2})-(\d{2})$")
MAX_INTERESTS = 20
INTERESTS_OFFERED = 8  # catalog categories a form with `interests = true` offers


class LeadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shop: str = Field(min_length=1, max_length=64)
    token: str | None = Field(default=None, max_length=512)
    campaign: str = Field(min_length=1, max_length=64)
    email: str = Field(min_length=3, max_length=254)
    opt_in: bool
    birthday: str | None = Field(default=None, max_length=10, description="YYYY-MM-DD, or MM-DD without the year")
    interests: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=MAX_INTERESTS)
    consent: ConsentIn | None = None
    gpc: bool | None = None

    @field_validator("email")
    @classmethod
    def _address(cls, email: str) -> str:
        email = email.strip()
        if not EMAIL.match(email):
            raise ValueError("not an e-mail address (name@example.com)")
        local, domain = email.rsplit("@", 1)
        return f"{local}@{domain.lower()}"

    @field_validator("birthday")
    @classmethod
    def _birthday(cls, text: str | None) -> str | None:
        if not text:
            return None
        found = BIRTHDAY.match(text)
        if not found:
            raise ValueError("write the birthday as YYYY-MM-DD, or MM-DD without the year")
        year, month, day = found.groups()
        try:
            born = date(int(year or 2000), int(month), int(day))  # 2000: 29 February is a birthday
        except ValueError:
            raise ValueError(f"{text!r} is not a date") from None
        if year and not (1900 <= born.year and born <= date.today()):
            raise ValueError(f"{text!r} is not a birthday (a year from 1900 to today)")
        return text if year else f"--{month}-{day}"


def interests_offered(campaign: "Campaign", catalog: "ShopCatalog | None") -> list[str]:
    """The interests a campaign's sign-up form offers: its own list, or with `interests = true`
    the catalog's largest top-level categories."""
    form = campaign.signup
    if form is None or form.interests is False:
        return []
    if form.interests is not True:
        return list(form.interests)
    if catalog is None:
        return []
    sizes: dict[str, int] = {}
    for category, count in catalog.categories:
        top = category.split(">")[0].strip()
        if top:
            sizes[top] = sizes.get(top, 0) + count
    return sorted(sizes, key=lambda c: (-sizes[c], c))[:INTERESTS_OFFERED]


class LeadLimiter:
    """At most `limit` sign-ups per `window_s` seconds from one visitor and from one address
    (each shop apart). Held by each server process in memory; the address only as a hash."""

    def __init__(self, limit: int = 5, window_s: float = 600, max_keys: int = 10_000) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._lock = threading.Lock()
        self._seen: OrderedDict[bytes, deque[float]] = OrderedDict()

    def allow(self, shop: str, *whos: str | None) -> bool:
        """Count one sign-up of these (visitor id, client address): False when one is over the limit."""
        now = time.monotonic()
        keys = [hashlib.sha256(f"{shop}\0{who}".encode()).digest()[:16] for who in whos if who]
        with self._lock:
            times = [self._times(key, now) for key in keys]
            if any(len(t) >= self.limit for t in times):
                return False
            for t in times:
                t.append(now)
            return True

    def _times(self, key: bytes, now: float) -> deque[float]:
        times = self._seen.pop(key, None) or deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        self._seen[key] = times
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return times
