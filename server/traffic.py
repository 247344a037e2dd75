"""Classify where a page view came from (medium and source) from its URL and referrer.

Rules, first match wins:

1. **paid**: the page URL carries an ad click id (gclid, gbraid, wbraid, dclid,
   msclkid) or ``utm_medium`` is a paid medium (cpc, ppc, paid, paidsearch,
   paid_social, display, cpm, banner ...). Source: ``utm_source``, else the ad network
   the click id belongs to, else the referrer.
2. **email**: ``utm_medium`` is email/newsletter, or ``utm_source`` contains email,
   newsletter, mailchimp or klaviyo.
3. **social**: ``utm_medium`` is social, social-network, social-media or sm.
4. Other ``utm_medium`` values that name a medium (organic, referral) are taken as is.
5. The referrer host: a search engine (google.*, bing.com, duckduckgo.com, yahoo.*,
   yandex.*, baidu.com, ecosia.org, qwant.com, startpage.com, search.brave.com) is
   **organic**; a social network (facebook, instagram, t.co, twitter, x.com, linkedin,
   pinterest.*, reddit, tiktok, youtube, whatsapp) is **social**; webmail
   (mail.google.com, outlook.live.com, mail.yahoo.com) is **email**; the shop's own
   registrable domain is **internal**; anything else is **referral**.
6. No referrer: a ``fbclid`` alone means a Facebook link (Facebook adds it to organic
   posts too, so it is social unless ``utm_medium`` says paid); a ``utm_source`` means
   **referral** from that source; otherwise **direct**.

``utm_source`` always names the source when present (lower-cased); otherwise the
source is a well-known name ("google", "facebook") or the referrer host. Malformed
URLs count as absent; nothing here raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

# Click id -> ad network it belongs to.
PAID_CLICK_IDS = {
    "gclid": "google",
    "gbraid": "google",
    "wbraid": "google",
    "dclid": "google",
    "msclkid": "bing",
}
PAID_MEDIUMS = frozenset({
    "cpc", "ppc", "paid", "paidsearch", "paid-search", "paid_search", "paid_social",
    "paid-social", "paidsocial", "display", "cpm", "cpv", "cpa", "banner",
    "retargeting", "remarketing",
})
EMAIL_MEDIUMS = frozenset({"email", "e-mail", "e_mail", "newsletter"})
EMAIL_SOURCE_MARKERS = ("email", "newsletter", "mailchimp", "klaviyo")
SOCIAL_MEDIUMS = frozenset({"social", "social-network", "social_network", "social-media",
                            "social_media", "sm"})
# utm_medium values that already are one of our mediums.
PLAIN_MEDIUMS = frozenset({"organic", "referral"})

# Matched on the host and its parent domains, so l.facebook.com is facebook.com.
SEARCH_DOMAINS = {
    "bing.com": "bing",
    "duckduckgo.com": "duckduckgo",
    "baidu.com": "baidu",
    "ecosia.org": "ecosia",
    "qwant.com": "qwant",
    "startpage.com": "startpage",
    "search.brave.com": "brave",
}
SOCIAL_DOMAINS = {
    "facebook.com": "facebook",
    "fb.com": "facebook",
    "instagram.com": "instagram",
    "t.co": "twitter",
    "twitter.com": "twitter",
    "x.com": "twitter",
    "linkedin.com": "linkedin",
    "lnkd.in": "linkedin",
    "reddit.com": "reddit",
    "tiktok.com": "tiktok",
    "youtube.com": "youtube",
    "youtu.be": "youtube",
    "whatsapp.com": "whatsapp",
    "wa.me": "whatsapp",
}
WEBMAIL_HOSTS = {
    "mail.google.com": "gmail",
    "outlook.live.com": "outlook",
    "outlook.office.com": "outlook",
    "outlook.office365.com": "outlook",
    "mail.yahoo.com": "yahoo",
}
# Brands that run one site per country (google.de, google.co.uk, yahoo.co.jp).
_COUNTRY_TLD = r"\.(?:[a-z]{2,3}|co|com|ac|ne|or)(?:\.[a-z]{2})?$"
SEARCH_BRANDS = re.compile(r"(?:^|\.)(google|yahoo|yandex)" + _COUNTRY_TLD)
SOCIAL_BRANDS = re.compile(r"(?:^|\.)(pinterest)" + _COUNTRY_TLD)
# Second-level labels under which a country TLD sells names (example.co.uk); no public
# suffix list is bundled, and this covers the shops' usual domains.
_SECOND_LEVEL_SUFFIXES = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or"})


@dataclass(frozen=True)
class TrafficSource:
    medium: str  # "direct" | "organic" | "paid" | "social" | "email" | "referral" | "internal"
    source: str  # e.g. "google", "facebook", a referrer host, or utm_source
    campaign: str = ""
    # The utm_* parameters present in the page URL, values as given.
    utm: Mapping[str, str] = field(default_factory=dict, hash=False)


def classify_source(page_url: str | None, referrer: str | None) -> TrafficSource:
    """Medium and source of a page view; see the module docstring for the rules."""
    params = _query_params(page_url)
    utm = {key: params[key] for key in UTM_KEYS if params.get(key)}
    utm_source = utm.get("utm_source", "").lower()
    utm_medium = utm.get("utm_medium", "").lower()
    campaign = utm.get("utm_campaign", "")
    referrer_host = _host(referrer)
    page_host = _host(page_url)

    def result(medium: str, source: str) -> TrafficSource:
        return TrafficSource(medium=medium, source=utm_source or source,
                             campaign=campaign, utm=utm)

    referrer_medium, referrer_source = _classify_referrer(referrer_host, page_host)
    # Facebook's in-app browser often sends no referrer; fbclid still names it.
    fallback_source = referrer_source or ("facebook" if "fbclid" in params else "")

    click_network = next((net for key, net in PAID_CLICK_IDS.items() if key in params), "")
    if click_network or utm_medium in PAID_MEDIUMS:
        return result("paid", click_network or fallback_source)
    if utm_medium in EMAIL_MEDIUMS or any(m in utm_source for m in EMAIL_SOURCE_MARKERS):
        return result("email", fallback_source)
    if utm_medium in SOCIAL_MEDIUMS:
        return result("social", fallback_source)
    if utm_medium in PLAIN_MEDIUMS:
        return result(utm_medium, fallback_source)
    if referrer_host:
        return result(referrer_medium, referrer_source)
    if "fbclid" in params:
        return result("social", fallback_source)
    if utm_source:
        return result("referral", utm_source)
    return result("direct", "")


def referrer_host(referrer: str | None) -> str:
    """The host a page came from, without "www." and port ("" when absent or malformed)."""
    return _host(referrer)


def _classify_referrer(host: str, page_host: str) -> tuple[str, str]:
    if not host:
        return "direct", ""
    if host in WEBMAIL_HOSTS:
        return "email", WEBMAIL_HOSTS[host]
    if match := SEARCH_BRANDS.search(host):
        return "organic", match.group(1)
    if name := _lookup_domain(host, SEARCH_DOMAINS):
        return "organic", name
    if match := SOCIAL_BRANDS.search(host):
        return "social", match.group(1)
    if name := _lookup_domain(host, SOCIAL_DOMAINS):
        return "social", name
    if page_host and _registrable_domain(host) == _registrable_domain(page_host):
        return "internal", host
    return "referral", host


def _lookup_domain(host: str, domains: Mapping[str, str]) -> str:
    labels = host.split(".")
    for start in range(len(labels) - 1):
        name = domains.get(".".join(labels[start:]))
        if name:
            return name
    return ""


def _registrable_domain(host: str) -> str:
    labels = host.split(".")
    keep = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL_SUFFIXES:
        keep = 3
    return ".".join(labels[-keep:])


def _host(url: str | None) -> str:
    """Lower-case host of ``url`` without "www." and port; "" if absent or malformed."""
    if not url:
        return ""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".")
    return host[4:] if host.startswith("www.") else host


def _query_params(url: str | None) -> dict[str, str]:
    """First value of each query parameter of ``url``; {} if absent or malformed."""
    if not url:
        return {}
    try:
        query = urlsplit(url.strip()).query
        parsed = parse_qs(query, keep_blank_values=True, max_num_fields=200)
    except ValueError:
        return {}
    return {key.lower(): values[0].strip() for key, values in parsed.items()}
