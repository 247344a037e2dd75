"""Campaign schedules: when a campaign runs (start and end, weekdays, hours of the day),
read in the visitor's time zone (from their IP address) or the shop's, with the reasons
QA sees in `_context=1`. `now=` on a fragment URL previews another moment (parse_now)."""

from __future__ import annotations

import re
from datetime import datetime, time, timezone
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from server.context import VisitorContext

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
UTC = ZoneInfo("UTC")


def zone_named(name: str) -> ZoneInfo:
    """The IANA time zone of this name; ValueError saying so for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = sorted(z for z in available_timezones() if z.lower().endswith(name.lower().split("/")[-1]))[:3]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ' (an IANA name such as "Europe/London")'
        raise ValueError(f"{name!r} is not a time zone{hint}") from None


def valid_zone(name: str) -> str:
    zone_named(name)
    return name


def zone_setting(name: str) -> str:
    """A `timezone` key of a schedule or calendar: "visitor", "shop" or an IANA name."""
    return name if name in ("visitor", "shop") else valid_zone(name)


class Schedule(BaseModel):
    """`[campaigns.schedule]`: when the campaign runs. A time without an offset is read in
    `timezone`'s zone; every key left out means "always"."""

    model_config = ConfigDict(extra="forbid")

    starts_at: datetime | None = Field(default=None, description="from this time on")
    ends_at: datetime | None = Field(default=None, description="until this time (not included)")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=list, description="only on these weekdays"
    )
    hours: list[str] = Field(
        default_factory=list, description='only in these hours of the day, "HH:MM-HH:MM" (may cross midnight)'
    )
    timezone: str = Field(
        default="visitor", description='"visitor" (their time zone, else the shop\'s), "shop", or an IANA name',
    )

    @field_validator("hours")
    @classmethod
    def _ranges(cls, ranges: list[str]) -> list[str]:
        for text in ranges:
            found = _HOURS.match(text)
            if not found or (found.group(3) == "24" and found.group(4) != "00") or found.group(1, 2) == found.group(3, 4):
                raise ValueError(f'{text!r} is not a range of hours: write "09:00-17:30" (or "22:00-02:00" across midnight)')
        return ranges

    _zone = field_validator("timezone")(lambda cls, name: zone_setting(name))

    @model_validator(mode="after")
    def _in_order(self) -> "Schedule":
        if self.starts_at and self.ends_at and (self.starts_at.tzinfo is None) == (self.ends_at.tzinfo is None):
            if self.ends_at <= self.starts_at:
                raise ValueError(f"ends_at ({self.ends_at}) is not after starts_at ({self.starts_at})")
        return self

    @property
    def empty(self) -> bool:
        return not (self.starts_at or self.ends_at or self.days or self.hours)


def check_schedule(schedule: Schedule, ctx: "VisitorContext", shop_zone: str, check) -> None:
    """The schedule's checks, each with its reason (worded when read): start, end, weekday, hours."""
    zone, whose = zone_for(schedule, ctx, shop_zone)
    now = (ctx.now or datetime.now(timezone.utc).replace(tzinfo=None)).replace(tzinfo=timezone.utc).astimezone(zone)

    def at() -> str:
        return f"{now:%a %Y-%m-%d %H:%M} {whose}"

    if schedule.starts_at:
        start = _aware(schedule.starts_at, zone)
        check(now >= start, lambda: f"starts {start:%Y-%m-%d %H:%M %Z}, it is {at()}")
    if schedule.ends_at:
        end = _aware(schedule.ends_at, zone)
        check(now < end, lambda: f"ends {end:%Y-%m-%d %H:%M %Z}, it is {at()}")
    if schedule.days:
        day = WEEKDAYS[now.weekday()]
        check(day in schedule.days, lambda: f"runs on {'/'.join(schedule.days)}, it is {at()}")
    if schedule.hours:
        check(any(_within(now.time(), r) for r in schedule.hours), lambda: f"runs {', '.join(schedule.hours)}, it is {at()}")


def zone_for(schedule: "Schedule | Any", ctx: "VisitorContext", shop_zone: str) -> tuple[ZoneInfo, str]:
    """The zone a schedule's (or calendar's) `timezone` names for this visitor, and whose it
    is in words: theirs by their IP address, else the shop's."""
    if schedule.timezone not in ("visitor", "shop"):
        return zone_named(schedule.timezone), schedule.timezone
    if schedule.timezone == "visitor" and ctx.geo.timezone:
        try:
            return ZoneInfo(ctx.geo.timezone), f"{ctx.geo.timezone} (the visitor's)"
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return zone_named(shop_zone), f"{shop_zone} (the shop's)"


def _aware(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


def _within(now: time, text: str) -> bool:
    start_h, start_m, end_h, end_m = (int(x) for x in _HOURS.match(text).groups())  # type: ignore[union-attr]
    minute, start, end = now.hour * 60 + now.minute, start_h * 60 + start_m, end_h * 60 + end_m
    return start <= minute < end if start < end else (minute >= start or minute < end)


def parse_now(text: str, shop_zone: str) -> datetime:
    """A `now=` QA override as naive UTC: `2026-12-24`, `2026-12-24T18:00` (the shop's time
    zone) or with an offset (`2026-12-24T18:00Z`, `...+01:00`). ValueError saying what to write."""
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "+").replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"now={text!r} is not a date or time: write 2026-12-24, 2026-12-24T18:00 or 2026-12-24T18:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone_named(shop_zone))
    return moment.astimezone(timezone.utc).replace(tzinfo=None)
