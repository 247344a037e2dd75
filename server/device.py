"""Describe a visitor's device (class, OS, browser, bot) from the User-Agent header."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from user_agents import parse as parse_user_agent

# Real browser UAs are a few hundred characters; anything far longer is junk or an
# attack, and truncating keeps the cache from holding megabytes of it.
MAX_USER_AGENT_LENGTH = 1024

# Command-line and library HTTP clients are usually a shop's own scripts or
# monitoring, not crawlers, so they are "other" rather than bots.
HTTP_CLIENT_PREFIXES = ("curl/", "wget/", "python-requests/", "python-httpx/", "httpx/")


@dataclass(frozen=True)
class Device:
    device_class: str  # "mobile" | "tablet" | "desktop" | "bot" | "other"
    os: str
    browser: str
    is_bot: bool


UNKNOWN_DEVICE = Device(device_class="other", os="", browser="", is_bot=False)


def parse_device(user_agent: str | None) -> Device:
    """Classify a User-Agent string; never raises.

    Crawlers (Googlebot, bingbot ...) are bots. Headless Chrome is a desktop browser,
    not a bot, because the browser tests drive headless Chromium and must see what a
    visitor sees.
    """
    if not user_agent or not user_agent.strip():
        return UNKNOWN_DEVICE
    return _parse_cached(user_agent.strip()[:MAX_USER_AGENT_LENGTH])


# Parsing a new UA string costs about 0.5 ms and a shop sees few distinct ones, so
# each is parsed once per process.
@lru_cache(maxsize=4096)
def _parse_cached(user_agent: str) -> Device:
    parsed = parse_user_agent(user_agent)
    os_name = _family(parsed.os.family)
    browser = _family(parsed.browser.family)
    if user_agent.lower().startswith(HTTP_CLIENT_PREFIXES):
        return Device(device_class="other", os=os_name, browser=browser, is_bot=False)
    is_bot = parsed.is_bot and "HeadlessChrome" not in user_agent
    if is_bot:
        device_class = "bot"
    elif parsed.is_tablet:
        device_class = "tablet"
    elif parsed.is_mobile:
        device_class = "mobile"
    elif parsed.is_pc or "HeadlessChrome" in user_agent:
        device_class = "desktop"
    else:
        device_class = "other"
    return Device(device_class=device_class, os=os_name, browser=browser, is_bot=is_bot)


def _family(name: str | None) -> str:
    # ua-parser reports "Other" when it does not know; an empty string is easier
    # to test for in templates and audience rules.
    return "" if not name or name == "Other" else name
