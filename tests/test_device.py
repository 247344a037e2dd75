"""Tests for server.device: device class, OS, browser and bot detection."""

import pytest

from server.device import Device, _parse_cached, parse_device

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.6367.60 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) HeadlessChrome/124.0.6367.29 Safari/537.36"
)


@pytest.mark.parametrize(
    ("user_agent", "device_class", "os", "browser"),
    [
        (IPHONE, "mobile", "iOS", "Mobile Safari"),
        (IPAD, "tablet", "iOS", "Mobile Safari"),
        (ANDROID_PHONE, "mobile", "Android", "Chrome Mobile"),
        (ANDROID_TABLET, "tablet", "Android", "Chrome"),
        (WINDOWS_CHROME, "desktop", "Windows", "Chrome"),
        (MAC_SAFARI, "desktop", "Mac OS X", "Safari"),
    ],
)
def test_browsers_get_class_os_and_browser(
    user_agent: str, device_class: str, os: str, browser: str
) -> None:
    assert parse_device(user_agent) == Device(
        device_class=device_class, os=os, browser=browser, is_bot=False
    )


@pytest.mark.parametrize("user_agent", [GOOGLEBOT, GOOGLEBOT_SMARTPHONE])
def test_crawlers_are_bots(user_agent: str) -> None:
    device = parse_device(user_agent)
    assert device.is_bot
    assert device.device_class == "bot"
    assert device.browser == "Googlebot"


def test_headless_chrome_is_a_desktop_browser_not_a_bot() -> None:
    device = parse_device(HEADLESS_CHROME)
    assert device.is_bot is False
    assert device.device_class == "desktop"
    assert device.os == "Linux"


@pytest.mark.parametrize(
    "user_agent",
    ["curl/8.5.0", "Wget/1.21.4", "python-requests/2.31.0", "python-httpx/0.27.0"],
)
def test_http_clients_are_other_not_bots(user_agent: str) -> None:
    device = parse_device(user_agent)
    assert device.device_class == "other"
    assert device.is_bot is False


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_missing_user_agent_is_other(user_agent: str | None) -> None:
    assert parse_device(user_agent) == Device(
        device_class="other", os="", browser="", is_bot=False
    )


def test_unknown_user_agent_is_other_with_empty_names() -> None:
    device = parse_device("definitely not a browser")
    assert device.device_class == "other"
    assert (device.os, device.browser) == ("", "")


def test_repeated_user_agent_is_parsed_once() -> None:
    user_agent = WINDOWS_CHROME + " cache-test"
    before = _parse_cached.cache_info()
    first = parse_device(user_agent)
    second = parse_device(user_agent)
    after = _parse_cached.cache_info()
    assert first is second
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 1


def test_very_long_user_agent_is_truncated_not_rejected() -> None:
    assert parse_device(IPHONE + "x" * 100_000).device_class == "mobile"
