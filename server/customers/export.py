"""`vitrine audiences export AUDIENCE`: the shop's known customers in an audience now, for an
e-mail tool, with the reason each is in it.

Who is in: a customer imported with `marketing_consent` true, whose own row (imported orders
and sign-up) or one of whose identified browsers is in the audience now, counted by the
store in one statement (server/store/audience_sql.py). Never a customer one of whose
browsers sent Global Privacy Control on its latest page view, nor one deleted at their
request. A browser is identified, and so exported, only with consent to personalization.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import TYPE_CHECKING

from server.consent.rules import ALLOWED
from server.context import PageContext, VisitorContext
from server.device import Device
from server.geo import Geo
from server.models import VisitorProfile
from server.traffic import TrafficSource

if TYPE_CHECKING:
    from server.audiences import Audiences
    from server.shops import ShopConfig
    from server.store import Store

COLUMNS = ("customer_id", "email", "email_sha256", "reason")


def audience_customers(
    store: "Store", audiences: "Audiences", shop: "ShopConfig", audience: str, now: datetime, visit_timeout_s: int,
) -> list[dict[str, str]]:
    """One dict per customer in the audience: customer_id, email ("" where only its hash was
    imported), email_sha256 and the reason, as `_context=1` words it."""
    book = shop.audience_book
    source = audiences.for_shop(book)
    found = []
    for customer_id, email, digest, profile in store.audience_customers(shop.id, book, audience, now, visit_timeout_s):
        result = source(stored_context(shop.id, profile)).result(audience)
        found.append({"customer_id": customer_id, "email": email, "email_sha256": digest,
                      "reason": result.reason if result is not None else ""})
    return found


def stored_context(shop: str, profile: VisitorProfile) -> VisitorContext:
    """A visitor as their stored row tells (device class, country, latest visit's source):
    what an audience that can be exported reads, outside any request."""
    return VisitorContext(
        shop=shop, visitor_id=profile.visitor_id, is_new_token=False, profile=profile,
        device=Device(device_class=profile.device_class, os="", browser="", is_bot=profile.device_class == "bot"),
        geo=Geo(country=profile.country, country_name=profile.country),
        source=TrafficSource(medium=profile.source, source=profile.source_name, campaign=profile.utm_campaign),
        page=PageContext(), consent=ALLOWED,
    )


def as_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def as_json(rows: list[dict[str, str]]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False)
