"""A visitor's data as they may see it (`export_visitor`), and its deletion (`delete_visitor`,
`delete_inactive_visitors`), the same for the HTTP API, the CLI and the retention purge."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from server.consent.rules import parse_answer_key
from server.models import utcnow
from server.store import Store, StoreConflict
from server.visitors.state import VisitorState

# Columns that say whose or which row it is rather than what is held: the shop and visitor
# id are said once at the top of an export, and an event's row number means nothing outside.
KEY_COLUMNS = {"shop", "visitor_id", "id"}
CONFLICT_ATTEMPTS = 3


def export_visitor(store: Store, shop: str, visitor_id: str) -> dict[str, Any] | None:
    """Everything the store holds about this visitor, as JSON-ready data; None when nothing is.

    `profile` is the visitor's row (counters, first and last seen, country, device class,
    source, their latest consent answer), `state` the recent events and closed campaigns kept
    with it, `events` every stored event, `consent_history` each change of their answer. Rows of any other table about visitors (the store's VISITOR_TABLES) come
    under their table's name, so what a new table holds shows here without a change."""
    records = store.visitor_records(shop, visitor_id)
    if not any(records.values()):
        return None
    profiles = records.pop("visitors", [])
    row = profiles[0] if profiles else None
    export: dict[str, Any] = {
        "shop": shop,
        "visitor_id": visitor_id,
        "exported_at": _json(utcnow()),
        "profile": None if row is None else _profile(row),
        "state": None if row is None else _state(VisitorState.from_json(row.get("state"))),
    }
    for table, rows in records.items():
        export[table] = [{k: _json(v) for k, v in r.items() if k not in KEY_COLUMNS} for r in rows]
    return export


def audiences_of(store: Store, shop: str, visitor_id: str, audience_source: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """The shop's audiences the stored visitor is in now, with why: what is inferred about
    them (worked out from their profile on each request, never stored), for their export.
    Read from the stored profile alone (its device class, country and traffic source), so
    the HTTP answer and `vitrine privacy export` say the same."""
    from server.context import PageContext, VisitorContext
    from server.countries import geo_name
    from server.device import Device
    from server.geo import Geo
    from server.traffic import TrafficSource

    profile = store.get_visitor(shop, visitor_id)
    if profile is None:
        return []
    device_class = profile.device_class or "other"
    ctx = VisitorContext(
        shop=shop, visitor_id=visitor_id, is_new_token=False, profile=profile,
        device=Device(device_class, "", "", device_class == "bot"),
        geo=Geo(country=profile.country, country_name=geo_name(profile.country)),
        source=TrafficSource(medium=profile.source, source=profile.source_name, campaign=profile.utm_campaign, utm={}),
        page=PageContext(), audience_source=audience_source,
    )
    return [{"id": r.id, "reason": r.reason} for r in ctx.audiences.results if r.member]


def export_customer(store: Store, shop: str, customer_id: str) -> dict[str, Any] | None:
    """Everything held about one of the shop's customers: their imported details and orders
    (the visitor `u:<id>`, as export_visitor shows a visitor) and, under `devices`, the export
    of each browser identified as them; None when nothing is."""
    from server.store.sql import imported_visitor_id

    export = export_visitor(store, shop, imported_visitor_id(customer_id))
    devices = [d for d in (export_visitor(store, shop, v) for v in store.identified_visitors(shop, customer_id)) if d]
    if export is None and not devices:
        return None
    if export is None:
        export = {"shop": shop, "visitor_id": imported_visitor_id(customer_id), "exported_at": _json(utcnow()),
                  "profile": None, "state": None}
    export["customer_id"] = customer_id
    export["devices"] = devices
    return export


def delete_customer(store: Store, shop: str, customer_id: str) -> dict[str, int]:
    """Delete one of the shop's customers, every browser identified as them, and every row
    about all of them, in one transaction; rows deleted by table. They stay forgotten: their
    ids are kept hashed (forgotten_visitors), and an import does not bring them back."""
    from server.store.sql import imported_visitor_id

    ids = [imported_visitor_id(customer_id), *store.identified_visitors(shop, customer_id)]
    return _retrying(lambda: store.delete_visitors(shop, ids))


def delete_visitor(store: Store, shop: str, visitor_id: str) -> dict[str, int]:
    """Delete every row about this visitor, in one transaction; rows deleted by table."""
    return _retrying(lambda: store.delete_visitors(shop, [visitor_id]))


def delete_inactive_visitors(store: Store, shop: str, before: datetime, chunk: int = 500) -> int:
    """Delete the shop's web visitors last seen before `before` with every row about them,
    `chunk` visitors per transaction (web workers' writes get their turn in between). Returns
    how many visitors went; a second run finds none."""
    deleted = 0
    while True:
        picked = store.inactive_visitors(shop, before, chunk)
        if not picked:
            return deleted
        # One who came back since being picked is kept, and not picked again.
        deleted += _retrying(lambda: store.delete_visitors(shop, picked, inactive_before=before))["visitors"]


def _retrying(delete: Callable[[], dict[str, int]]) -> dict[str, int]:
    """PostgreSQL may pick a deletion of several visitors as a deadlock's victim (a group
    transaction locking two of them in the other order): the same deletion again succeeds."""
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return delete()
        except StoreConflict:
            pass
    return delete()


def _profile(row: dict[str, Any]) -> dict[str, Any]:
    profile = {k: _json(v) for k, v in row.items() if k not in KEY_COLUMNS | {"state"}}
    profile["consent"] = parse_answer_key(row.get("consent"))
    return profile


def _state(state: VisitorState) -> dict[str, Any]:
    return {
        "recent": [
            {"type": e.type, "ts": _json(e.ts), "item_ids": list(e.items), **({"search_term": e.term} if e.term else {})}
            for e in state.events()
        ],
        "closed_campaigns": sorted(state.closed),
    }


def _json(value: Any) -> Any:
    """Times as ISO 8601 in UTC (the store keeps naive UTC); everything else is JSON already."""
    return value.isoformat() + "Z" if isinstance(value, datetime) else value
