"""The coupons' SQL (server/promotions/): pools, codes, the codes issued to visitors, and
the redemption of a code as one transaction that counts it with conditional updates."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.promotions.codes import ALPHABET
from server.store.schema import coupon_codes, coupon_issues, coupon_pools, coupon_redemptions

_codes, _pools, _issues, _log = coupon_codes.c, coupon_pools.c, coupon_issues.c, coupon_redemptions.c


class IssueRaced(Exception):
    """Another transaction issued this visitor a code of the pool at the same moment: the
    work is rolled back and done again (it then finds that code)."""


def find_pool(conn: Connection, shop: str, pool: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(coupon_pools).where(_pools.shop == shop, _pools.pool == pool)).first()
    return None if row is None else dict(row._mapping)


def shop_pools(conn: Connection, shop: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(
        sa.select(coupon_pools).where(_pools.shop == shop).order_by(_pools.pool))]


def create_pool(conn: Connection, insert: Any, shop: str, pool: str, rules: dict[str, Any], now: datetime) -> bool:
    """The pool with these rules unless it exists; True when it was created now."""
    done = conn.execute(insert(coupon_pools).values(shop=shop, pool=pool, created_at=now, **rules)
                        .on_conflict_do_nothing().returning(_pools.pool))
    return done.first() is not None


def add_codes(conn: Connection, insert: Any, shop: str, pool: str, codes: Sequence[tuple[str, str]], max_uses: int,
              source: str, now: datetime) -> set[str]:
    """Add (code, display) pairs; the codes added (one already in the shop is left out)."""
    if not codes:
        return set()
    rows = [dict(shop=shop, code=code, pool=pool, display=display, uses=0, max_uses=max_uses, source=source,
                 created_at=now) for code, display in codes]
    added: set[str] = set()
    statement = insert(coupon_codes).on_conflict_do_nothing().returning(_codes.code)
    for start in range(0, len(rows), 1000):
        added |= {r[0] for r in conn.execute(statement, rows[start:start + 1000])}
    return added


def codes_taken(conn: Connection, shop: str, codes: Sequence[str]) -> dict[str, str]:
    """Which of these (normalized) codes the shop has already: {code: its pool}."""
    found: dict[str, str] = {}
    listed = sorted(set(codes))
    for start in range(0, len(listed), 500):
        query = sa.select(_codes.code, _codes.pool).where(_codes.shop == shop, _codes.code.in_(listed[start:start + 500]))
        found.update({r.code: r.pool for r in conn.execute(query)})
    return found


def issue(conn: Connection, insert: Any, shop: str, pool: str, visitor_id: str, now: datetime,
          new: bool = True) -> str | None:
    """The display form of the code the visitor holds in the pool, issuing them one never
    issued when they hold none (and `new`); None when every code of the pool is issued.
    Raises IssueRaced when another transaction issued them one meanwhile."""
    held = conn.execute(sa.select(_codes.display).join(coupon_issues, sa.and_(
        _issues.shop == _codes.shop, _issues.code == _codes.code)).where(
        _issues.shop == shop, _issues.pool == pool, _issues.visitor_id == visitor_id)).first()
    if held is not None or not new:
        return held[0] if held is not None else None
    # A free code from a random place in the pool's codes, not the lowest: issued in code
    # order, the codes of one holder would tell where everyone else's are (a guesser's range).
    # SKIP LOCKED: concurrent issues on PostgreSQL each take another code instead of queueing
    # for the same one (SQLite's writers take turns anyway).
    unissued = sa.select(_codes.code, _codes.display).where(
        _codes.shop == shop, _codes.pool == pool, _codes.issued_at.is_(None))
    lowest = conn.execute(unissued.order_by(_codes.code).limit(1)).first()
    if lowest is None:
        return None
    highest = conn.execute(unissued.order_by(_codes.code.desc()).limit(1)).first()
    start = _random_between(lowest.code, highest.code if highest is not None else lowest.code)
    free = None
    for query in (unissued.where(_codes.code >= start), unissued):
        free = conn.execute(query.order_by(_codes.code).limit(1).with_for_update(skip_locked=True)).first()
        if free is not None:
            break
    if free is None:
        return None
    claimed = conn.execute(sa.update(coupon_codes).where(
        _codes.shop == shop, _codes.code == free.code, _codes.issued_at.is_(None)).values(issued_at=now)).rowcount
    mine = conn.execute(insert(coupon_issues).values(shop=shop, pool=pool, visitor_id=visitor_id, code=free.code,
                                                     issued_at=now).on_conflict_do_nothing().returning(_issues.code))
    if not claimed or mine.first() is None:
        raise IssueRaced()
    return free.display


def held_codes(conn: Connection, shop: str, visitor_ids: Sequence[str]) -> dict[str, str]:
    """The codes these visitors hold that can still be used (uses left), by pool, each as the
    shop shows it; the first visitor's where two hold one of the same pool."""
    rows = conn.execute(sa.select(_issues.visitor_id, _issues.pool, _codes.display).join(coupon_codes, sa.and_(
        _codes.shop == _issues.shop, _codes.code == _issues.code)).where(
        _issues.shop == shop, _issues.visitor_id.in_(list(visitor_ids)), _codes.uses < _codes.max_uses))
    order = {v: n for n, v in enumerate(visitor_ids)}
    held: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: order[r.visitor_id]):
        held.setdefault(row.pool, row.display)
    return held


def _random_between(low: str, high: str) -> str:
    """A random code-like text from `low` to about `high`: their common start, then random
    characters of the codes' alphabet (which is in sort order)."""
    same = 0
    while same < min(len(low), len(high)) and low[same] == high[same]:
        same += 1
    return low[:same] + "".join(secrets.choice(ALPHABET) for _ in range(max(len(high), len(low)) - same))


def redeem(conn: Connection, shop: str, attempt: dict[str, Any],
           decide: Callable[[dict[str, Any], dict[str, Any], int], Any], now: datetime) -> dict[str, Any]:
    """Redeem `attempt["code"]` for `attempt["order_id"]`, and log the attempt.

    The code's row, then its pool's, are locked first (FOR UPDATE on PostgreSQL; SQLite's
    writer holds the database), in that order everywhere, so redemptions of one code, and
    the per-customer count of one pool, are decided one after the other on fresh rows. An
    `ok` is then counted by conditional updates, `uses < max_uses` on the code and
    `redeemed < budget` on the pool: if either finds no row, the code was used up and the
    attempt is refused, whatever was read before. The same order redeemed again with the same
    code answers what its first redemption did (`replay`), counted once."""
    code = attempt["code"]
    out = {"result": "not_found", "pool": None, "display": None, "replay": False, "discount": None, "base": None}
    row = conn.execute(sa.select(coupon_codes).where(_codes.shop == shop, _codes.code == code).with_for_update()).first()
    if row is not None:
        pool = conn.execute(sa.select(coupon_pools).where(
            _pools.shop == shop, _pools.pool == row.pool).with_for_update()).first()
        out.update(pool=row.pool, display=row.display, rules=None if pool is None else dict(pool._mapping))
        prior = conn.execute(sa.select(_log.discount, _log.discount_base).where(
            _log.shop == shop, _log.code == code, _log.order_id == attempt["order_id"], _log.result == "ok",
            _log.replay == sa.false())).first()
        if prior is not None:
            out.update(result="ok", replay=True, discount=prior.discount, base=prior.discount_base)
        elif pool is not None:
            out.update(_decided(conn, shop, attempt, row, dict(pool._mapping), decide))
    conn.execute(sa.insert(coupon_redemptions).values(
        shop=shop, ts=now, code=code[:64], pool=out["pool"], order_id=attempt["order_id"],
        order_value=attempt["order_value"], currency=attempt.get("currency") or "",
        customer_id=attempt.get("customer_id"), visitor_id=attempt.get("visitor_id"), result=out["result"],
        replay=out["replay"], discount=out["discount"], discount_base=out["base"]))
    return out


def _decided(conn: Connection, shop: str, attempt: dict[str, Any], row: Any, pool: dict[str, Any],
             decide: Callable[[dict[str, Any], dict[str, Any], int], Any]) -> dict[str, Any]:
    customer_uses = 0
    if attempt.get("customer_id") and pool["uses_per_customer"] is not None:
        customer_uses = conn.execute(sa.select(sa.func.count()).select_from(coupon_redemptions).where(
            _log.shop == shop, _log.pool == pool["pool"], _log.customer_id == attempt["customer_id"],
            _log.result == "ok", _log.replay == sa.false())).scalar_one()
    verdict = decide(pool, {**row._mapping, "pool_redeemed": pool["redeemed"]}, customer_uses)
    if verdict.result != "ok":
        return {"result": verdict.result}
    used = conn.execute(sa.update(coupon_codes).where(
        _codes.shop == shop, _codes.code == row.code, _codes.uses < _codes.max_uses).values(uses=_codes.uses + 1))
    if not used.rowcount:
        return {"result": "already_redeemed"}
    counted = conn.execute(sa.update(coupon_pools).where(
        _pools.shop == shop, _pools.pool == pool["pool"],
        sa.or_(_pools.budget.is_(None), _pools.redeemed < _pools.budget)).values(redeemed=_pools.redeemed + 1))
    if not counted.rowcount:  # the pool's budget went meanwhile: the code's use is given back
        conn.execute(sa.update(coupon_codes).where(_codes.shop == shop, _codes.code == row.code)
                     .values(uses=_codes.uses - 1))
        return {"result": "usage_limit_reached"}
    return {"result": "ok", "discount": verdict.discount, "base": verdict.base}


def redemption_log(conn: Connection, shop: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The shop's redemption attempts, oldest first (the newest `limit` of them); each code as
    the shop shows it ("WELCOME-7KQ2XM9P") where the shop has it, else as it was compared."""
    query = (sa.select(coupon_redemptions, _codes.display)
             .outerjoin(coupon_codes, (_codes.shop == _log.shop) & (_codes.code == _log.code))
             .where(_log.shop == shop).order_by(_log.ts.desc(), _log.id.desc()))
    if limit is not None:
        query = query.limit(limit)
    rows = []
    for r in reversed(conn.execute(query).all()):
        row = dict(r._mapping)
        display = row.pop("display")
        rows.append({**row, "code": display or row["code"]})
    return rows


def pool_stats(conn: Connection, shop: str) -> list[dict[str, Any]]:
    """Per pool: codes, issued, redeemed (redemptions), the share of the codes shown that were
    used, the revenue of the orders they were redeemed on, the discounts, failures by reason."""
    counted = sa.select(_codes.pool, sa.func.count().label("codes"), sa.func.count(_codes.issued_at).label("issued"),
                        sa.func.sum(sa.case((_codes.uses > 0, 1), else_=0)).label("used")).where(_codes.shop == shop).group_by(_codes.pool)
    codes = {r.pool: r for r in conn.execute(counted)}
    ok = (_log.result == "ok") & (_log.replay == sa.false())
    sums = sa.select(_log.pool, sa.func.sum(_log.order_value).label("revenue"),
                     sa.func.sum(_log.discount).label("discounts")).where(_log.shop == shop, ok).group_by(_log.pool)
    money = {r.pool: r for r in conn.execute(sums)}
    failures: dict[str, dict[str, int]] = {}
    refused = sa.select(_log.pool, _log.result, sa.func.count().label("n")).where(
        _log.shop == shop, _log.result != "ok").group_by(_log.pool, _log.result)
    for r in conn.execute(refused):
        failures.setdefault(r.pool, {})[r.result] = r.n
    stats = []
    for pool in shop_pools(conn, shop):
        name = pool["pool"]
        c, m = codes.get(name), money.get(name)
        issued = c.issued if c else 0
        # A shop's own pool hands out every code it has: its rate is over its codes.
        shown = issued if pool["reveal"] == "campaign" else (c.codes if c else 0)
        stats.append({
            "pool": name, "codes": c.codes if c else 0, "issued": issued, "redeemed": pool["redeemed"],
            "redemption_rate": round((c.used or 0) / shown, 4) if shown else None,
            "revenue": round(m.revenue or 0, 2) if m else 0.0, "discounts": round(m.discounts or 0, 2) if m else 0.0,
            "failures": dict(sorted(failures.get(name, {}).items())),
        })
    return stats
