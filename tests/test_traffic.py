"""Tests for server.traffic: medium and source of a page view."""

import pytest

from server.traffic import TrafficSource, classify_source

SHOP = "https://www.shop.example/products/red-shoes"


def classify(query: str = "", referrer: str | None = None) -> TrafficSource:
    url = f"{SHOP}?{query}" if query else SHOP
    return classify_source(url, referrer)


def test_no_referrer_and_no_utm_is_direct() -> None:
    assert classify() == TrafficSource(medium="direct", source="", campaign="", utm={})
    assert classify_source(None, None).medium == "direct"


@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("gclid=abc", "google"),
        ("gbraid=abc", "google"),
        ("wbraid=abc", "google"),
        ("dclid=abc", "google"),
        ("msclkid=abc", "bing"),
    ],
)
def test_click_ids_are_paid(query: str, source: str) -> None:
    result = classify(query, referrer="https://www.google.com/")
    assert (result.medium, result.source) == ("paid", source)


@pytest.mark.parametrize("medium", ["cpc", "ppc", "paid", "paidsearch", "paid_social",
                                    "display", "cpm", "banner", "CPC"])
def test_paid_utm_mediums(medium: str) -> None:
    result = classify(f"utm_source=Newsy&utm_medium={medium}&utm_campaign=spring")
    assert result == TrafficSource(
        medium="paid",
        source="newsy",
        campaign="spring",
        utm={"utm_source": "Newsy", "utm_medium": medium, "utm_campaign": "spring"},
    )


def test_fbclid_with_paid_utm_is_paid_facebook() -> None:
    result = classify("fbclid=xyz&utm_medium=paid_social")
    assert (result.medium, result.source) == ("paid", "facebook")


def test_fbclid_alone_is_social_facebook() -> None:
    result = classify("fbclid=xyz")
    assert (result.medium, result.source) == ("social", "facebook")


@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("utm_medium=email&utm_source=spring_sale", "spring_sale"),
        ("utm_medium=newsletter", ""),
        ("utm_source=weekly-newsletter", "weekly-newsletter"),
        ("utm_source=mailchimp&utm_campaign=x", "mailchimp"),
        ("utm_source=Klaviyo&utm_medium=flow", "klaviyo"),
    ],
)
def test_email_campaigns(query: str, source: str) -> None:
    result = classify(query)
    assert (result.medium, result.source) == ("email", source)


@pytest.mark.parametrize("medium", ["social", "social-network", "sm"])
def test_social_utm_mediums(medium: str) -> None:
    result = classify(f"utm_source=instagram&utm_medium={medium}")
    assert (result.medium, result.source) == ("social", "instagram")


@pytest.mark.parametrize(
    ("referrer", "source"),
    [
        ("https://www.google.com/", "google"),
        ("https://www.google.co.uk/search?q=shoes", "google"),
        ("https://google.de/", "google"),
        ("https://www.bing.com/search?q=shoes", "bing"),
        ("https://duckduckgo.com/", "duckduckgo"),
        ("https://search.yahoo.com/search?p=shoes", "yahoo"),
        ("https://yandex.ru/search/?text=shoes", "yandex"),
        ("https://www.baidu.com/s?wd=shoes", "baidu"),
        ("https://www.ecosia.org/search?q=shoes", "ecosia"),
        ("https://www.qwant.com/?q=shoes", "qwant"),
        ("https://www.startpage.com/", "startpage"),
        ("https://search.brave.com/search?q=shoes", "brave"),
    ],
)
def test_search_engine_referrers_are_organic(referrer: str, source: str) -> None:
    result = classify(referrer=referrer)
    assert (result.medium, result.source) == ("organic", source)


@pytest.mark.parametrize(
    ("referrer", "source"),
    [
        ("https://www.facebook.com/", "facebook"),
        ("https://l.facebook.com/l.php?u=x", "facebook"),
        ("https://m.facebook.com/", "facebook"),
        ("https://www.instagram.com/", "instagram"),
        ("https://t.co/abc", "twitter"),
        ("https://x.com/someone", "twitter"),
        ("https://www.linkedin.com/feed/", "linkedin"),
        ("https://lnkd.in/abc", "linkedin"),
        ("https://www.pinterest.com/pin/1", "pinterest"),
        ("https://pinterest.co.uk/pin/1", "pinterest"),
        ("https://www.reddit.com/r/shoes", "reddit"),
        ("https://www.tiktok.com/@shop", "tiktok"),
        ("https://www.youtube.com/watch?v=1", "youtube"),
        ("https://web.whatsapp.com/", "whatsapp"),
    ],
)
def test_social_referrers(referrer: str, source: str) -> None:
    result = classify(referrer=referrer)
    assert (result.medium, result.source) == ("social", source)


@pytest.mark.parametrize(
    ("referrer", "source"),
    [
        ("https://mail.google.com/mail/u/0/", "gmail"),
        ("https://outlook.live.com/mail/0/", "outlook"),
        ("https://mail.yahoo.com/d/folders/1", "yahoo"),
    ],
)
def test_webmail_referrers_are_email(referrer: str, source: str) -> None:
    result = classify(referrer=referrer)
    assert (result.medium, result.source) == ("email", source)


@pytest.mark.parametrize(
    "referrer",
    ["https://www.shop.example/cart", "https://shop.example/", "https://blog.shop.example/post"],
)
def test_same_registrable_domain_is_internal(referrer: str) -> None:
    assert classify(referrer=referrer).medium == "internal"


def test_country_second_level_domains_are_not_merged() -> None:
    url = "https://shop-a.co.uk/"
    assert classify_source(url, "https://www.shop-a.co.uk/basket").medium == "internal"
    other = classify_source(url, "https://shop-b.co.uk/")
    assert (other.medium, other.source) == ("referral", "shop-b.co.uk")


def test_other_referrer_is_referral_from_its_host() -> None:
    result = classify(referrer="https://www.fashion-blog.example:8443/post?id=3")
    assert result == TrafficSource(medium="referral", source="fashion-blog.example")


def test_utm_source_names_the_source_of_a_referral() -> None:
    result = classify("utm_source=partner&utm_medium=affiliate",
                      referrer="https://partner.example/")
    assert (result.medium, result.source) == ("referral", "partner")


def test_utm_source_without_referrer_is_referral_from_it() -> None:
    result = classify("utm_source=Podcast&utm_campaign=ep12")
    assert result.medium == "referral"
    assert result.source == "podcast"
    assert result.campaign == "ep12"


def test_utm_medium_naming_a_medium_is_used() -> None:
    result = classify("utm_source=google&utm_medium=organic")
    assert (result.medium, result.source) == ("organic", "google")


def test_only_utm_parameters_present_are_kept() -> None:
    result = classify("utm_source=a&utm_term=shoes&utm_content=hero&utm_medium=&other=1")
    assert dict(result.utm) == {"utm_source": "a", "utm_term": "shoes", "utm_content": "hero"}


def test_result_is_hashable() -> None:
    assert hash(classify("utm_source=a&utm_medium=cpc"))


@pytest.mark.parametrize(
    ("page_url", "referrer"),
    [
        ("http://[::1", "http://[broken"),
        ("::::", "not a url"),
        ("https://shop.example/?%zz=%%&utm_source", ""),
        ("", "https://"),
    ],
)
def test_malformed_urls_never_raise(page_url: str, referrer: str) -> None:
    result = classify_source(page_url, referrer)
    assert result == TrafficSource(medium="direct", source="")
