"""Audience webhooks (`[[audiences.webhooks]]` in a shop's config): the known customers who
joined or left an audience, POSTed as signed JSON to the shop's URL by `vitrine worker`.

Each run compares the audience now (the customers an export would list, server/customers/
export.py: with marketing consent, never a GPC browser's, never one deleted at their request)
with the members the webhook last sent (audience_members), and queues one delivery per join
and per leave (webhook_deliveries) in the same transaction. A customer who loses their
marketing consent, or whose browser sends GPC, leaves: the leave names them by id only.

Deliveries go in order per webhook: the body is signed with the webhook's secret
(`X-Vitrine-Signature: sha256=<hex HMAC-SHA256 of the body>`), a 2xx answer is delivered,
anything else (or no answer within `TIMEOUT_S`) is tried again after `BACKOFF_S` (30 s, then
2 min, 10 min, 1 h, 6 h), and a delivery is `failed` after `MAX_ATTEMPTS`. Until one is
delivered or failed, the webhook's later ones wait behind it. Done deliveries are kept
`KEEP_DAYS` for `vitrine audiences deliveries`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from server.models import utcnow
from server.store.sql import imported_visitor_id

if TYPE_CHECKING:
    from server.audiences.config import AudienceWebhook
    from server.shops import ShopConfig
    from server.worker import Job

log = logging.getLogger("vitrine.webhooks")

SIGNATURE_HEADER = "X-Vitrine-Signature"
DELIVERY_HEADER = "X-Vitrine-Delivery"
TIMEOUT_S = 5.0
BACKOFF_S = (30, 120, 600, 3600, 6 * 3600)
MAX_ATTEMPTS = len(BACKOFF_S) + 1
KEEP_DAYS = 30


def hook_id(hook: "AudienceWebhook") -> str:
    """A webhook's name in the store: its audience and URL (a new URL starts afresh)."""
    return hashlib.sha256(f"{hook.audience}\n{hook.url}".encode()).hexdigest()[:32]


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def snapshot(services: Any, shop: "ShopConfig", hook: "AudienceWebhook", now: datetime) -> tuple[int, int]:
    """Queue the joins and leaves of the webhook's audience since its last run; (joined, left)."""
    from server.customers.export import audience_customers

    store = services.store
    name = hook_id(hook)
    rows = audience_customers(store, services.audiences, shop, hook.audience, now,
                              services.settings.visit_timeout_minutes * 60)
    now_in = {imported_visitor_id(r["customer_id"]): r for r in rows}
    before = store.hook_members(shop.id, name)
    joined = {v: r["customer_id"] for v, r in now_in.items() if v not in before}
    left = sorted(v for v in before if v not in now_in)
    deliveries = []
    for visitor_id, customer_id in joined.items():
        row = now_in[visitor_id]
        customer = {"id": customer_id, "email": row["email"], "email_sha256": row["email_sha256"]}
        deliveries.append(_delivery(shop.id, hook, visitor_id, customer_id, "join", customer, row["reason"], now))
    for visitor_id in left:
        deliveries.append(_delivery(shop.id, hook, visitor_id, before[visitor_id], "leave", {"id": before[visitor_id]},
                                    f"no longer in {hook.audience}", now))
    if deliveries:
        store.record_hook_changes(shop.id, name, joined, left, deliveries, now)
    return len(joined), len(left)


def _delivery(shop: str, hook: "AudienceWebhook", visitor_id: str, customer_id: str, change: str,
              customer: dict[str, str], reason: str, now: datetime) -> dict[str, Any]:
    payload = {
        "delivery": secrets.token_hex(8), "shop": shop, "audience": hook.audience, "change": change,
        "customer": customer, "reason": reason, "at": now.isoformat(timespec="seconds") + "Z",
    }
    return {"audience": hook.audience, "url": hook.url, "visitor_id": visitor_id, "customer_id": customer_id,
            "change": change, "payload": json.dumps(payload, ensure_ascii=False)}


def deliver(services: Any, now: datetime) -> tuple[int, int]:
    """Send the deliveries due, in order per webhook; (delivered, tried again later or failed)."""
    store = services.store
    secrets_by_hook: dict[tuple[str, str], str | None] = {}
    blocked: set[tuple[str, str]] = set()
    delivered = retried = 0
    for row in store.due_deliveries(now):
        key = (row["shop"], row["hook"])
        if key in blocked:
            continue
        if row["next_attempt_at"] is not None and row["next_attempt_at"] > now:
            blocked.add(key)  # a retry not due yet: the webhook's later deliveries wait behind it
            continue
        if key not in secrets_by_hook:
            secrets_by_hook[key] = _secret(services, row["shop"], row["hook"])
        secret = secrets_by_hook[key]
        attempts = row["attempts"] + 1
        if secret is None:
            store.delivery_tried(row["id"], "failed", attempts, None, "the webhook is no longer in the shop's config", None)
            continue
        error = _post(row["url"], row["payload"].encode(), secret, str(row["id"]))
        if not error:
            store.delivery_tried(row["id"], "delivered", attempts, None, "", now)
            delivered += 1
            continue
        retried += 1
        if attempts >= MAX_ATTEMPTS:
            store.delivery_tried(row["id"], "failed", attempts, None, error, None)
            continue
        store.delivery_tried(row["id"], "pending", attempts, now + timedelta(seconds=BACKOFF_S[attempts - 1]), error, None)
        blocked.add(key)
    return delivered, retried


def _secret(services: Any, shop_id: str, name: str) -> str | None:
    """The secret of the shop's webhook with this name, as its config says now."""
    try:
        shop = services.shops.get(shop_id)
    except Exception:  # a broken config: its webhooks wait for it to be fixed
        return None
    for hook in shop.audiences.webhooks if shop is not None else ():
        if hook_id(hook) == name:
            return hook.secret
    return None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that did not take the delivery (urllib would follow it with a
    GET and no body): it is tried again like any other."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(url: str, body: bytes, secret: str, delivery: str) -> str:
    """POST the body; "" when the receiver answered 2xx, else what went wrong."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "Vitrine-Webhooks",
        SIGNATURE_HEADER: signature(secret, body), DELIVERY_HEADER: delivery,
    })
    try:
        with _OPENER.open(request, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"no answer: {getattr(exc, 'reason', exc)}"
    return "" if 200 <= status < 300 else f"HTTP {status}"


def run(services: Any, now: datetime | None = None) -> str:
    """One run of the job: every shop's webhooks' joins and leaves, then the deliveries due."""
    from server.shops import ShopConfigError
    from server.store.audience_sql import NotExportable

    now = now or utcnow()
    joined = left = 0
    for shop_id in services.shops.ids():
        try:
            shop = services.shops.get(shop_id)
        except ShopConfigError:
            continue
        for hook in shop.audiences.webhooks if shop is not None else ():
            try:
                j, l = snapshot(services, shop, hook, now)
            except NotExportable:  # refused by the config's check: never here
                continue
            joined, left = joined + j, left + l
    delivered, retried = deliver(services, now)
    purged = services.store.purge_deliveries(now - timedelta(days=KEEP_DAYS))
    return (f"{joined} joins and {left} leaves queued, {delivered} delivered, {retried} to try again or failed"
            + (f", {purged} old deliveries forgotten" if purged else ""))


def jobs(settings: Any) -> list["Job"]:
    from server.worker import Job

    return [Job("audience-webhooks", settings.audience_webhook_interval_s, run)]
