"""Coupon pools: creating one with its rules, generating codes into it, importing the shop's
own codes from a CSV, and issuing a visitor one code of it."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from server.models import ANONYMOUS_VISITOR, utcnow
from server.promotions.codes import CodeError, Pattern, check_code, normalize
from server.promotions.rules import PoolRules

if TYPE_CHECKING:
    from server.store import Store

POOL_ID_LENGTH = 64
MAX_CODES = 100_000  # codes made by one call
GENERATE_ROUNDS = 10  # new draws for codes that collided with one the shop has


class PoolError(ValueError):
    """A pool that cannot be made or added to as asked; the message says why."""


def check_pool_id(pool: str) -> str:
    if not pool or len(pool) > POOL_ID_LENGTH or not all(c.isalnum() or c in "-_." for c in pool):
        raise PoolError(f"bad pool id {pool!r}: use letters, digits, - _ and . (at most {POOL_ID_LENGTH})")
    return pool


def pool_rules(store: "Store", shop: str, pool: str) -> PoolRules | None:
    row = store.coupon_pool(shop, pool)
    return None if row is None else PoolRules.from_row(row)


def ensure_pool(store: "Store", shop: str, pool: str, rules: PoolRules | None) -> tuple[PoolRules, bool]:
    """The pool's rules, creating it with `rules` (None: the defaults) when it does not exist;
    (rules, created). An existing pool keeps its rules: asking for others is a PoolError."""
    check_pool_id(pool)
    existing = pool_rules(store, shop, pool)
    if existing is None:
        wanted = rules or PoolRules()
        if store.create_coupon_pool(shop, pool, wanted.as_row()):
            return wanted, True
        existing = pool_rules(store, shop, pool)  # made by someone else meanwhile
        assert existing is not None
    if rules is not None and rules != existing:
        raise PoolError(f"pool {pool!r} exists with other rules ({'; '.join(existing.differences(rules))}); "
                        "leave the rule options out to add codes to it as it is")
    return existing, False


def generate_codes(store: "Store", shop: str, pool: str, rules: PoolRules, count: int,
                   pattern: Pattern) -> list[str]:
    """`count` new codes in the pool (which must exist), as shown. A code drawn that the shop
    has already (the unique index on shop and code refuses it) is drawn again."""
    if not 1 <= count <= MAX_CODES:
        raise PoolError(f"count must be from 1 to {MAX_CODES}, not {count}")
    made: list[str] = []
    for _ in range(GENERATE_ROUNDS):
        wanted = count - len(made)
        drawn = {}
        while len(drawn) < wanted:
            display = pattern.generate()
            drawn.setdefault(normalize(display), display)
        added = store.add_coupon_codes(shop, pool, list(drawn.items()), rules.uses_per_code, "generated")
        made += [display for code, display in drawn.items() if code in added]
        if len(made) == count:
            return made
    raise PoolError(f"could not draw {count} codes that the shop does not have in {GENERATE_ROUNDS} rounds: "
                    "use a longer pattern")


@dataclasses.dataclass(frozen=True)
class ImportedCode:
    line: int
    code: str
    display: str


def read_codes(path: Path) -> list[ImportedCode]:
    """The codes of a CSV with a `code` column (the shop's platform's export); ImportFailed
    listing every broken row by its line (an empty or malformed code, one given twice)."""
    from server.imports import ImportFailed, _open_delimited

    path = Path(path)
    if not path.is_file():
        raise ImportFailed(path, None, "no such file")
    errors, rows = _open_delimited(path, ",", ("code",),
                                   empty="the file is empty (expected a header row with a code column)")
    found: list[ImportedCode] = []
    first: dict[str, int] = {}
    for line, row, problem in rows:
        if problem:
            errors.add(line, problem)
            continue
        try:
            code = check_code(row.get("code", ""))
        except CodeError as exc:
            errors.add(line, str(exc))
            continue
        if code in first:
            errors.add(line, f"code {row['code']!r} is given twice (first on line {first[code]}; "
                             "codes are compared without case, spaces and dashes)")
            continue
        first[code] = line
        found.append(ImportedCode(line, code, row["code"]))
    errors.raise_if_any()
    if not found:
        raise ImportFailed(path, None, "no codes in the file")
    return found


def import_codes(store: "Store", shop: str, pool: str, rules: PoolRules, path: Path) -> int:
    """Import the file's codes into the pool (which must exist): all of them or none. A code
    the shop has already, in any pool, is an error naming its line."""
    from server.imports import ImportFailed, _Errors

    found = read_codes(path)
    taken = store.coupon_codes_taken(shop, [c.code for c in found])
    if taken:
        errors = _Errors(Path(path))
        for c in found:
            if c.code in taken:
                errors.add(c.line, f"code {c.display!r} is already in pool {taken[c.code]!r}")
        errors.raise_if_any()
    added = store.add_coupon_codes(shop, pool, [(c.code, c.display) for c in found], rules.uses_per_code, "imported")
    if len(added) != len(found):  # added by someone else between the check and now
        raise ImportFailed(path, None, f"{len(found) - len(added)} codes were added to the shop meanwhile; "
                                       "import the file again to see which")
    return len(added)


def issue_code(store: "Store", shop: str, pool: str, visitor_id: str, audiences: Iterable[str] | None = None,
               now: datetime | None = None) -> str | None:
    """The code of the pool this visitor is shown: the same one on every call for them, never
    one another visitor holds (atomic under concurrency: a unique index on the code, and
    issuing takes a code nobody holds with a conditional update). None when the pool does not
    exist or has no code left, and for a visitor who holds none and is not in the pool's
    audience (given as the visitor's `audiences`); one who holds a code keeps it.

    The caller stores this only for a visitor whose consent allows a profile: the issue is a
    row about them (exported with their data, deleted with it). The shared id of visitors
    without one (ANONYMOUS_VISITOR) is refused: all of them would share one code."""
    if not visitor_id or visitor_id == ANONYMOUS_VISITOR:
        raise ValueError("a code is issued to one visitor: not to the visitors without a profile")
    rules = pool_rules(store, shop, pool)
    if rules is None:
        return None
    in_audience = not rules.audience or rules.audience in set(audiences or ())
    return store.issue_coupon(shop, pool, visitor_id, now or utcnow(), new=in_audience)
