"""The regions a shop's `consent_regions` may name, as ISO 3166-1 alpha-2 country lists."""

from __future__ import annotations

# The 27 member states of the European Union (Greece is "GR" in ISO 3166, "EL" in EU usage).
EU = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
})
# The European Economic Area: the EU, Iceland, Liechtenstein and Norway (where the GDPR applies).
EEA = EU | {"IS", "LI", "NO"}
REGIONS: dict[str, frozenset[str]] = {"EU": EU, "EEA": EEA}


def countries_of(names: list[str]) -> frozenset[str]:
    """The countries `names` cover: a region's members, or the country code itself."""
    covered: set[str] = set()
    for name in names:
        covered |= REGIONS.get(name.upper(), {name.upper()})
    return frozenset(covered)
