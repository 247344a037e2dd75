"""Per-shop config files (`<shops_dir>/<shop>.toml`): name, allowed origins, campaigns.

A config is re-read when its file changes, so editing campaigns needs no restart; a file
that fails to parse keeps the last good version serving and the error is logged, once per
version of the file. Every problem names the file, the line and the field.
"""

from __future__ import annotations

import bisect
import codecs
import logging
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from server.audiences import AudienceBook, AudiencesConfig, compile_audiences
from server.campaigns import Campaign
from server.consent.regions import REGIONS
from server.consent.rules import ConsentPolicy, GpcRule, Rule
from server.countries import to_iso
from server.measure.experiments import Experiment, experiment_problems
from server.occasions import warm as warm_calendars
from server.schedules import valid_zone
from server.slots import SlotRules, slot_problems
from server.urls import RULE, is_web_url

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

    @field_validator("url")
    @classmethod
    def _web_link(cls, url: str) -> str:
        if not is_web_url(url.replace("{slug}", "x").replace("{name}", "x")):
            raise ValueError(f"{url!r} is not a web link: use {RULE} ({{slug}} and {{name}} are filled in)")
        return url


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


class AttributionConfig(BaseModel):
    """How orders are credited to campaigns and panels (server/measure/attribution.py)."""

    model_config = ConfigDict(extra="forbid")

    click_days: int = Field(7, ge=0, le=90, description="A click credits the orders of this many days after it")


class PopupsConfig(BaseModel):
    """`[popups]`: the caps over all of a shop's popups (each campaign has its own too)."""

    model_config = ConfigDict(extra="forbid")

    per_session: int = Field(
        3, ge=1, le=100, description="At most this many popups open in one browser session (and never more than one per page view).",
    )


class ShopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = ""
    name: str = ""
    origins: list[str] = Field(default_factory=list, description="Origins allowed to call the API.")
    site_url: str = Field(
        "", description='The shop\'s site: the catalog\'s and campaigns\' paths ("/product/1") are made absolute on it, '
        'so fragments embedded on another origin keep their links and images; "self": this server\'s own URL '
        "(a shop whose pages Vitrine serves, the demo's); empty: paths stay paths.",
    )
    currency: str = "USD"
    timezone: str = Field(
        "UTC", description="The shop's IANA time zone: campaign schedules read in it where the visitor's is unknown.",
    )
    campaigns: list[Campaign] = Field(default_factory=list)
    slots: list[SlotRules] = Field(default_factory=list, description="What each audience sees in a slot (server/slots.py)")
    experiments: list[Experiment] = Field(default_factory=list, description="A/B/n tests on slots and campaigns "
                                          "(server/measure/experiments.py, docs/measurement.md)")
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    holdout: float = Field(0.0, ge=0, le=0.5, description="The share of visitors (0 to 0.5) who see no "
                           "personalization anywhere, to measure its uplift against")
    nav: NavConfig = Field(default_factory=NavConfig)
    qa: QAConfig = Field(default_factory=QAConfig)
    popups: PopupsConfig = Field(default_factory=PopupsConfig)
    audiences: AudiencesConfig = Field(default_factory=AudiencesConfig)
    # Consent (docs/privacy.md). consent_regions comes first: consent's check reads it.
    consent_regions: list[str] = Field(
        default_factory=list, description='With consent = "required_in": "EU", "EEA" or country codes ("GB", "CH").'
    )
    consent: Rule = Field(
        "not_required", validate_default=True,
        description="required: no profile until the visitor consents; required_in: only in consent_regions; "
        "not_required: an unknown answer counts as yes (an explicit no is always followed).",
    )
    gpc: GpcRule = Field(
        "no_sharing", description="no_sharing: a GPC visitor is flagged and left out of every export to a "
        "third party; refuse: GPC counts as no consent at all.",
    )
    sensitive_categories: list[str] = Field(
        default_factory=list, description="Categories (and their subcategories) whose views never feed what "
        "is shown outside them.",
    )
    why_link: bool = Field(
        False, description='Every widget shows a "Why this?" link with the reasons in plain words and, for a '
        "visitor with personalization on, a button that turns it off (docs/privacy.md).",
    )

    reorder_url: str = Field(
        "", description='The shop\'s "add to cart" link the reorder widget\'s buttons follow, with {item_id} and '
        '{quantity} (each URL-encoded): "https://www.myshop.example/cart/add?sku={item_id}&qty={quantity}", or a path '
        "(docs/b2b.md); empty: the buttons link to the item's page.",
    )

    @field_validator("reorder_url")
    @classmethod
    def _reorder(cls, pattern: str) -> str:
        from server.b2b.reorder import check_reorder_url

        return check_reorder_url(pattern)

    @field_validator("site_url")
    @classmethod
    def _site(cls, url: str) -> str:
        if url and url != "self" and not (url.lower().startswith(("http://", "https://")) and is_web_url(url)):
            raise ValueError(f'{url!r} is not the base URL of a site: write "https://www.myshop.example", or "self"')
        return url.rstrip("/") if url != "self" else url

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        return valid_zone(name)

    def model_post_init(self, context: Any) -> None:
        for campaign in self.campaigns:
            campaign.in_shop_zone(self.timezone)
        if any(c.calendar is not None for c in self.campaigns):
            warm_calendars()  # the holiday tables load here, not on a visitor's request

    @field_validator("consent_regions")
    @classmethod
    def _known_regions(cls, names: list[str]) -> list[str]:
        for name in names:
            if name.upper() not in REGIONS and not (len(name) == 2 and to_iso(name) == name.upper()):
                raise ValueError(f"{name!r} is neither {' nor '.join(repr(r) for r in REGIONS)} nor a two-letter country code")
        return [name.upper() for name in names]

    @field_validator("consent")
    @classmethod
    def _regions_with_required_in(cls, rule: str, info: ValidationInfo) -> str:
        regions = info.data.get("consent_regions")
        if regions is None:  # consent_regions itself is wrong, and says so
            return rule
        if rule == "required_in" and not regions:
            raise ValueError('consent = "required_in" needs consent_regions, e.g. ["EU", "EEA", "GB"]')
        if rule != "required_in" and regions:
            raise ValueError(f'consent_regions is set but consent is "{rule}": write consent = "required_in" to use it')
        return rule

    _book: AudienceBook | None = PrivateAttr(None)

    @property
    def audience_book(self) -> AudienceBook:
        """The shop's audiences, compiled (once) from `[audiences]` (server/audiences/)."""
        if self._book is None:
            self._book = compile_audiences(self.audiences, self.sensitive_categories)[0]
        return self._book

    @property
    def consent_policy(self) -> ConsentPolicy:
        return ConsentPolicy(self.consent, tuple(self.consent_regions), self.gpc)

    def campaign(self, campaign_id: str) -> Campaign | None:
        return next((c for c in self.campaigns if c.id == campaign_id), None)

    def slot_experiment(self, slot_id: str) -> Experiment | None:
        """The experiment running on this slot, if any."""
        if not self.experiments:
            return None
        return next((e for e in self.experiments if e.slot == slot_id), None)

    def campaign_experiment(self, campaign_id: str) -> Experiment | None:
        """The experiment running on this campaign, if any."""
        if not self.experiments:
            return None
        return next((e for e in self.experiments if e.campaign == campaign_id), None)

    def slot_rules(self, slot_id: str) -> SlotRules | None:
        """The `[[slots]]` content of this slot, if the shop maps it."""
        if not self.slots:
            return None
        return next((rules for rules in self.slots if rules.id == slot_id), None)


class ShopConfigError(ValueError):
    """A shop config that cannot be used; `problems` holds one `FILE:LINE: field: message` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_shop_config(shop: str, path: Path) -> ShopConfig:
    """The shop's config from its file; ShopConfigError lists every problem with its line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ShopConfigError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from None
    text = _decode(path, raw)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"at line (\d+)", str(exc))
        line = where.group(1) if where else text.count("\n") + 1
        raise ShopConfigError([f"{path}:{line}: not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ShopConfigError([f"{path}:1: not valid TOML: arrays or tables nested too deeply"]) from None
    try:
        lines = field_lines(text)
    except (ValueError, IndexError, tomllib.TOMLDecodeError):
        lines = {}  # without lines, every problem is still reported (at line 1)
    problems: list[tuple[int, str]] = []

    def problem(loc: tuple, message: str) -> None:
        line = locate(lines, loc)
        problems.append((line, f"{path}:{line}: {field_name(data, loc)}: {message}"))

    config = None
    try:
        config = ShopConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            error = (err.get("ctx") or {}).get("error")
            problem(tuple(err["loc"]), str(error) if err["type"] == "value_error" and error else err["msg"])
    for loc, message in _repeated_ids(data, lines):
        problem(loc, message)
    book = None
    audiences = config.audiences if config is not None else _audiences_anyway(data)
    if audiences is not None:  # the rules' problems too, even when something else is wrong
        sensitive = config.sensitive_categories if config is not None else []
        book, audience_problems = compile_audiences(audiences, sensitive)
        for loc, message in [*audience_problems, *(_unknown_audiences(config, book) if config else [])]:
            problem(loc, message)
        if config is not None:
            for loc, message in slot_problems(config, book.ids()):
                problem(loc, message)
    if config is not None:
        for loc, message in experiment_problems(config):
            problem(loc, message)
    if problems or config is None:
        raise ShopConfigError([message for _, message in sorted(problems, key=lambda p: p[0])])
    config = config.model_copy(update={"id": shop, "name": config.name or shop})
    config._book = book
    return config


def _audiences_anyway(data: dict) -> AudiencesConfig | None:
    """`[audiences]` of a file that failed to validate: as written, or its rules alone."""
    raw = data.get("audiences") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        return None
    for attempt in (raw, {"custom": raw.get("custom", [])}):
        try:
            return AudiencesConfig.model_validate(attempt)
        except ValidationError:
            continue
    return None


def _unknown_audiences(config: ShopConfig, book: AudienceBook) -> list[tuple[tuple, str]]:
    """Campaigns that target an audience the shop does not have."""
    known = book.ids()
    found = []
    for n, campaign in enumerate(config.campaigns):
        for key in ("audiences", "not_audiences"):
            for m, name in enumerate(getattr(campaign.audience, key)):
                if name not in known:
                    found.append((("campaigns", n, "audience", key, m),
                                  f"unknown audience {name!r}; the audiences are {', '.join(known)}"))
    return found


def _decode(path: Path, raw: bytes) -> str:
    body = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        column = exc.start - (body.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ShopConfigError([
            f"{path}:{line}: not valid UTF-8 (byte 0x{body[exc.start]:02x}) at line {line}, column {column}; "
            "save the file as UTF-8"
        ]) from None


def _repeated_ids(data: dict, lines: dict[tuple, int]) -> list[tuple[tuple, str]]:
    campaigns = data.get("campaigns")
    if not isinstance(campaigns, list):
        return []
    first: dict[str, int] = {}
    repeated = []
    for index, campaign in enumerate(campaigns):
        campaign_id = campaign.get("id") if isinstance(campaign, dict) else None
        if not isinstance(campaign_id, str):
            continue
        if campaign_id in first:
            line = locate(lines, ("campaigns", first[campaign_id], "id"))
            repeated.append((("campaigns", index, "id"), f"campaign ids must be unique; {campaign_id!r} is used on line {line} too"))
        else:
            first[campaign_id] = index
    return repeated


def field_name(data: Any, loc: tuple) -> str:
    """`campaigns[2] (id "welcome").title` for the loc ("campaigns", 2, "title")."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
            data = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                name += f' (id "{data["id"]}")'
        else:
            name += f".{part}" if name else str(part)
            data = data.get(part) if isinstance(data, dict) else None
    return name or "(the file)"


# -- where a field is in the TOML text --------------------------------------------------
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def locate(lines: dict[tuple, int], loc: tuple) -> int:
    """The line of the field at `loc`, or of the nearest enclosing one that is written down."""
    for end in range(len(loc), 0, -1):
        if tuple(loc[:end]) in lines:
            return lines[tuple(loc[:end])]
    return 1


def field_lines(text: str) -> dict[tuple, int]:
    """Where each table, array element and key is written: {("campaigns", 2, "title"): 57, ...}.

    Paths are the ones pydantic reports: `[[campaigns]]` elements are numbered from 0, and
    `[campaigns.audience]` belongs to the latest element. Only a text tomllib accepted is scanned.
    """
    newlines = [i for i, c in enumerate(text) if c == "\n"]

    def line_of(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    lines: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}  # each array of tables: its latest index
    table: tuple = ()
    pos = 0
    while pos < len(text):
        pos = _skip_blank(text, pos)
        if pos >= len(text):
            break
        line = line_of(pos)
        if text[pos] == "[":
            array = text.startswith("[[", pos)
            keys, pos = _read_key(text, pos + (2 if array else 1))
            table = _resolve(keys[:-1] if array else keys, counts)
            if array:
                table += (keys[-1],)
                counts[table] = counts.get(table, -1) + 1
                lines.setdefault(table, line)
                table += (counts[table],)
            lines.setdefault(table, line)
            pos = text.find("\n", pos)
            pos = len(text) if pos < 0 else pos
            continue
        keys, pos = _read_key(text, pos)
        for end in range(1, len(keys) + 1):
            lines.setdefault(table + tuple(keys[:end]), line)
        pos = _scan_value(text, text.index("=", pos) + 1, table + tuple(keys), lines, line_of)
    return lines


def _scan_value(text: str, pos: int, path: tuple, lines: dict[tuple, int], line_of: Any) -> int:
    """The position after the value that starts at `pos`; the lines of an array's elements
    (`path + (n,)`) and of an inline table's keys are recorded on the way, so that a problem
    deep in a rule (`all = [{...}, {...}]` over several lines) names its own line."""
    while text[pos] in " \t":
        pos += 1
    c = text[pos]
    if c in "\"'":
        return _string_end(text, pos)
    if c == "[":
        pos, n = pos + 1, 0
        while True:
            pos = _skip_blank(text, pos)
            if text[pos] == "]":
                return pos + 1
            lines.setdefault(path + (n,), line_of(pos))
            pos = _skip_blank(text, _scan_value(text, pos, path + (n,), lines, line_of))
            if text[pos] == ",":
                pos, n = pos + 1, n + 1
    if c == "{":
        pos += 1
        while True:
            while text[pos] in " \t,":
                pos += 1
            if text[pos] == "}":
                return pos + 1
            line = line_of(pos)
            keys, pos = _read_key(text, pos)
            for end in range(1, len(keys) + 1):
                lines.setdefault(path + tuple(keys[:end]), line)
            pos = _scan_value(text, text.index("=", pos) + 1, path + tuple(keys), lines, line_of)
    while pos < len(text) and text[pos] not in ",]}\n#":  # a number, date, boolean
        pos += 1
    return pos


def _resolve(keys: list[str], counts: dict[tuple, int]) -> tuple:
    path: tuple = ()
    for key in keys:
        path += (key,)
        if path in counts:
            path += (counts[path],)
    return path


def _skip_blank(text: str, pos: int) -> int:
    while pos < len(text):
        if text[pos] in " \t\r\n":
            pos += 1
        elif text[pos] == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        else:
            break
    return pos


def _read_key(text: str, pos: int) -> tuple[list[str], int]:
    """A dotted key (bare or quoted parts) from `pos`; returns its parts and the position after it."""
    keys: list[str] = []
    while True:
        while text[pos] in " \t":
            pos += 1
        if text[pos] in "\"'":
            end = _string_end(text, pos)
            keys.append(tomllib.loads(f"k = {text[pos:end]}")["k"])
            pos = end
        else:
            match = _BARE_KEY.match(text, pos)
            keys.append(match.group() if match else "")
            pos = match.end() if match else pos + 1
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        return keys, pos


def _string_end(text: str, pos: int) -> int:
    """The position after the string (basic, literal, or multi-line) that starts at `pos`."""
    quote = text[pos]
    delimiter = quote * 3 if text.startswith(quote * 3, pos) else quote
    pos += len(delimiter)
    while pos < len(text):
        if quote == '"' and text[pos] == "\\":
            pos += 2
        elif text.startswith(delimiter, pos):
            pos += len(delimiter)
            while len(delimiter) == 3 and pos < len(text) and text[pos] == quote:
                pos += 1  # up to two quotes may close a multi-line string: """a""""
            return pos
        else:
            pos += 1
    return pos


@dataclass
class _Cached:
    version: tuple[int, int]  # the file's mtime (ns) and size
    config: ShopConfig | None  # the last good config
    problems: list[str] | None = None  # this version's problems, when it is broken


class ShopRegistry:
    """Shop configs, each file checked for changes at most every `check_interval_s` (not on
    every request: a `stat` per request was a tenth of a page call)."""

    def __init__(self, shops_dir: Path, check_interval_s: float = 1.0) -> None:
        self.shops_dir = shops_dir
        self.check_interval_s = check_interval_s
        self._cache: dict[str, _Cached] = {}
        self._checked: dict[str, tuple[float, bool]] = {}  # shop -> (when checked, file exists)
        self._lock = threading.Lock()

    def path(self, shop: str) -> Path:
        return self.shops_dir / f"{shop}.toml"

    def get(self, shop: str) -> ShopConfig | None:
        """The shop's config, or None for an unknown shop.

        A broken version of the file is parsed and logged once; the last good config keeps
        serving, and a shop that never had one raises ShopConfigError.
        """
        if not SHOP_ID.match(shop or ""):
            return None
        now = time.monotonic()
        checked = self._checked.get(shop)
        cached = self._cache.get(shop)
        if checked is not None and now - checked[0] < self.check_interval_s:
            if not checked[1]:
                return None
            if cached is not None:
                return self._served(cached, shop)
        path = self.path(shop)
        try:
            stat = path.stat()
        except OSError:
            self._checked[shop] = (now, False)
            return None
        if len(self._checked) > 10_000:  # requests naming made-up shops: forget them all
            self._checked.clear()
        self._checked[shop] = (now, True)
        version = (stat.st_mtime_ns, stat.st_size)
        if cached is None or cached.version != version:
            with self._lock:
                cached = self._cache.get(shop)
                if cached is None or cached.version != version:
                    cached = self._load(shop, path, version, cached)
        return self._served(cached, shop)

    def _served(self, cached: "_Cached", shop: str) -> ShopConfig:
        if cached.config is None:
            raise ShopConfigError(cached.problems or [f"{self.path(shop)}: not loaded"])
        return cached.config

    def _load(self, shop: str, path: Path, version: tuple[int, int], previous: _Cached | None) -> _Cached:
        last_good = previous.config if previous else None
        try:
            cached = _Cached(version, parse_shop_config(shop, path))
        except ShopConfigError as exc:
            if last_good is None:
                log.error("shop %s is not served, its config is broken: %s", shop, exc)
            else:
                log.error("keeping the last good config of shop %s: %s", shop, exc)
            cached = _Cached(version, last_good, exc.problems)
        self._cache[shop] = cached
        return cached

    def ids(self) -> list[str]:
        if not self.shops_dir.is_dir():
            return []
        return sorted(p.stem for p in self.shops_dir.glob("*.toml") if SHOP_ID.match(p.stem))
