"""Calendar campaigns (`[campaigns.calendar]`): a campaign that runs on an occasion of the
visitor's own calendar: a public holiday of their country (and region, where the `holidays`
package knows its subdivisions), their birthday, or the anniversary of their sign-up; on
the day, or within some days before and after it. The day is the visitor's local date: in
their time zone (from the IP address), else the shop's; `now=` on a fragment URL previews
any moment, `country=` any country.

The loyalty tier a reward depends on is an audience (`[[audiences.loyal]]`): one campaign
per tier, each with the tier's audience, the best first by priority (docs/campaigns.md).
"""

from __future__ import annotations

import difflib
import functools
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import holidays as holiday_calendars
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.schedules import UTC, zone_for, zone_setting

if TYPE_CHECKING:
    from server.context import VisitorContext

ANY = "any"  # holidays = ["any"]: every public holiday of the visitor's country
LANGUAGE = "en_US"  # holiday names in English where the package has them (else its own language)
MAX_WINDOW_DAYS = 31


class Calendar(BaseModel):
    """`[campaigns.calendar]`: the occasions a campaign runs on, and the days around them."""

    model_config = ConfigDict(extra="forbid")

    holidays: list[str] = Field(
        default_factory=list,
        description='public holidays of the visitor\'s country by name ("Saint Patrick\'s Day"), or ["any"]',
    )
    birthday: bool = Field(False, description="the visitor's birthday (imported customers, or the sign-up popup)")
    anniversary: bool = Field(False, description="the anniversary of the visitor's sign-up (a year or more ago)")
    days_before: int = Field(0, ge=0, le=MAX_WINDOW_DAYS, description="also this many days before the occasion")
    days_after: int = Field(0, ge=0, le=MAX_WINDOW_DAYS, description="also this many days after it")
    timezone: str = Field("visitor", description='whose date: "visitor" (else the shop\'s), "shop", or an IANA name')

    @field_validator("holidays")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        cleaned = [n.strip() for n in names]
        if any(not n for n in cleaned):
            raise ValueError("a holiday's name is empty")
        if ANY in (n.lower() for n in cleaned) and len(cleaned) > 1:
            raise ValueError(f'"{ANY}" is every holiday already: leave out the other names')
        return cleaned

    _zone = field_validator("timezone")(lambda cls, name: zone_setting(name))

    @model_validator(mode="after")
    def _an_occasion(self) -> "Calendar":
        if not (self.holidays or self.birthday or self.anniversary):
            raise ValueError("name an occasion: holidays = [...], birthday = true or anniversary = true")
        return self

    @property
    def any_holiday(self) -> bool:
        return [n.lower() for n in self.holidays] == [ANY]

    def check_names(self, countries: list[str]) -> None:
        """With the campaign's countries known, every holiday it names must be one of theirs
        (a misspelt name would never match): ValueError naming the close ones."""
        if not self.holidays or self.any_holiday or not countries:
            return
        this_year = datetime.now(timezone.utc).year
        known: dict[str, str] = {}  # as matched: as the package writes it
        for country in countries:
            for year in (this_year, this_year + 1):
                for names in _holidays(country, "", year).values():
                    known |= {_plain(n): n.removesuffix(" (observed)") for n in names.split("; ")}
        for name in self.holidays:
            if name.lower() not in known:
                close = difflib.get_close_matches(name.lower(), sorted(known), n=3, cutoff=0.6)
                hint = f" (did you mean {' or '.join(repr(known[c]) for c in close)}?)" if close else ""
                raise ValueError(f"{name!r} is not a public holiday of {'/'.join(countries)}{hint}")


def check_calendar(calendar: Calendar, ctx: "VisitorContext", shop_zone: str, check) -> None:
    """The calendar's check, with its reason (worded when read): the occasion found around
    the visitor's date, or what was looked for."""
    found = occasion(calendar, ctx, shop_zone)

    def why() -> str:
        today, whose = local_date(calendar, ctx, shop_zone)
        on = f"it is {today:%a %Y-%m-%d} {whose}"
        if found is not None:
            return f"{found[1]} {_when(found[0], today)}, {on}"
        return f"no {_wanted(calendar, ctx)} {_window(calendar)}, {on}"

    check(found is not None, why)


def occasion(calendar: Calendar, ctx: "VisitorContext", shop_zone: str) -> tuple[date, str] | None:
    """The occasion (its date and its name for copy) nearest the visitor's local date within
    the calendar's days, or None. Worked out once per request and campaign."""
    key = f"occasion:{id(calendar)}"
    return ctx.derive(key, lambda: _occasion(calendar, ctx, shop_zone))


def _occasion(calendar: Calendar, ctx: "VisitorContext", shop_zone: str) -> tuple[date, str] | None:
    today, _ = local_date(calendar, ctx, shop_zone)
    # Nearest first: today, then a day after and a day before, and so on.
    days = [today + timedelta(days=d) for d in _offsets(calendar.days_before, calendar.days_after)]
    if calendar.holidays and ctx.geo.country:
        found = _holiday_near(calendar, ctx.geo.country, region_code(ctx), days)
        if found is not None:
            return found
    if calendar.birthday and ctx.consent.personalization:
        born = birthday(ctx)
        if born is not None:
            for day in days:
                if (day.month, day.day) == born or (born == (2, 29) and not _leap(day.year) and (day.month, day.day) == (2, 28)):
                    return day, "your birthday"
    if calendar.anniversary and ctx.consent.personalization:
        joined = signed_up(ctx)
        if joined is not None:
            for day in days:
                if (day.month, day.day) == (joined.month, joined.day) and day.year > joined.year:
                    years = day.year - joined.year
                    return day, f"{years} year{'s' if years > 1 else ''} with us"
    return None


_NEAR: dict[tuple, tuple[Calendar, tuple[date, str] | None]] = {}  # _holiday_near's answers
MAX_NEAR = 4096


def _holiday_near(calendar: Calendar, country: str, subdiv: str, days: list[date]) -> tuple[date, str] | None:
    """The first of `days` that is one of the calendar's holidays where the visitor is, with
    its name: the same for every visitor of a region on a date, so worked out once for them
    (the calendar kept with the answer: a reloaded config's is another object)."""
    key = (id(calendar), country, subdiv, days[0])
    kept = _NEAR.get(key)
    if kept is not None and kept[0] is calendar:
        return kept[1]
    wanted = None if calendar.any_holiday else {n.lower() for n in calendar.holidays}
    found = None
    for day in days:
        name = _holidays(country, subdiv, day.year).get(day)
        if name is not None:
            found = next(((day, each) for each in name.split("; ")  # two holidays on one day
                          if wanted is None or _plain(each) in wanted), None)
            if found is not None:
                break
    if len(_NEAR) >= MAX_NEAR:
        _NEAR.clear()
    _NEAR[key] = (calendar, found)
    return found


def local_date(calendar: Calendar, ctx: "VisitorContext", shop_zone: str) -> tuple[date, str]:
    """The visitor's date (by the calendar's time zone rule, as a schedule's), and whose it is in words."""
    zone, whose = zone_for(calendar, ctx, shop_zone)
    now = (ctx.now or datetime.now(timezone.utc).replace(tzinfo=None)).replace(tzinfo=UTC)
    return now.astimezone(zone).date(), f"in {whose}"


def birthday(ctx: "VisitorContext") -> tuple[int, int] | None:
    """(month, day) of the visitor's birthday: the identified customer's, as imported, else
    the one they gave in a sign-up popup."""
    text = ctx.profile.birthday or (ctx.profile.state.birthday if ctx.profile.state is not None else None)
    return parse_birthday(text)


def parse_birthday(text: str | None) -> tuple[int, int] | None:
    """`YYYY-MM-DD`, `--MM-DD` or `MM-DD` as (month, day); None for anything else."""
    if not text:
        return None
    parts = text.lstrip("-").split("-")[-2:]
    try:
        month, day = int(parts[0]), int(parts[1])
        date(2000, month, day)  # 2000: 29 February is a birthday
    except (ValueError, IndexError):
        return None
    return month, day


def signed_up(ctx: "VisitorContext") -> date | None:
    """The day the visitor signed up: the identified customer's, else their first sign-up or login here."""
    moment = ctx.profile.customer_signed_up_at or (
        ctx.profile.state.signed_up_at if ctx.profile.state is not None else None)
    return moment.date() if moment is not None else None


def region_code(ctx: "VisitorContext") -> str:
    """The visitor's region as the `holidays` package names subdivisions ("" where it has none)."""
    code = ctx.geo.region_code
    return code if code and code in _subdivisions(ctx.geo.country) else ""


def warm() -> None:
    """Load the package's tables once (the first calendar built costs about 100 ms): at a
    shop config's loading, never on a request."""
    _holidays("US", "", datetime.now(timezone.utc).year)


@functools.lru_cache(maxsize=1024)
def _holidays(country: str, subdiv: str, year: int) -> Any:
    """One country's (and subdivision's) holidays of one year, {date: name}; {} for a country
    the package does not know."""
    try:
        return holiday_calendars.country_holidays(country, subdiv=subdiv or None, years=year, language=LANGUAGE)
    except (NotImplementedError, KeyError, ValueError):
        return {}


@functools.lru_cache(maxsize=512)
def _subdivisions(country: str) -> frozenset[str]:
    try:
        return frozenset(holiday_calendars.country_holidays(country).subdivisions)
    except (NotImplementedError, KeyError, ValueError):
        return frozenset()


def _plain(name: str) -> str:
    """A holiday's name as matched: without case, and an observed day's as its holiday's."""
    name = name.lower()
    return name[: -len(" (observed)")] if name.endswith(" (observed)") else name


def _offsets(before: int, after: int) -> list[int]:
    offsets = [0]
    for d in range(1, max(before, after) + 1):
        if d <= after:
            offsets.append(-d)  # the occasion was d days ago
        if d <= before:
            offsets.append(d)  # it is d days ahead
    return offsets


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _when(day: date, today: date) -> str:
    if day == today:
        return "is today"
    gap = (day - today).days
    return f"is in {gap} day{'s' if gap > 1 else ''} ({day:%Y-%m-%d})" if gap > 0 else \
        f"was {-gap} day{'s' if gap < -1 else ''} ago ({day:%Y-%m-%d})"


def _window(calendar: Calendar) -> str:
    def days(n: int) -> str:
        return f"{n} day{'s' if n > 1 else ''}"

    ahead, back = calendar.days_before, calendar.days_after  # an occasion ahead is one the campaign runs before
    if ahead and back:
        return f"today, in the next {days(ahead)} or the last {days(back)}"
    if ahead:
        return f"today or in the next {days(ahead)}"
    if back:
        return f"today or in the last {days(back)}"
    return "today"


def _wanted(calendar: Calendar, ctx: "VisitorContext") -> str:
    said = []
    if calendar.holidays:
        country = ctx.geo.country or "unknown"
        names = "public holiday" if calendar.any_holiday else " or ".join(calendar.holidays)
        said.append(f"{names} in {country}" + ("" if ctx.geo.country else " (no country, no holidays)"))
    if calendar.birthday:
        said.append("birthday" + ("" if birthday(ctx) else " (none known for this visitor)"))
    if calendar.anniversary:
        said.append("sign-up anniversary" + ("" if signed_up(ctx) else " (no sign-up known)"))
    return " or ".join(said)
