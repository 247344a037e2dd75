"""Which links Vitrine puts into shop pages: absolute http(s) URLs and paths on the shop's site.

Everything that ends up in an `href` or `src` (catalog `url` / `image_url`, campaign `link`,
a slot's `search-url`, the menu's `url`) passes `is_web_url`: imports refuse other values
with FILE:LINE, shop configs refuse them when loaded, and templates render them through the
`web_url` filter, which drops anything else. A `javascript:`, `data:` or `vbscript:` link,
a protocol-relative `//evil.example` and a `/\\evil.example` (browsers read `\\` as `/`)
are all refused.
"""

from __future__ import annotations

WEB_SCHEMES = ("http://", "https://")
RULE = "an http(s):// URL or a path starting with a single /"


def is_web_url(url: str) -> bool:
    """True for `https://host/...`, `http://host/...` and `/path...` (not `//host`)."""
    if not url or "\\" in url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url if c != " "):
        return False
    if url[0] == " " or url[-1] == " ":
        return False  # browsers strip them, so " javascript:" would run
    if url.startswith("/"):
        return not url.startswith("//")
    lowered = url.lower()
    for scheme in WEB_SCHEMES:
        if lowered.startswith(scheme):
            host = url[len(scheme):].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
            return bool(host) and "@" not in host
    return False


def web_url(url: str | None) -> str:
    """The URL when it is a web URL, else "" (the Jinja filter `web_url`)."""
    return url if url and is_web_url(url) else ""


def on_site(url: str, site: str) -> str:
    """A path made absolute on the shop's site (`site`: its base URL, "" to leave it as it is),
    so that a fragment embedded on another origin still links to the shop; other URLs as they are."""
    if site and url.startswith("/") and is_web_url(url):
        return site.rstrip("/") + url
    return url


def site_base(site_url: str, public_url: str, host: str, port: int) -> str:
    """What a shop's `site_url` resolves paths against: its own value, or for "self" (a shop
    whose pages this server serves, the demo's) this server's public URL, else the address
    it listens on. Never the request's Host header, which anyone can set."""
    if site_url != "self":
        return site_url
    if public_url:
        return public_url
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}"
