"""The tables, as SQLAlchemy Core metadata: one schema for SQLite and PostgreSQL.

Changes here go with a new migration in migrations/versions/.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

_PURCHASE_WITH_ORDER = "type = 'purchase' AND order_id IS NOT NULL"

items = sa.Table(
    "items",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("category", sa.Text, nullable=False, server_default=""),
    sa.Column("brand", sa.Text, nullable=False, server_default=""),
    sa.Column("price", sa.Float, nullable=True),
    sa.Column("currency", sa.String(3), nullable=False, server_default=""),
    sa.Column("url", sa.Text, nullable=False, server_default=""),
    sa.Column("image_url", sa.Text, nullable=False, server_default=""),
    sa.Column("tags", sa.Text, nullable=False, server_default=""),  # "|"-separated
    sa.Column("in_stock", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_items_shop_category", "shop", "category"),
)

visitors = sa.Table(
    "visitors",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("visitor_id", sa.String(64), primary_key=True),
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("last_seen", sa.DateTime, nullable=False),
    sa.Column("visits", sa.Integer, nullable=False, server_default="1"),
    sa.Column("page_views", sa.Integer, nullable=False, server_default="0"),
    sa.Column("orders", sa.Integer, nullable=False, server_default="0"),
    sa.Column("revenue", sa.Float, nullable=False, server_default="0"),
    sa.Column("last_order_at", sa.DateTime, nullable=True),
    # Coarse context only: never an IP address, never a city.
    sa.Column("country", sa.String(64), nullable=False, server_default=""),
    sa.Column("device_class", sa.String(16), nullable=False, server_default=""),
    sa.Column("source", sa.String(16), nullable=False, server_default=""),  # medium of this visit
    # The browser sent Global Privacy Control on the visitor's latest page view: an export
    # of visitors to a third party must leave them out (docs/privacy.md).
    sa.Column("gpc", sa.Boolean, nullable=False, server_default=sa.false()),
    # The latest visit (server/visitors/page_views.py): its page views, the last page view
    # before it, its landing page's path (never a query string), the referrer's host, and
    # the source's name and UTM campaign.
    sa.Column("visit_page_views", sa.Integer, nullable=False, server_default="0"),
    sa.Column("previous_seen", sa.DateTime, nullable=True),
    sa.Column("landing_page", sa.String(512), nullable=False, server_default=""),
    sa.Column("referrer_domain", sa.String(255), nullable=False, server_default=""),
    sa.Column("source_name", sa.String(128), nullable=False, server_default=""),
    sa.Column("utm_campaign", sa.String(128), nullable=False, server_default=""),
    # Copied from the state (state_columns) so that audience sizes are counted without it:
    # when the newest line still in the cart was added (NULL: empty cart), and the first
    # sign-up or login.
    sa.Column("cart_at", sa.DateTime, nullable=True),
    sa.Column("signed_up_at", sa.DateTime, nullable=True),
    # The visitor state (server/visitors/state.py): recent events and closed campaigns, kept
    # in step with the events table so that a request reads this row and not the events.
    sa.Column("state", sa.JSON, nullable=True),
    # The shop's customer this browser identified as (vitrine('identify'), server/customers/),
    # by the customer's imported visitor id ("u:<customer id>", whose row holds their imported
    # orders): those and their details count for this visitor too. NULL: anonymous.
    sa.Column("identified_as", sa.String(64), nullable=True),
    sa.Index("ix_visitors_identified_as", "shop", "identified_as"),
    # The visitor's latest explicit consent answer as the page sent it (server/consent/):
    # "p" personalization, "a" analytics, each followed by 1 (yes), 0 (no) or - (unknown),
    # and "g" when Global Privacy Control was on; NULL: never answered. A change of it
    # adds a row to consent_history.
    sa.Column("consent", sa.String(16), nullable=True),
)

consent_history = sa.Table(
    "consent_history",
    metadata,
    # Each change of a profiled visitor's consent answer (a page call that carried one):
    # when, from where (the shop's own call, Consent Mode, TCF, Shopify, an opt-out link),
    # and the answer. An answer that withdraws consent deletes the visitor, this history
    # with them; an answer without consent to personalization is never stored.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("shop", sa.String(64), nullable=False),
    sa.Column("visitor_id", sa.String(64), nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("personalization", sa.Boolean, nullable=True),
    sa.Column("analytics", sa.Boolean, nullable=True),
    sa.Column("gpc", sa.Boolean, nullable=False),
    sa.Index("ix_consent_history_shop_visitor", "shop", "visitor_id"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("shop", sa.String(64), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("visitor_id", sa.String(64), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Column("item_id", sa.String(128), nullable=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("order_id", sa.String(128), nullable=True),
    sa.Column("campaign", sa.String(128), nullable=True),
    sa.Column("props", sa.JSON, nullable=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("shop", "event_id", name="uq_events_shop_event_id"),
    sa.Index("ix_events_visitor", "shop", "visitor_id", "ts"),
    sa.Index("ix_events_type", "shop", "type", "ts"),
    sa.Index("ix_events_item", "shop", "item_id"),
    sa.Index("ix_events_order", "shop", "order_id"),
    # A reloaded thank-you page sends its order again under a new event_id: one purchase per
    # order of each visitor. Per visitor, so nobody can spoil another visitor's order number.
    sa.Index(
        "uq_events_order", "shop", "visitor_id", "order_id", unique=True,
        sqlite_where=sa.text(_PURCHASE_WITH_ORDER), postgresql_where=sa.text(_PURCHASE_WITH_ORDER),
    ),
)

item_trends = sa.Table(
    "item_trends",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(80), primary_key=True),  # "" = whole shop, "country:GB"
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("log_score", sa.Float, nullable=False),  # see server/trending.py
    sa.Index("ix_item_trends_rank", "shop", "scope", "log_score"),
)

item_sales = sa.Table(
    "item_sales",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("purchases", sa.Integer, nullable=False),  # order lines with this item
    sa.Index("ix_item_sales_rank", "shop", "purchases"),
)

shop_versions = sa.Table(
    "shop_versions",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    # Bumped in the transaction that changes the shop's catalog: every worker polls it (at
    # most once a second) and reloads its in-memory catalog when it moved.
    sa.Column("catalog", sa.Integer, nullable=False, server_default="0"),
)

worker_leases = sa.Table(
    "worker_leases",
    metadata,
    # One row per lease ("worker": the one `vitrine worker` of a deployment), taken and
    # renewed by one conditional upsert (SqlStore.take_lease).
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)

popular_searches = sa.Table(
    "popular_searches",
    metadata,
    # Each shop's popular searches as the worker last counted them (server/search.py), so
    # that an empty search box reads a few rows instead of a month of search events.
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("rank", sa.Integer, primary_key=True),  # 0 = the most searched
    sa.Column("term", sa.Text, nullable=False),
    sa.Column("visitors", sa.Integer, nullable=False),
    sa.Column("computed_at", sa.DateTime, nullable=False),
)

# Searches per shop, UTC day and term (lowercased, spaces squeezed, at most 100 characters),
# and how many of them found nothing: added to by the page-view and event writers
# (server/search_counts.py), never a visitor's id. Purged with the search events.
search_counts = sa.Table(
    "search_counts",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("term", sa.String(100), primary_key=True),
    sa.Column("searches", sa.Integer, nullable=False),
    sa.Column("zero_results", sa.Integer, nullable=False),
)

forgotten_visitors = sa.Table(
    "forgotten_visitors",
    metadata,
    # Visitors deleted at their own request (consent withdrawn, DELETE /v1/me, `vitrine
    # privacy delete`), by a SHA-256 of their id: a page view or event batch still on its
    # way with their old token (a beacon sent as the page unloaded) is dropped instead of
    # making them again, and a page call with that token gets a new id. Kept for as long
    # as a token lives (token_max_age_days), then purged.
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("visitor_hash", sa.String(64), primary_key=True),
    sa.Column("forgotten_at", sa.DateTime, nullable=False),
)

leads = sa.Table(
    "leads",
    metadata,
    # E-mail sign-ups from a popup (POST /v1/leads, server/leads.py). `visitor_id` is the
    # visitor who signed up when they consented to personalization, else NULL: the lead is
    # kept unlinked, and nothing ties it to what the visitor does on the site.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("shop", sa.String(64), nullable=False),
    sa.Column("visitor_id", sa.String(64), nullable=True),
    sa.Column("campaign", sa.String(64), nullable=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("opt_in", sa.Boolean, nullable=False),
    sa.Column("birthday", sa.String(10), nullable=True),  # YYYY-MM-DD or --MM-DD (no year)
    sa.Column("interests", sa.Text, nullable=False, server_default=""),  # "|"-separated categories
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Index("ix_leads_shop_visitor", "shop", "visitor_id"),
    sa.Index("ix_leads_shop_ts", "shop", "ts"),
)

shop_keys = sa.Table(
    "shop_keys",
    metadata,
    # The version of each shop's secret key (server/customers/keys.py): the key itself is
    # derived from the server's secret and never stored; rotating it is a version bump.
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rotated_at", sa.DateTime, nullable=True),
)

customers = sa.Table(
    "customers",
    metadata,
    # An imported customer's own details (`vitrine import customers`), beside their visitor
    # row under the imported id (visitor_id "u:<customer id>", which holds their orders).
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("visitor_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("email", sa.String(320), nullable=False, server_default=""),
    sa.Column("email_sha256", sa.String(64), nullable=False, server_default=""),
    sa.Column("first_name", sa.String(128), nullable=False, server_default=""),
    sa.Column("signed_up_at", sa.DateTime, nullable=True),
    sa.Column("birthday", sa.Date, nullable=True),
    sa.Column("customer_group", sa.String(64), nullable=False, server_default=""),
    sa.Column("marketing_consent", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("imported_at", sa.DateTime, nullable=False),
)

audience_members = sa.Table(
    "audience_members",
    metadata,
    # The known customers each audience webhook last sent as members (server/customers/webhooks.py):
    # the worker compares the audience now with these to find who joined and who left. `hook`
    # names the webhook (a hash of its audience and URL).
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("hook", sa.String(32), primary_key=True),
    sa.Column("visitor_id", sa.String(64), primary_key=True),  # the customer's: "u:<customer id>"
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("joined_at", sa.DateTime, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    # One join or leave of a customer for one webhook: its JSON, and how sending it went
    # (pending, delivered, failed after the last retry).
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("shop", sa.String(64), nullable=False),
    sa.Column("hook", sa.String(32), nullable=False),
    sa.Column("audience", sa.String(64), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("visitor_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("change", sa.String(8), nullable=False),  # join, leave
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("delivered_at", sa.DateTime, nullable=True),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_shop", "shop", "id"),
    sa.Index("ix_webhook_deliveries_visitor", "shop", "visitor_id"),
)

# -- measurement (server/measure/, docs/measurement.md) ---------------------------------
# What the worker's rollup job has read of the events table: every event up to this id.
rollup_marks = sa.Table(
    "rollup_marks",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("last_event_id", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# Counters by hour and by day, per shop and per what produced them: dimension "total" (key
# ""), "campaign" (a campaign or a recommendations panel), "slot", "strategy", "variant"
# ("experiment:variant"), "audience" (the audiences the visitor was in when the job read the
# event), and "credited" (key "": each order credited to anything, once). Reports and the dashboard read these, never the events.
rollups = sa.Table(
    "rollups",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("period", sa.String(4), primary_key=True),  # "hour" or "day"
    sa.Column("start", sa.DateTime, primary_key=True),  # naive UTC
    sa.Column("dimension", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("page_views", sa.Integer, nullable=False, server_default="0"),
    sa.Column("impressions", sa.Integer, nullable=False, server_default="0"),
    sa.Column("clicks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("closes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("orders", sa.Integer, nullable=False, server_default="0"),  # total: all; others: attributed
    sa.Column("revenue", sa.Float, nullable=False, server_default="0"),
    sa.Column("view_orders", sa.Integer, nullable=False, server_default="0"),  # attributed by a view only
    sa.Column("view_revenue", sa.Float, nullable=False, server_default="0"),
    sa.Column("visitors", sa.Integer, nullable=False, server_default="0"),  # total and audience, by day: distinct visitors
    sa.Column("carts", sa.Integer, nullable=False, server_default="0"),  # total: all add to carts; others: after a click
)

# Each visitor counted in an experiment (the hold-out is experiment "holdout"): their variant,
# when first exposed, and what they bought since.
experiment_visitors = sa.Table(
    "experiment_visitors",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("experiment", sa.String(64), primary_key=True),
    sa.Column("visitor_id", sa.String(64), primary_key=True),
    sa.Column("variant", sa.String(64), nullable=False),
    sa.Column("exposed_at", sa.DateTime, nullable=False),
    sa.Column("orders", sa.Integer, nullable=False, server_default="0"),
    sa.Column("revenue", sa.Float, nullable=False, server_default="0"),
    sa.Index("ix_experiment_visitors_visitor", "shop", "visitor_id"),
)

# Per variant, the sums the statistics need (server/measure/stats.py), kept in step with
# experiment_visitors: visitors, converted visitors, orders, revenue and the sum of each
# visitor's revenue squared.
experiment_totals = sa.Table(
    "experiment_totals",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("experiment", sa.String(64), primary_key=True),
    sa.Column("variant", sa.String(64), primary_key=True),
    sa.Column("visitors", sa.Integer, nullable=False, server_default="0"),
    sa.Column("conversions", sa.Integer, nullable=False, server_default="0"),
    sa.Column("orders", sa.Integer, nullable=False, server_default="0"),
    sa.Column("revenue", sa.Float, nullable=False, server_default="0"),
    sa.Column("revenue_sq", sa.Float, nullable=False, server_default="0"),
    sa.Column("first_exposed", sa.DateTime, nullable=True),
    sa.Column("last_exposed", sa.DateTime, nullable=True),
)

# -- the dashboard's users (server/admin/, docs/dashboard.md) ---------------------------
# A person who signs in at /admin/, by email (stored lowercased): their argon2id hash.
admin_users = sa.Table(
    "admin_users",
    metadata,
    sa.Column("email", sa.String(254), primary_key=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

# The shops each dashboard user may see: none but these.
admin_user_shops = sa.Table(
    "admin_user_shops",
    metadata,
    sa.Column("email", sa.String(254), primary_key=True),
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("added_at", sa.DateTime, nullable=False),
    sa.Index("ix_admin_user_shops_shop", "shop"),
)

# Failed sign-ins to the dashboard of the last minutes, one row per failure and key: `e:` or
# `a:` and a keyed hash (the server's secret) of the email typed or of the client address,
# never either in clear. Every server process counts the same ones (server/admin/auth.py);
# rows older than the window are purged as failures come.
admin_sign_in_failures = sa.Table(
    "admin_sign_in_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("failed_at", sa.DateTime, nullable=False),
    sa.Index("ix_admin_sign_in_failures_key", "key", "failed_at"),
    sa.Index("ix_admin_sign_in_failures_failed_at", "failed_at"),
)

# Each audience's size, once a day (the worker's audience_sizes job writes today's row, anew
# every hour): the dashboard's "over time" (docs/dashboard.md).
audience_snapshots = sa.Table(
    "audience_snapshots",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("audience", sa.String(64), primary_key=True),
    sa.Column("visitors", sa.Integer, nullable=False),
    sa.Column("counted_at", sa.DateTime, nullable=False),
)

# -- coupons (server/promotions/, docs/promotions.md) -----------------------------------
# A shop's coupon pool and the rules every code of it follows; `redeemed` counts its
# redemptions (the total budget is checked against it by a conditional update).
coupon_pools = sa.Table(
    "coupon_pools",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("pool", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),  # percent, amount
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False, server_default=""),  # "": any
    sa.Column("min_order", sa.Float, nullable=True),
    sa.Column("starts_at", sa.DateTime, nullable=True),
    sa.Column("expires_at", sa.DateTime, nullable=True),
    sa.Column("uses_per_code", sa.Integer, nullable=False, server_default="1"),
    sa.Column("uses_per_customer", sa.Integer, nullable=True),
    sa.Column("budget", sa.Integer, nullable=True),  # redemptions in all; NULL: no limit
    sa.Column("redeemed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("categories", sa.Text, nullable=False, server_default=""),  # "|"-separated
    sa.Column("items", sa.Text, nullable=False, server_default=""),  # "|"-separated
    sa.Column("audience", sa.String(64), nullable=False, server_default=""),
    # "campaign": codes are shown by Vitrine's campaigns, and a code never issued reveals
    # nothing of itself; "shop": the shop hands the codes out itself.
    sa.Column("reveal", sa.String(8), nullable=False, server_default="shop"),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # The most a percentage takes off ("50% up to 500"; NULL: no cap), and whether the code
    # also gives free shipping (the checkout applies it: the answer says so).
    sa.Column("max_discount", sa.Float, nullable=True),
    sa.Column("free_shipping", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Every code, by its normalized form (upper case, no spaces or dashes): unique per shop.
coupon_codes = sa.Table(
    "coupon_codes",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("pool", sa.String(64), nullable=False),
    sa.Column("display", sa.String(80), nullable=False),  # as generated or imported: "WELCOME-7KQ2XM9P"
    sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_uses", sa.Integer, nullable=False, server_default="1"),
    sa.Column("source", sa.String(16), nullable=False),  # generated, imported
    sa.Column("created_at", sa.DateTime, nullable=False),
    # When it was first issued to a visitor (kept when that visitor is deleted: it is
    # never issued again); NULL: never shown by Vitrine.
    sa.Column("issued_at", sa.DateTime, nullable=True),
    sa.Index("ix_coupon_codes_unissued", "shop", "pool", "issued_at"),
)

# Which visitor was issued which code of a pool: one code per visitor and pool.
coupon_issues = sa.Table(
    "coupon_issues",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("pool", sa.String(64), primary_key=True),
    sa.Column("visitor_id", sa.String(64), primary_key=True),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("issued_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("shop", "code", name="uq_coupon_issues_code"),
    sa.Index("ix_coupon_issues_visitor", "shop", "visitor_id"),
)

_REDEEMED_ONCE = "result = 'ok' AND NOT replay"

# Every redemption attempt (the log): `result` is "ok" or the reason it was refused;
# `replay` marks the same order redeemed again (answered as the first time, counted
# once). `visitor_id` is the customer's imported id ("u:<customer_id>") when the
# backend named one, so the customer's export shows these and their deletion takes them.
coupon_redemptions = sa.Table(
    "coupon_redemptions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("shop", sa.String(64), nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("pool", sa.String(64), nullable=True),  # NULL: no such code
    sa.Column("order_id", sa.String(128), nullable=False),
    sa.Column("order_value", sa.Float, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False, server_default=""),
    sa.Column("customer_id", sa.String(128), nullable=True),
    sa.Column("visitor_id", sa.String(64), nullable=True),
    sa.Column("result", sa.String(32), nullable=False),
    sa.Column("replay", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("discount", sa.Float, nullable=True),  # the amount taken off
    sa.Column("discount_base", sa.Float, nullable=True),  # the part of the order it applied to
    sa.Index("ix_coupon_redemptions_shop_ts", "shop", "ts"),
    sa.Index("ix_coupon_redemptions_order", "shop", "code", "order_id"),
    sa.Index("ix_coupon_redemptions_customer", "shop", "pool", "customer_id"),
    sa.Index("ix_coupon_redemptions_visitor", "shop", "visitor_id"),
    sa.Index(
        "uq_coupon_redemptions_once", "shop", "code", "order_id", unique=True,
        sqlite_where=sa.text(_REDEEMED_ONCE), postgresql_where=sa.text(_REDEEMED_ONCE),
    ),
)

# Price lists per customer group (server/b2b/, `vitrine import prices`): each row is one
# quantity tier of one item's price for one group. A file imported replaces the shop's whole
# list, in one transaction, and bumps price_list_versions.
group_prices = sa.Table(
    "group_prices",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("customer_group", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("min_quantity", sa.Integer, primary_key=True),  # the tier: from this quantity on
    sa.Column("price", sa.Float, nullable=False),
)

# The items a group may not buy: never recommended nor found for its customers.
group_restrictions = sa.Table(
    "group_restrictions",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("customer_group", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
)

# Bumped in the transaction that replaces a shop's price list: every worker polls it (at
# most once a second) and reloads the lists it holds in memory when it moved.
price_list_versions = sa.Table(
    "price_list_versions",
    metadata,
    sa.Column("shop", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("imported_at", sa.DateTime, nullable=False),
)
