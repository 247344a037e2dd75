"""The embed script: its size budget, and that the server serves it as it is on disk."""

from __future__ import annotations

import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "static" / "vitrine.js"
# Every shop page downloads it: keep it a small fraction of a page's weight.
GZIP_BUDGET_BYTES = 5120


def test_embed_script_fits_its_gzip_budget() -> None:
    size = len(gzip.compress(SCRIPT.read_bytes(), compresslevel=9))
    assert size <= GZIP_BUDGET_BYTES, f"static/vitrine.js is {size} bytes gzipped (budget {GZIP_BUDGET_BYTES})"


def test_served_script_is_the_file_with_a_javascript_type(client) -> None:
    response = client.get("/v1/vitrine.js")
    assert response.status_code == 200
    assert response.content == SCRIPT.read_bytes()
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type in ("text/javascript", "application/javascript")
