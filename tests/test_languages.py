"""The visitor's languages from Accept-Language."""

import pytest

from server.languages import accepted_languages, speaks


@pytest.mark.parametrize("header, languages", [
    ("de-AT,de;q=0.9,en;q=0.5", ("de-at", "de", "en")),
    ("en;q=0.5, fr-CH", ("fr-ch", "en")),
    ("fr;q=0.8, it;q=0.8, *;q=0.1", ("fr", "it")),
    ("en;q=0, es", ("es",)),
    ("en;q=abc, <script>, es-419", ("es-419",)),
    ("", ()), (None, ()),
])
def test_languages_by_preference(header, languages) -> None:
    assert accepted_languages(header) == languages


def test_a_language_matches_its_regional_variants_and_a_variant_only_itself() -> None:
    assert speaks(("de-at", "en"), "de") and speaks(("de-at",), "DE-AT")
    assert not speaks(("de",), "de-at") and not speaks(("en", "de"), "de") and not speaks((), "en")
