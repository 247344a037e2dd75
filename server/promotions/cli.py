"""`vitrine coupons create|import|redeem|log|stats`: the shop's coupon pools from the command line."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import click

LOG_COLUMNS = ("ts", "code", "pool", "order_id", "order_value", "currency", "customer_id", "result", "replay",
               "discount")


@click.group()
def coupons() -> None:
    """Coupon pools: create codes, import the shop's own, redeem, read the log (docs/promotions.md)."""


def _rule_options(command: Any) -> Any:
    options = [
        click.option("--kind", type=click.Choice(["percent", "amount"]), help="Percent off, or an amount off (default percent)."),
        click.option("--value", type=float, help="The percentage or the amount (default 10)."),
        click.option("--currency", "pool_currency", help="The amount's currency; orders in another are not eligible."),
        click.option("--min-order", type=float, help="The smallest order value the code applies to."),
        click.option("--max-discount", type=float, help="A percentage's cap: at most this much off (50% up to 500)."),
        click.option("--free-shipping", is_flag=True, default=None, help="The code also gives free shipping."),
        click.option("--starts", help="Valid from (ISO 8601; without an offset, the shop's time zone)."),
        click.option("--expires", help="Valid until (ISO 8601; a date alone: to the end of that day)."),
        click.option("--uses-per-code", type=int, help="Redemptions of each code (default 1)."),
        click.option("--uses-per-customer", type=int, help="Redemptions of the pool's codes by one customer."),
        click.option("--budget", type=int, help="Redemptions of the whole pool."),
        click.option("--category", "categories", multiple=True, help="Only for items of this category (repeatable)."),
        click.option("--item", "items", multiple=True, help="Only for this item (repeatable)."),
        click.option("--audience", help="Issued only to visitors in this audience."),
        click.option("--reveal", type=click.Choice(["shop", "campaign"]),
                     help="campaign: codes are shown by Vitrine's campaigns, and one never issued reveals nothing "
                          "(default shop: the shop hands them out)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _rules(shop_zone: str, given: dict[str, Any]) -> Any:
    """The PoolRules the options ask for, None when no rule option is given."""
    from server.promotions.rules import PoolRules
    from server.cli import fail

    names = {"kind": "kind", "value": "value", "pool_currency": "currency", "min_order": "min_order",
             "uses_per_code": "uses_per_code", "uses_per_customer": "uses_per_customer", "budget": "budget",
             "audience": "audience", "reveal": "reveal", "max_discount": "max_discount", "free_shipping": "free_shipping"}
    rules = {names[k]: v for k, v in given.items() if k in names and v is not None}
    if given.get("pool_currency"):
        rules["currency"] = given["pool_currency"].upper()
    for option, name, end_of_day in (("starts", "starts_at", False), ("expires", "expires_at", True)):
        if given.get(option):
            rules[name] = _moment(given[option], shop_zone, end_of_day, option)
    if given.get("categories"):
        rules["categories"] = tuple(given["categories"])
    if given.get("items"):
        rules["items"] = tuple(given["items"])
    if not rules:
        return None
    try:
        return PoolRules(**rules)
    except ValueError as exc:
        fail(str(exc))


def _moment(text: str, shop_zone: str, end_of_day: bool, option: str) -> datetime:
    from server.cli import fail
    from server.schedules import zone_named

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--{option} {text!r} is not a date or time: write 2027-01-31, 2027-01-31T18:00 or 2027-01-31T18:00Z")
    if end_of_day and len(text.strip()) == 10:  # a date alone: valid through that day
        moment = datetime.combine(moment.date() + timedelta(days=1), time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone_named(shop_zone))
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _open(ctx: click.Context, shop: str) -> tuple[Any, Any]:
    """(the shop's config, the services), or exit 2 for an unknown shop."""
    from server.cli import _parsed_or_exit, _services, _settings, _shop_file

    config = _parsed_or_exit(shop, _shop_file(ctx, shop))
    return config, _services(_settings(ctx))


@coupons.command("create")
@click.option("--shop", required=True, help="Shop id.")
@click.option("--pool", required=True, help="Pool id (created with the rules given when it does not exist).")
@click.option("--count", type=int, required=True, help="How many new codes.")
@click.option("--prefix", default="", help='Put before every code, e.g. "WELCOME-".')
@click.option("--pattern", default="XXXXXXXX", show_default=True,
              help="Each X a random character (no 0, O, 1, I, L); others kept, e.g. XXXX-XXXX.")
@_rule_options
@click.option("--json", "as_json", is_flag=True, help="Print the codes as a JSON list.")
@click.pass_context
def coupons_create(ctx: click.Context, shop: str, pool: str, count: int, prefix: str, pattern: str, as_json: bool,
                   **given: Any) -> None:
    """Generate COUNT new codes in the pool and print them, one a line (or as JSON)."""
    from server.cli import fail
    from server.promotions.codes import CodeError, Pattern
    from server.promotions.pools import PoolError, ensure_pool, generate_codes

    try:
        made = Pattern(prefix, pattern)
    except CodeError as exc:
        fail(str(exc))
    config, services = _open(ctx, shop)
    try:
        rules, created = ensure_pool(services.store, shop, pool, _rules(config.timezone, given))
        codes = generate_codes(services.store, shop, pool, rules, count, made)
    except PoolError as exc:
        fail(str(exc))
    finally:
        services.close()
    click.echo(json.dumps(codes) if as_json else "\n".join(codes))
    click.echo(f"{'Created pool ' + repr(pool) + ' and ' if created else 'Added '}{len(codes)} codes"
               f"{'' if created else ' to pool ' + repr(pool)}.", err=True)


@coupons.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shop", required=True, help="Shop id.")
@click.option("--pool", required=True, help="Pool id (created with the rules given when it does not exist).")
@_rule_options
@click.pass_context
def coupons_import(ctx: click.Context, file: Path, shop: str, pool: str, **given: Any) -> None:
    """Import the shop's own codes: a CSV with a `code` column. All or nothing."""
    from server.cli import fail
    from server.imports import ImportFailed
    from server.promotions.pools import PoolError, ensure_pool, import_codes, read_codes

    config, services = _open(ctx, shop)
    try:
        read_codes(file)  # a broken file creates no pool
        rules, created = ensure_pool(services.store, shop, pool, _rules(config.timezone, given))
        added = import_codes(services.store, shop, pool, rules, file)
    except ImportFailed as exc:
        fail(f"{exc}\nNothing was imported.")
    except PoolError as exc:
        fail(str(exc))
    finally:
        services.close()
    click.echo(f"Imported {added} codes into {'new ' if created else ''}pool {pool!r} of shop {shop!r}.")


@coupons.command("redeem")
@click.argument("code")
@click.option("--shop", required=True, help="Shop id.")
@click.option("--order-id", required=True, help="The order's id (the same order again is answered as the first time).")
@click.option("--order-value", type=float, required=True, help="The order's value.")
@click.option("--currency", help="The order's currency (default: the shop's).")
@click.option("--customer", help="The shop's customer id.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as the API gives it.")
@click.pass_context
def coupons_redeem(ctx: click.Context, code: str, shop: str, order_id: str, order_value: float, currency: str | None,
                   customer: str | None, as_json: bool) -> None:
    """Redeem CODE for an order, as POST /v1/coupons/redeem does; exit 1 when it is refused."""
    from pydantic import ValidationError

    from server.cli import fail
    from server.events import describe_validation_error
    from server.promotions.redeem import RedeemIn, redeem

    config, services = _open(ctx, shop)
    try:
        body = RedeemIn(code=code, order_id=order_id, order_value=order_value, currency=currency or config.currency,
                        customer_id=customer)
        answer = redeem(services.store, shop, body)
    except ValidationError as exc:
        fail(describe_validation_error(exc))
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps(answer))
    elif answer["ok"]:
        d = answer["discount"]
        click.echo(f"OK {answer['code']} (pool {answer['pool']}): {d['amount']} {d['currency']} off")
    else:
        click.echo(f"Refused: {answer['reason']}")
    ctx.exit(0 if answer["ok"] else 1)


@coupons.command("issue")
@click.option("--shop", required=True, help="Shop id.")
@click.option("--pool", required=True, help="The pool to take the code from.")
@click.option("--customer", required=True, help="The shop's customer id (an apology coupon shown on their next visit).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as the API gives it.")
@click.pass_context
def coupons_issue(ctx: click.Context, shop: str, pool: str, customer: str, as_json: bool) -> None:
    """Give one of the shop's customers a code of the pool, as POST /v1/coupons/issue does."""
    from pydantic import ValidationError

    from server.cli import fail
    from server.errors import ApiError
    from server.events import describe_validation_error
    from server.promotions.issue import IssueIn, issue_to_customer

    _, services = _open(ctx, shop)
    try:
        answer = issue_to_customer(services.store, shop, IssueIn(customer_id=customer, pool=pool))
    except ValidationError as exc:
        fail(describe_validation_error(exc))
    except ApiError as exc:
        fail(exc.message)
    finally:
        services.close()
    click.echo(json.dumps(answer) if as_json else answer["code"])


@coupons.command("log")
@click.option("--shop", required=True, help="Shop id.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), help="Only the newest N attempts.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (default: a JSON list).")
@click.pass_context
def coupons_log(ctx: click.Context, shop: str, limit: int | None, as_csv: bool) -> None:
    """Print every redemption attempt of the shop, oldest first: time, code, pool, order, value, result."""
    _, services = _open(ctx, shop)
    try:
        rows = services.store.coupon_log(shop, limit)
    finally:
        services.close()
    shown = [{k: (r[k].isoformat(timespec="seconds") + "Z" if k == "ts" else r[k]) for k in LOG_COLUMNS} for r in rows]
    if not as_csv:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    text = io.StringIO()
    out = csv.DictWriter(text, LOG_COLUMNS, lineterminator="\n")
    out.writeheader()
    out.writerows(shown)
    click.echo(text.getvalue(), nl=False)


@coupons.command("stats")
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def coupons_stats(ctx: click.Context, shop: str) -> None:
    """Per pool, as JSON: codes, issued, redeemed, redemption rate, revenue, discounts, failures by reason."""
    _, services = _open(ctx, shop)
    try:
        stats = services.store.coupon_stats(shop)
    finally:
        services.close()
    click.echo(json.dumps(stats, indent=2))
