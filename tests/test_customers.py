"""Known customers: the shop's secret key, customer and order imports, identify, export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from server.cli import main
from server.customers.keys import ShopKeys, derive_key, sign
from server.store import open_store


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def vitrine(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args])


def created(data_dir: Path, shop: str = "myshop") -> str:
    """Create the shop; the secret key `vitrine shops create` printed."""
    result = vitrine(data_dir, "shops", "create", shop, "--origin", "https://www.myshop.example")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("Secret key: ")]
    assert len(lines) == 1, result.stdout
    return lines[0].removeprefix("Secret key: ")


# -- the shop's secret key ------------------------------------------------------------


def test_shops_create_prints_the_key_and_shops_key_shows_and_rotates_it(data_dir: Path) -> None:
    key = created(data_dir)
    assert key.startswith("vsk_") and len(key) > 30
    shown = vitrine(data_dir, "shops", "key", "myshop")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == key
    assert created(data_dir, "othershop") != key  # each shop has its own

    rotated = vitrine(data_dir, "shops", "key", "myshop", "--rotate")
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.stdout.strip()
    assert new_key.startswith("vsk_") and new_key != key
    assert "old key no longer works" in rotated.stderr
    assert vitrine(data_dir, "shops", "key", "myshop").stdout.strip() == new_key

    unknown = vitrine(data_dir, "shops", "key", "nope")
    assert unknown.exit_code == 2 and "unknown shop 'nope'" in unknown.stderr


def test_a_signature_is_checked_against_the_current_key_of_its_own_shop(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'v.db'}")
    store.migrate()
    clock = [0.0]
    keys = ShopKeys(store, ["old-server-secret", "server-secret"], clock=lambda: clock[0])
    key = keys.key("a")
    assert key == derive_key("server-secret", "a", 0)
    good = sign(key, "c-42")
    assert keys.verify("a", "c-42", good)
    assert keys.verify("a", "c-42", good.upper())  # hex in either case
    assert not keys.verify("a", "c-43", good)  # another customer's id
    assert not keys.verify("b", "c-42", good)  # another shop's signature
    assert keys.verify("a", "c-42", sign(derive_key("old-server-secret", "a", 0), "c-42"))  # server key rotation
    # Rotated on another worker: this one takes the new version within VERSION_TTL_S.
    other = ShopKeys(store, ["server-secret"])
    new_key = other.rotate("a")
    assert keys.verify("a", "c-42", good)
    clock[0] += 1.5
    assert not keys.verify("a", "c-42", good)
    assert keys.verify("a", "c-42", sign(new_key, "c-42"))
    store.close()
