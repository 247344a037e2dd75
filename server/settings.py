"""Every setting Vitrine has: its name, default and help, read once into one object.

Values come from, in order of precedence: keyword overrides (the CLI's flags), `VITRINE_*`
environment variables, an optional TOML file (`VITRINE_CONFIG` or `--config`), then the
default below. `docs/settings.md` lists them all; a test checks it stays in step.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "VITRINE_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def _setting(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Settings:
    data_dir: Path = _setting(
        Path("var"),
        "Directory for all state: the SQLite database, the secret key, shop configs, "
        "models. Relative paths are taken from the current directory.",
    )
    database_url: str = _setting(
        "",
        "SQLAlchemy database URL. Empty means an SQLite file `vitrine.db` in the data "
        "directory; `postgresql+psycopg://user@host/db` for PostgreSQL.",
    )
    store_busy_timeout_ms: int = _setting(
        2000,
        "Milliseconds a store call may wait, at least 1: for another writer (SQLite's busy "
        "timeout, PostgreSQL's lock_timeout) and for a free database connection. Then the "
        "request gets 503 with Retry-After instead of queueing.",
    )
    shops_dir: Path | None = _setting(
        None, "Directory of per-shop config files (`<shop>.toml`). Empty means `<data_dir>/shops`."
    )
    secret_keys: tuple[str, ...] = _setting(
        (),
        "Keys that sign visitor tokens, comma separated, newest last. Tokens are signed "
        "with the newest and accepted with any, so keys rotate without logging visitors "
        "out. Empty means a random key kept in `<data_dir>/secret_key`.",
        secret=True,
    )
    geoip_database: Path | None = _setting(
        None,
        "Path of a GeoIP2/GeoLite2 City database (.mmdb). Empty means the bundled "
        "GeoLite2 City database (2019).",
    )
    trusted_proxies: tuple[str, ...] = _setting(
        ("127.0.0.1", "::1"),
        "Addresses or networks (comma separated) of proxies whose X-Forwarded-For header "
        "is believed. Requests from anyone else are located by their own address.",
    )
    host: str = _setting("127.0.0.1", "Address `vitrine serve` and `vitrine demo` listen on.")
    port: int = _setting(8000, "Port `vitrine serve` and `vitrine demo` listen on.")
    workers: int = _setting(1, "Number of web worker processes for `vitrine serve`.")
    request_threads: int = _setting(
        0,
        "Threads per worker process that run requests' blocking work (store calls, rendering). "
        "0 means one: that work is Python, and two threads of one process take turns on its one "
        "interpreter lock, which made a new visitor's page call at 32 connections cost 1.8 times "
        "the CPU; use `workers` for more cores.",
        minimum=0,
    )
    max_in_flight: int = _setting(
        0,
        "Page calls and fragment requests one worker process handles at once; "
        "one more gets 503 with Retry-After at once instead of waiting in a queue. "
        "0 means 64 (about a tenth of a second of page calls).",
        minimum=0,
    )
    max_event_batches_in_flight: int = _setting(
        256,
        "Event batches one worker process holds at once while they wait for their group commit "
        "(they share transactions and hold no request thread); one more gets 503 with Retry-After.",
        minimum=1,
    )
    page_view_flush_ms: int = _setting(
        50,
        "Page views are written in batches, this many milliseconds after the first of a batch "
        "came in (a page call does not wait for its page view's commit); a crash loses at most "
        "this much of one worker's page views, never an acknowledged event.",
        minimum=1,
    )
    public_url: str = _setting(
        "",
        "Public base URL of this server as shops reach it (e.g. https://vitrine.example.com). "
        "Empty means taken from each request.",
    )
    cookie_name: str = _setting(
        "vitrine", "Prefix of the visitor cookie; the shop id is appended (`vitrine_demo`)."
    )
    token_max_age_days: int = _setting(
        400, "Days a visitor token stays valid after it was last renewed (browsers cap cookies at 400)."
    )
    visit_timeout_minutes: int = _setting(
        30, "Minutes of inactivity after which the next page view starts a new visit."
    )
    max_body_bytes: int = _setting(
        65536, "Largest request body accepted by the API, in bytes; larger ones get 413."
    )
    max_events_per_batch: int = _setting(100, "Most events accepted in one `POST /v1/events` batch.")
    max_slots_per_page: int = _setting(30, "Most slots accepted in one `POST /v1/page` call.")
    max_items_per_page: int = _setting(
        150,
        "Most items the slots of one `POST /v1/page` call may ask for together (recommendation "
        "counts, search and category page sizes, menu entries); more gets 422 before any work.",
    )
    model_components: int = _setting(
        0, "Dimensions of the recommendation model's embeddings. 0 lets `vitrine train` choose on a validation split."
    )
    model_epochs: int = _setting(
        0, "Training epochs. 0 lets `vitrine train` stop when validation recall stops improving."
    )
    model_learning_rate: float = _setting(
        0.0, "Learning rate of the recommendation model. 0 lets `vitrine train` choose."
    )
    model_loss: str = _setting("warp", "LightFM loss: warp (default), bpr, warp-kos or logistic.")
    model_feature_groups: tuple[str, ...] = _setting(
        (),
        "Item feature groups the model uses, comma separated, from: category, brand, price, "
        "tags, terms. Empty lets `vitrine train` choose.",
    )
    model_threads: int = _setting(0, "Threads for training. 0 means one per core.")
    train_time_budget_s: int = _setting(
        120, "Seconds `vitrine train` may spend choosing hyper-parameters before the final fit."
    )
    model_keep_versions: int = _setting(
        5, "Model versions kept per shop; older ones are pruned (a pinned version is always kept)."
    )
    trending_half_life_hours: float = _setting(
        72.0, "Half-life of an event's weight in the trending scores, in hours."
    )
    recommendation_count: int = _setting(4, "Items in a recommendation panel unless the slot says otherwise.")
    affinity_half_life_hours: float = _setting(
        168.0, "Half-life of a visitor's interest in a category (navigation order, search), in hours."
    )
    search_personal_weight: float = _setting(
        0.5,
        "Weight of the visitor's personal score (model and category affinity) against the text "
        "score in search results, 0 to 1: 0 is the plain text ranking.",
    )
    popular_search_min_visitors: int = _setting(
        10,
        "Distinct visitors who must have searched a term before it is shown to everyone as a "
        "popular search (terms that look like URLs, e-mail addresses or long digit runs never are).",
    )
    worker_lease_s: int = _setting(
        60,
        "Seconds the running `vitrine worker` holds its lease in the store between renewals "
        "(it renews every third of it); a second worker waits, and takes over this long after "
        "the first stopped.",
        minimum=2,
    )
    popular_searches_interval_s: int = _setting(
        60, "Seconds between two counts of each shop's popular searches by `vitrine worker`.", minimum=1
    )
    retrain_min_new_interactions: int = _setting(
        1000,
        "Interactions (views, cart adds, purchases, ratings) a shop must have received since its "
        "newest model was trained before `vitrine worker` trains a new one. 0 turns retraining off.",
        minimum=0,
    )
    retrain_interval_s: int = _setting(
        600, "Seconds between two checks by `vitrine worker` of whether a shop's model is due for retraining.",
        minimum=1,
    )
    event_retention_days: int = _setting(
        400,
        "Days page views, list and promotion impressions, clicks and searches are kept; "
        "`vitrine worker` deletes older ones. 0 keeps them forever.",
        minimum=0,
    )
    visitor_retention_days: int = _setting(
        395,
        "Days after their last visit at which `vitrine worker` deletes a visitor with every row "
        "about them (all their events included). 0 keeps them forever.",
        minimum=0,
    )
    purge_interval_s: int = _setting(
        3600,
        "Seconds between two purges by `vitrine worker` of events past `event_retention_days` and "
        "visitors past `visitor_retention_days`.",
        minimum=1,
    )
    audience_webhook_interval_s: int = _setting(
        60, "Seconds between two runs by `vitrine worker` of the audience webhooks: who joined and who "
        "left each webhook's audience, and the deliveries due (new ones and retries).", minimum=1,
    )
    rollup_interval_s: int = _setting(
        300,
        "Seconds between two runs by `vitrine worker` of the rollups: the events counted by hour and day, "
        "orders credited to campaigns and panels, experiments' totals (docs/measurement.md).",
        minimum=1,
    )
    rollup_lag_s: float = _setting(
        60.0,
        "Seconds an event waits before the rollups read it, so that one whose transaction committed late is "
        "never skipped.",
        minimum=0,
    )
    admin_session_hours: float = _setting(
        12.0,
        "Hours a dashboard sign-in (/admin/) lasts; then the user signs in again.",
        minimum=0.1,
    )
    change_check_interval_s: float = _setting(
        1.0,
        "Seconds between a worker's checks for changed shop configs, override templates, catalog "
        "(its version in the store) and model versions: changes reach every worker within this time, "
        "and no request pays for a check.",
    )
    debug: bool = _setting(
        False, "Append the debug comment (templates considered, context, decisions) to every fragment a caller with QA powers fetches, as if it asked for `_debug=1`."
    )

    # -- derived paths ---------------------------------------------------------------
    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_shops_dir(self) -> Path:
        return (self.shops_dir or self.resolved_data_dir / "shops").expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'vitrine.db'}"

    @property
    def resolved_request_threads(self) -> int:
        return self.request_threads or 1

    @property
    def resolved_max_in_flight(self) -> int:
        return self.max_in_flight or 64

    def signing_keys(self) -> list[str]:
        """Keys for visitor tokens, oldest first; creates the data dir's key on first use."""
        if self.secret_keys:
            return list(self.secret_keys)
        key_file = self.resolved_data_dir / "secret_key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            # Write, then hard-link into place: link() fails if another process won the
            # race, so every process ends up reading the same key.
            tmp = key_file.with_suffix(f".{os.getpid()}.tmp")
            # Created 0600: there is no moment at which another user could read the key.
            tmp.unlink(missing_ok=True)  # left by a crashed process with this pid
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            try:
                os.link(tmp, key_file)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return [key_file.read_text().strip()]

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
        if config_file:
            values.update(_read_toml(Path(config_file)))
        for f in dataclasses.fields(cls):
            env_name = ENV_PREFIX + f.name.upper()
            if env_name in environ:
                values[f.name] = environ[env_name]
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**{name: _cast(name, value) for name, value in values.items()})


def setting_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Settings))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    # Allow the settings either at top level or under [vitrine].
    return dict(data.get("vitrine", data))


def _cast(name: str, value: Any) -> Any:
    f = {f.name: f for f in dataclasses.fields(Settings)}[name]
    kind = f.type if isinstance(f.type, str) else str(f.type)
    try:
        if kind.startswith("tuple"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind == "int":
            number = int(value)
            if number < f.metadata.get("minimum", number):
                raise ValueError(value)
            return number
        if kind == "float":
            return float(value)
        if kind.startswith("Path"):
            return Path(value) if str(value) else None if "None" in kind else Path(".")
        return str(value)
    except (TypeError, ValueError):
        at_least = f" (at least {f.metadata['minimum']})" if "minimum" in f.metadata else ""
        raise SettingsError(f"setting {name} ({ENV_PREFIX}{name.upper()}): bad value {value!r}{at_least}") from None
