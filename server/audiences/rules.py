"""Audience rules: conditions on visitor facts, combined with all / any / not and with other
audiences, read from a shop config (every problem named by where it is written) and tested for
one visitor with the reason in plain words.

A rule is a table: each key is a fact (`cart_value = { min = 250 }`), `audience = "lapsed"`,
or a combinator (`all = [...]`, `any = [...]`, `not = {...}`), and every key of a table must
hold. docs/audiences.md lists every fact and what each accepts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Union

from server.audiences.facts import CHOICE, FACTS, FLAG, NUMBER, PER_CATEGORY, SET, Fact, VisitorFacts
from server.languages import speaks

if TYPE_CHECKING:
    from server.audiences.book import Run

Loc = tuple[Union[str, int], ...]
COMBINATORS = ("all", "any", "not", "audience")
CATEGORY_FACTS = frozenset({"cart_categories", "viewed_categories", "category_views", "interest"})
TEXT_OPERATORS = ("contains", "prefix")  # choice facts: a table with one of these


class Problems(list):
    """(loc, message) of every problem found, in the order found."""

    def add(self, loc: Loc, message: str) -> None:
        self.append((tuple(loc), message))


class Rule(Protocol):
    """`holds` is what a page call needs; `reason` (why it holds or not, in plain words) is
    worked out only when asked for (decisions, `_context=1`), from the same facts."""

    def holds(self, run: "Run") -> bool: ...

    def reason(self, run: "Run") -> str: ...

    def parts(self) -> Iterator["Rule"]: ...


@dataclass(frozen=True)
class AllOf:
    rules: tuple[Rule, ...]

    def holds(self, run: "Run") -> bool:
        return all(rule.holds(run) for rule in self.rules)

    def reason(self, run: "Run") -> str:
        failing = next((rule for rule in self.rules if not rule.holds(run)), None)
        return failing.reason(run) if failing is not None else "; ".join(rule.reason(run) for rule in self.rules)

    def parts(self) -> Iterator[Rule]:
        return iter(self.rules)


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]

    def holds(self, run: "Run") -> bool:
        return any(rule.holds(run) for rule in self.rules)

    def reason(self, run: "Run") -> str:
        passing = next((rule for rule in self.rules if rule.holds(run)), None)
        if passing is not None:
            return passing.reason(run)
        return "none held: " + "; ".join(rule.reason(run) for rule in self.rules)

    def parts(self) -> Iterator[Rule]:
        return iter(self.rules)


@dataclass(frozen=True)
class Not:
    rule: Rule

    def holds(self, run: "Run") -> bool:
        return not self.rule.holds(run)

    def reason(self, run: "Run") -> str:
        return f"not ({self.rule.reason(run)})"

    def parts(self) -> Iterator[Rule]:
        return iter((self.rule,))


@dataclass(frozen=True)
class InAudience:
    ids: tuple[str, ...]
    loc: Loc = ()

    def holds(self, run: "Run") -> bool:
        return any(run.member(audience) for audience in self.ids)

    def reason(self, run: "Run") -> str:
        for audience in self.ids:
            if run.member(audience):
                return f"in {audience} ({run.reason(audience)})"
        return f"not in {' nor '.join(self.ids)}"

    def parts(self) -> Iterator[Rule]:
        return iter(())


@dataclass(frozen=True)
class FactTest:
    """One fact against what the rule wants: a number's range, a flag, one of some values, a text
    that contains or starts with something, or a category's count or share."""

    fact: Fact
    least: float | None = None
    most: float | None = None
    flag: bool | None = None
    values: tuple[str, ...] = ()
    contains: str = ""
    prefix: str = ""
    category: str = ""

    def holds(self, run: "Run") -> bool:
        kind, value = self.fact.kind, self._value(run.facts)
        if kind in (NUMBER, PER_CATEGORY):
            return value is not None and self._in_range(value)
        if kind == FLAG:
            return bool(value) == self.flag
        if kind == CHOICE:
            return bool(value) and self._matches(str(value))
        return any(self._matches(str(v)) for v in value)

    def reason(self, run: "Run") -> str:
        value = self._value(run.facts)
        shown = self.fact.describe((self.category, value) if self.fact.kind == PER_CATEGORY else value)
        if self.fact.kind == FLAG:
            return shown if self.holds(run) else f"{shown}, wanted {self.fact.describe(self.flag)}"
        return f"{shown} ({self.wanted()})" if self.holds(run) else f"{shown}, wanted {self.wanted()}"

    def _value(self, facts: VisitorFacts) -> Any:
        if self.fact.kind == PER_CATEGORY:
            return facts.interest_in(self.category) if self.fact.name == "interest" else facts.viewed_in(self.category)
        return facts.value(self.fact.name)

    def parts(self) -> Iterator[Rule]:
        return iter(())

    def _in_range(self, value: float) -> bool:
        return (self.least is None or value >= self.least) and (self.most is None or value <= self.most)

    def _matches(self, value: str) -> bool:
        name = self.fact.name
        folded = value.casefold()
        if self.contains:
            return self.contains.casefold() in folded
        if self.prefix:
            return folded.startswith(self.prefix.casefold())
        if name in CATEGORY_FACTS:
            from server.context import in_category

            return any(in_category(value, wanted) for wanted in self.values)
        if name in ("cart_items", "viewed_items"):
            return value in self.values
        if name == "referrer":
            return any(folded == w.casefold() or folded.endswith("." + w.casefold()) for w in self.values)
        if name == "language":
            return any(speaks((folded,), wanted) for wanted in self.values)
        return any(folded == wanted.casefold() for wanted in self.values)

    def wanted(self) -> str:
        """What the rule asks for, in plain words: "at least 300 days", "one of mobile, tablet"."""
        if self.fact.kind in (NUMBER, PER_CATEGORY):
            unit = self.fact.unit

            def show(n: float) -> str:
                if self.fact.percent:
                    return f"{round(n * 100)}%"
                named = unit[:-1] if n == 1 and unit.endswith("s") else unit
                return f"{_number(n)} {named}".rstrip()

            if self.least is not None and self.least == self.most:
                return f"exactly {show(self.least)}"
            if self.least is not None and self.most is not None:
                return f"{_number(self.least) if not self.fact.percent else show(self.least)} to {show(self.most)}"
            return f"at least {show(self.least)}" if self.least is not None else f"at most {show(self.most)}"
        if self.contains:
            return f'{"one " if self.fact.kind == SET else ""}containing "{self.contains}"'
        if self.prefix:
            return f'starting with "{self.prefix}"'
        if len(self.values) == 1:
            return self.values[0]
        return f"{'any' if self.fact.kind == SET else 'one'} of {', '.join(self.values)}"


def _number(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:g}"


def walk(rule: Rule) -> Iterator[Rule]:
    """The rule and every rule inside it."""
    yield rule
    for part in rule.parts():
        yield from walk(part)


# -- reading rules from a config --------------------------------------------------------
def parse_rule(table: Any, loc: Loc, problems: Problems, skip: tuple[str, ...] = ()) -> Rule | None:
    """The rule a table writes (every key must hold), with its problems added; a rule with
    problems keeps the parts that were read (so that the audiences they name are checked too),
    and None when nothing could be read."""
    if not isinstance(table, dict):
        problems.add(loc, f"a condition is a table such as {{ orders = {{ min = 2 }} }}, not {_shown(table)}")
        return None
    rules, broken = [], False
    for key, value in table.items():
        if key in skip:
            continue
        rule = _parse_key(key, value, loc + (key,), problems)
        broken |= rule is None
        if rule is not None:
            rules.append(rule)
    if not rules:
        if not broken:
            problems.add(loc, "no condition: name a fact (orders, cart_value, country ...), an audience, or all / any / not")
        return None
    return rules[0] if len(rules) == 1 else AllOf(tuple(rules))


def _parse_key(key: str, value: Any, loc: Loc, problems: Problems) -> Rule | None:
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            problems.add(loc, f"{key} is a list of conditions, e.g. {key} = [{{ orders = 0 }}, {{ visits = {{ min = 2 }} }}]")
            return None
        rules = [r for n, element in enumerate(value) if (r := parse_rule(element, loc + (n,), problems))]
        if not rules:
            return None
        return (AllOf if key == "all" else AnyOf)(tuple(rules))
    if key == "not":
        rule = parse_rule(value, loc, problems)
        return Not(rule) if rule is not None else None
    if key == "audience":
        ids = _strings(value, loc, problems, "an audience id or a list of them")
        return InAudience(ids, loc) if ids else None
    fact = FACTS.get(key)
    if fact is None:
        near = difflib.get_close_matches(key, [*FACTS, *COMBINATORS], n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near else "; docs/audiences.md lists the facts"
        problems.add(loc, f"unknown fact {key!r}{hint}")
        return None
    return _parse_fact(fact, value, loc, problems)


def _parse_fact(fact: Fact, value: Any, loc: Loc, problems: Problems) -> FactTest | None:
    if fact.kind == NUMBER:
        return _parse_range(fact, value, loc, problems)
    if fact.kind == FLAG:
        if not isinstance(value, bool):
            problems.add(loc, f"{fact.name} is true or false, not {_shown(value)}")
            return None
        return FactTest(fact, flag=value)
    if fact.kind == PER_CATEGORY:
        if not isinstance(value, dict) or not isinstance(value.get("category"), str) or not value["category"].strip():
            example = "min = 0.3" if fact.percent else "min = 3"
            problems.add(loc, f'{fact.name} needs a category and a range, e.g. {{ category = "Christmas", {example} }}')
            return None
        rest = {k: v for k, v in value.items() if k != "category"}
        found = _parse_range(fact, rest, loc, problems, extra="category")
        return FactTest(fact, found.least, found.most, category=value["category"].strip()) if found else None
    # choices and sets: a value, a list of values, or a table with one text operator
    if isinstance(value, dict):
        unknown = [op for op in value if op not in TEXT_OPERATORS or (fact.kind == SET and op == "prefix")]
        allowed = "contains" if fact.kind == SET else "contains or prefix"
        if unknown or len(value) != 1:
            where = loc + (unknown[0],) if unknown else loc
            what = f"unknown operator {unknown[0]!r}" if unknown else "one operator only"
            problems.add(where, f"{what}; {fact.name} takes a value, a list of values, or a table with {allowed}")
            return None
        [(op, text)] = value.items()
        if not isinstance(text, str) or not text:
            problems.add(loc + (op,), f"{op} takes a text, not {_shown(text)}")
            return None
        return FactTest(fact, **{op: text})
    values = _strings(value, loc, problems, "a value or a list of values")
    if not values:
        return None
    if fact.name == "country":
        bad = [v for v in values if len(v) != 2 or not v.isalpha()]
        if bad:
            problems.add(loc, f"{bad[0]!r} is not a two-letter country code")
            return None
        values = tuple(v.upper() for v in values)
    elif fact.choices:
        values = tuple(v.lower() for v in values)
        bad = [v for v in values if v not in fact.choices]
        if bad:
            problems.add(loc, f"{bad[0]!r} is not a {fact.name}: use {', '.join(fact.choices)}")
            return None
    return FactTest(fact, values=values)


def _parse_range(
    fact: Fact, value: Any, loc: Loc, problems: Problems, extra: str = "",
) -> FactTest | None:
    ops = "min and/or max" + (f" (with {extra})" if extra else "")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not extra:
        least = most = float(value)
    elif isinstance(value, dict):
        unknown = [op for op in value if op not in ("min", "max")]
        if unknown:
            problems.add(loc + (unknown[0],), f"unknown operator {unknown[0]!r}; {fact.name} takes {ops}"
                         + ("" if extra else ", or a number"))
            return None
        if not value:
            problems.add(loc, f"{fact.name} needs {ops}")
            return None
        for op, bound in value.items():
            if not isinstance(bound, (int, float)) or isinstance(bound, bool):
                problems.add(loc + (op,), f"{op} is a number, not {_shown(bound)}")
                return None
        least, most = value.get("min"), value.get("max")
    else:
        problems.add(loc, f"{fact.name} takes a number or a table with {ops}, not {_shown(value)}")
        return None
    if least is not None and most is not None and least > most:
        problems.add(loc, f"min ({_number(least)}) is more than max ({_number(most)})")
        return None
    limits = (0, 1, "a share from 0 to 1 (0.3 is 30%)") if fact.percent else (
        (0, 23, "an hour from 0 to 23") if fact.name == "local_hour" else (0, None, "never negative"))
    for bound in (least, most):
        if bound is not None and (bound < limits[0] or (limits[1] is not None and bound > limits[1])):
            problems.add(loc, f"{_number(bound)} is out of range: {fact.name} is {limits[2]}")
            return None
    return FactTest(fact, least=least, most=most)


def _strings(value: Any, loc: Loc, problems: Problems, what: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        problems.add(loc, f"an empty list: give {what}")
        return ()
    for n, item in enumerate(values):
        if not isinstance(item, str) or not item.strip():
            problems.add(loc + ((n,) if isinstance(value, list) else ()), f"expected {what}, not {_shown(item)}")
            return ()
    return tuple(v.strip() for v in values)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
