"""The dashboard users' SQL (server/admin/): who may sign in, with which hash, to which shops,
and the failed sign-ins every server process counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store.schema import admin_sign_in_failures, admin_user_shops, admin_users


def save_user(conn: Connection, insert: Any, email: str, password_hash: str | None, shop: str, now: datetime) -> bool:
    """Give `email` the shop; a new user needs `password_hash`, an existing one keeps theirs
    unless one is given. True when the user is new."""
    exists = conn.execute(sa.select(admin_users.c.email).where(admin_users.c.email == email)).first() is not None
    if not exists:
        if password_hash is None:
            raise ValueError("a new user needs a password")
        conn.execute(sa.insert(admin_users).values(email=email, password_hash=password_hash, created_at=now))
    elif password_hash is not None:
        conn.execute(sa.update(admin_users).where(admin_users.c.email == email).values(password_hash=password_hash))
    conn.execute(insert(admin_user_shops).values(email=email, shop=shop, added_at=now).on_conflict_do_nothing())
    return not exists


def find_user(conn: Connection, email: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(admin_users).where(admin_users.c.email == email)).first()
    if row is None:
        return None
    s = admin_user_shops.c
    shops = [r[0] for r in conn.execute(sa.select(s.shop).where(s.email == email).order_by(s.shop))]
    return {"email": row.email, "password_hash": row.password_hash, "created_at": row.created_at, "shops": shops}


def shop_users(conn: Connection, shop: str) -> list[dict[str, Any]]:
    s, u = admin_user_shops.c, admin_users.c
    query = (sa.select(u.email, u.created_at, s.added_at).join(admin_user_shops, s.email == u.email)
             .where(s.shop == shop).order_by(u.email))
    return [dict(row._mapping) for row in conn.execute(query)]


def remove_user(conn: Connection, email: str, shop: str | None) -> int:
    """Take the shop from the user (with no shop: the user and all their shops); a user left
    with no shop goes too. How many shops they lost."""
    s = admin_user_shops.c
    where = [s.email == email] + ([s.shop == shop] if shop is not None else [])
    removed = conn.execute(sa.delete(admin_user_shops).where(*where)).rowcount or 0
    left = conn.execute(sa.select(sa.func.count()).select_from(admin_user_shops).where(s.email == email)).scalar()
    if not left:
        conn.execute(sa.delete(admin_users).where(admin_users.c.email == email))
    return removed


def count_failures(conn: Connection, keys: Sequence[str], since: datetime) -> dict[str, int]:
    """Failures of each key since `since` (keys without any are left out)."""
    f = admin_sign_in_failures.c
    query = (sa.select(f.key, sa.func.count()).where(f.key.in_(list(keys)), f.failed_at >= since).group_by(f.key))
    return {key: n for key, n in conn.execute(query)}


def add_failure(conn: Connection, keys: Sequence[str], at: datetime, forget_before: datetime) -> None:
    """One failure for each key; the failures older than `forget_before` go (of every key), so
    the table holds no more than the window's."""
    f = admin_sign_in_failures.c
    conn.execute(sa.delete(admin_sign_in_failures).where(f.failed_at < forget_before))
    conn.execute(sa.insert(admin_sign_in_failures), [dict(key=k, failed_at=at) for k in keys])


def clear_failures(conn: Connection, key: str) -> int:
    return conn.execute(sa.delete(admin_sign_in_failures).where(admin_sign_in_failures.c.key == key)).rowcount or 0
