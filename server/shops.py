"""Per-shop config files (`<shops_dir>/<shop>.toml`): name, allowed origins, campaigns.

A config is re-read when its file changes, so editing campaigns needs no restart; a file
that fails to parse keeps the last good version serving and the error is logged.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.campaigns import Campaign

log = logging.getLogger("vitrine.shops")
SHOP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class NavConfig(BaseModel):
    """`[nav]`: how far the shop's menu may be reordered for a visitor, and its links."""

    model_config = ConfigDict(extra="forbid")

    pinned: list[str] = Field(
        default_factory=list, description="Menu entries (slugs or names) that keep the place the shop gave them."
    )
    min_events: int = Field(
        3, ge=0, description="Events on the menu's categories a visitor needs before their menu is reordered."
    )
    history_events: int = Field(
        10, ge=1, description="From this many events on, the order is the visitor's affinity alone; "
        "with fewer, the categories of their model top picks are blended in.",
    )
    url: str = Field(
        "/category/{slug}", description="Link of a category in the menu fragment; {slug} and {name} are filled in."
    )


class QAConfig(BaseModel):
    """`[qa]`: who may use QA powers on fragment URLs (`visitor=`, `country=`, `device=`,
    `source=` overrides, `_context=1`, `_debug=1`)."""

    model_config = ConfigDict(extra="forbid")

    open: bool = Field(
        False, description="Anyone may use QA powers without the key (the demo shop; never a live shop)."
    )
    key: str = Field(
        "", min_length=0, max_length=128,
        description="The shop's QA key. Empty means one derived from the server's secret key "
        "(`vitrine shops qa-key SHOP` prints it).",
    )


class ShopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = ""
    name: str = ""
    origins: list[str] = Field(default_factory=list, description="Origins allowed to call the API.")
    currency: str = "USD"
    campaigns: list[Campaign] = Field(default_factory=list)
    nav: NavConfig = Field(default_factory=NavConfig)
    qa: QAConfig = Field(default_factory=QAConfig)

    def campaign(self, campaign_id: str) -> Campaign | None:
        return next((c for c in self.campaigns if c.id == campaign_id), None)


class ShopConfigError(ValueError):
    pass


def parse_shop_config(shop: str, path: Path) -> ShopConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ShopConfigError(f"{path}: {exc}") from None
    try:
        config = ShopConfig(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ShopConfigError(f"{path}: {problems}") from None
    ids = [c.id for c in config.campaigns]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ShopConfigError(f"{path}: campaigns.id: campaign ids must be unique; repeated: {', '.join(repeated)}")
    return config.model_copy(update={"id": shop, "name": config.name or shop})


@dataclass
class _Cached:
    mtime: float
    config: ShopConfig


class ShopRegistry:
    def __init__(self, shops_dir: Path) -> None:
        self.shops_dir = shops_dir
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def path(self, shop: str) -> Path:
        return self.shops_dir / f"{shop}.toml"

    def get(self, shop: str) -> ShopConfig | None:
        """The shop's config, or None for an unknown shop."""
        if not SHOP_ID.match(shop or ""):
            return None
        path = self.path(shop)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        cached = self._cache.get(shop)
        if cached and cached.mtime == mtime:
            return cached.config
        with self._lock:
            try:
                config = parse_shop_config(shop, path)
            except (ShopConfigError, OSError) as exc:
                if cached is None:
                    raise ShopConfigError(str(exc)) from None
                log.error("keeping the last good config of shop %s: %s", shop, exc)
                # Remember the broken file's mtime so it is not re-read on every request.
                self._cache[shop] = _Cached(mtime, cached.config)
                return cached.config
            self._cache[shop] = _Cached(mtime, config)
            return config

    def ids(self) -> list[str]:
        if not self.shops_dir.is_dir():
            return []
        return sorted(p.stem for p in self.shops_dir.glob("*.toml") if SHOP_ID.match(p.stem))
