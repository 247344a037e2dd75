"""The embed script and its popups part: their size budgets, and that the server serves them as they are on disk."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "static" / "vitrine.js"
POPUPS = ROOT / "static" / "popups.js"
# Every shop page downloads the embed script: keep it a small fraction of a page's weight.
GZIP_BUDGET_BYTES = 5120
# Only a page call with popups loads popups.js (triggers, caps, the dialog, sign-up, countdown).
POPUPS_GZIP_BUDGET_BYTES = 3072


def gzipped(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def test_embed_script_fits_its_gzip_budget() -> None:
    size = gzipped(SCRIPT)
    assert size <= GZIP_BUDGET_BYTES, f"static/vitrine.js is {size} bytes gzipped (budget {GZIP_BUDGET_BYTES})"


def test_popups_script_fits_its_gzip_budget() -> None:
    size = gzipped(POPUPS)
    assert size <= POPUPS_GZIP_BUDGET_BYTES, f"static/popups.js is {size} bytes gzipped (budget {POPUPS_GZIP_BUDGET_BYTES})"


def test_the_embed_script_has_no_popup_code_of_its_own() -> None:
    text = SCRIPT.read_text()
    assert "showModal" not in text and "/v1/popups.js" in text


@pytest.mark.parametrize(("path", "file"), [("/v1/vitrine.js", SCRIPT), ("/v1/popups.js", POPUPS)])
def test_served_script_is_the_file_with_a_javascript_type(client, path: str, file: Path) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.content == file.read_bytes()
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type in ("text/javascript", "application/javascript")
