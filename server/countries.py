"""Country names to ISO 3166-1 alpha-2 codes, so imported history and live visitors agree.

Live visitors get codes from the GeoIP lookup; imports often carry names ("United
Kingdom", "EIRE"). Everything stored is a code, or "" when the name is not a country.
"""

from __future__ import annotations

from functools import lru_cache

import pycountry

# Names seen in shop exports that pycountry does not resolve, or resolves wrongly.
ALIASES = {
    "EIRE": "IE", "USA": "US", "RSA": "ZA", "UK": "GB", "GREAT BRITAIN": "GB", "ENGLAND": "GB",
    "SCOTLAND": "GB", "WALES": "GB", "NORTHERN IRELAND": "GB", "CZECH REPUBLIC": "CZ",
    "KOREA": "KR", "SOUTH KOREA": "KR", "RUSSIA": "RU", "HOLLAND": "NL",
}
# Not countries: regions with no single code, or placeholders.
NOT_COUNTRIES = {"UNSPECIFIED", "EUROPEAN COMMUNITY", "CHANNEL ISLANDS", "UNKNOWN", "OTHER", "N/A", ""}


@lru_cache(maxsize=1024)
def to_iso(name: str) -> str:
    """The alpha-2 code for a country name or code; "" when it names no single country."""
    key = name.strip().upper()
    if key in NOT_COUNTRIES:
        return ""
    if key in ALIASES:
        return ALIASES[key]
    if len(key) == 2 and pycountry.countries.get(alpha_2=key):
        return key
    try:
        return pycountry.countries.lookup(name.strip()).alpha_2
    except LookupError:
        return ""


# Countries whose English name takes "the": "visiting from the United Kingdom".
_WITH_THE = {"BS", "GM", "KM", "MV", "NL", "PH", "SC", "VA"}
_RENAMED = {"RU": "Russia"}  # short names where pycountry has none


def geo_name(code: str) -> str:
    """A country code named as the GeoIP database names countries ("Ireland", "United
    Kingdom": no "the"), for a location made from a code alone; the code for one that names
    no country."""
    return display_name(code).removeprefix("the ") or code


@lru_cache(maxsize=512)
def display_name(code: str) -> str:
    """A country code as a shopper reads it in a sentence ("the United Kingdom", "Ireland",
    "South Korea"); "" for a code that names no country."""
    code = code.strip().upper()
    country = pycountry.countries.get(alpha_2=code) if len(code) == 2 else None
    if country is None:
        return ""
    name = _RENAMED.get(code) or getattr(country, "common_name", None) or country.name
    the = code in _WITH_THE or name.startswith("United ") or name.endswith((" Islands", " Republic"))
    return f"the {name}" if the else name
