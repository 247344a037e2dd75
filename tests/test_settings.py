"""Settings: defaults, VITRINE_* variables, the TOML file, precedence, the key file, the docs."""

from __future__ import annotations

import dataclasses
import re
import stat
import tomllib
from pathlib import Path

import pytest

from server.settings import Settings, SettingsError, setting_fields

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = Settings.load(environ={})
    assert settings == Settings()
    assert settings.data_dir == Path("var")
    assert settings.database_url == ""
    assert settings.shops_dir is None and settings.geoip_database is None
    assert settings.secret_keys == ()
    assert settings.trusted_proxies == ("127.0.0.1", "::1")
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.cookie_name == "vitrine"
    assert settings.token_max_age_days == 400
    assert settings.visit_timeout_minutes == 30
    assert settings.debug is False


def test_environment_variables_override_defaults(tmp_path: Path) -> None:
    settings = Settings.load(
        environ={
            "VITRINE_PORT": "9001",
            "VITRINE_DEBUG": "yes",
            "VITRINE_DATA_DIR": str(tmp_path),
            "VITRINE_SHOPS_DIR": str(tmp_path / "elsewhere"),
            "VITRINE_DATABASE_URL": "postgresql+psycopg://u@db/vitrine",
            "VITRINE_PUBLIC_URL": "https://vitrine.example.com",
            "OTHER_PORT": "1",  # not ours
        }
    )
    assert settings.port == 9001
    assert settings.debug is True
    assert settings.data_dir == tmp_path
    assert settings.resolved_shops_dir == (tmp_path / "elsewhere").resolve()
    assert settings.resolved_database_url == "postgresql+psycopg://u@db/vitrine"
    assert settings.public_url == "https://vitrine.example.com"


@pytest.mark.parametrize(
    "text, expected",
    [("1", True), ("true", True), ("On", True), ("YES", True), ("0", False), ("false", False), ("off", False), ("", False)],
)
def test_boolean_spellings(text: str, expected: bool) -> None:
    assert Settings.load(environ={"VITRINE_DEBUG": text}).debug is expected


def test_tuple_settings_from_comma_separated_environment() -> None:
    settings = Settings.load(
        environ={"VITRINE_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1,,", "VITRINE_SECRET_KEYS": "old,new"}
    )
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.1")
    assert settings.secret_keys == ("old", "new")
    assert settings.signing_keys() == ["old", "new"]
    assert Settings.load(environ={"VITRINE_TRUSTED_PROXIES": ""}).trusted_proxies == ()


def test_toml_file_at_top_level(tmp_path: Path) -> None:
    config = write(
        tmp_path / "vitrine.toml",
        'port = 8100\ndebug = true\ntrusted_proxies = ["10.1.2.3", "10.1.2.4"]\ndata_dir = "/srv/vitrine"\n',
    )
    settings = Settings.load(config, environ={})
    assert settings.port == 8100
    assert settings.debug is True
    assert settings.trusted_proxies == ("10.1.2.3", "10.1.2.4")
    assert settings.data_dir == Path("/srv/vitrine")


def test_toml_file_under_a_vitrine_table(tmp_path: Path) -> None:
    config = write(tmp_path / "all.toml", '[vitrine]\nport = 8200\nworkers = 3\n')
    settings = Settings.load(config, environ={})
    assert (settings.port, settings.workers) == (8200, 3)


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path / "vitrine.toml", "port = 8300\n")
    assert Settings.load(environ={"VITRINE_CONFIG": str(config)}).port == 8300
    # An explicit file (the --config flag) wins over VITRINE_CONFIG.
    other = write(tmp_path / "other.toml", "port = 8301\n")
    assert Settings.load(other, environ={"VITRINE_CONFIG": str(config)}).port == 8301


def test_precedence_keywords_then_environment_then_file(tmp_path: Path) -> None:
    config = write(tmp_path / "vitrine.toml", 'port = 1111\nhost = "0.0.0.0"\nworkers = 4\n')
    env = {"VITRINE_PORT": "2222", "VITRINE_WORKERS": "5"}
    assert Settings.load(config, environ={}).port == 1111
    from_env = Settings.load(config, environ=env)
    assert (from_env.port, from_env.workers, from_env.host) == (2222, 5, "0.0.0.0")
    from_kw = Settings.load(config, environ=env, port=3333, workers=None)
    # None means "flag not given": it does not hide the lower layers.
    assert (from_kw.port, from_kw.workers, from_kw.host) == (3333, 5, "0.0.0.0")


@pytest.mark.parametrize(
    "env_name, value",
    [("VITRINE_PORT", "abc"), ("VITRINE_WORKERS", "2.5"), ("VITRINE_DEBUG", "maybe"), ("VITRINE_MAX_BODY_BYTES", "64k")],
)
def test_bad_values_name_the_environment_variable(env_name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.load(environ={env_name: value})
    assert env_name in str(raised.value)
    assert repr(value) in str(raised.value)


def test_bad_value_in_the_file_names_the_setting(tmp_path: Path) -> None:
    config = write(tmp_path / "vitrine.toml", 'port = "eighty"\n')
    with pytest.raises(SettingsError, match="VITRINE_PORT"):
        Settings.load(config, environ={})


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = write(tmp_path / "vitrine.toml", "port = 8000\nprot = 8001\n")
    with pytest.raises(SettingsError, match="unknown setting.*prot"):
        Settings.load(config, environ={})
    nested = write(tmp_path / "nested.toml", "[vitrine]\ndebug = true\nverbose = true\n")
    with pytest.raises(SettingsError, match="verbose"):
        Settings.load(nested, environ={})


def test_unknown_keyword_is_an_error() -> None:
    with pytest.raises(SettingsError, match="colour"):
        Settings.load(environ={}, colour="blue")


def test_missing_or_broken_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        Settings.load(tmp_path / "nope.toml", environ={})
    broken = write(tmp_path / "broken.toml", "port = \n")
    with pytest.raises(SettingsError, match="broken.toml"):
        Settings.load(broken, environ={})


def test_signing_key_is_created_once_and_kept_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    settings = Settings.load(environ={}, data_dir=data_dir)
    key_file = data_dir / "secret_key"
    assert not key_file.exists()
    keys = settings.signing_keys()
    assert len(keys) == 1 and len(keys[0]) >= 32
    assert key_file.read_text().strip() == keys[0]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings.signing_keys() == keys
    # Another process on the same data directory reads the same key.
    assert Settings.load(environ={}, data_dir=data_dir).signing_keys() == keys
    assert [p.name for p in data_dir.iterdir()] == ["secret_key"]  # no temporary files left
    # A different data directory gets a different key.
    assert Settings.load(environ={}, data_dir=tmp_path / "other").signing_keys() != keys


def test_configured_keys_need_no_key_file(tmp_path: Path) -> None:
    settings = Settings.load(environ={"VITRINE_SECRET_KEYS": "k1,k2"}, data_dir=tmp_path)
    assert settings.signing_keys() == ["k1", "k2"]
    assert not (tmp_path / "secret_key").exists()


def test_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.load(environ={}, data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'vitrine.db'}"
    # A relative data dir is taken from the current directory.
    monkeypatch.chdir(tmp_path)
    relative = Settings.load(environ={"VITRINE_DATA_DIR": "state"})
    assert relative.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'state' / 'vitrine.db'}"
    assert relative.resolved_shops_dir == tmp_path.resolve() / "state" / "shops"


# -- docs/settings.md -----------------------------------------------------------------


def documented_default(value: object) -> str:
    """A default as docs/settings.md writes it: the text one would put in the variable."""
    if value is None or value == "" or value == ():
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"


def documented_sections() -> dict[str, str]:
    """`### VITRINE_NAME` heading -> the text of its section, whitespace collapsed."""
    text = DOCS.read_text(encoding="utf-8")
    parts = re.split(r"^### `?(VITRINE_[A-Z0-9_]+)`?[ \t]*$", text, flags=re.M)
    sections = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        assert name not in sections, f"{name} is documented twice"
        body = re.split(r"^#{1,3} ", body, maxsplit=1, flags=re.M)[0]
        sections[name] = " ".join(body.split())
    return sections


def test_every_setting_is_documented() -> None:
    sections = documented_sections()
    for f in setting_fields():
        name = f"VITRINE_{f.name.upper()}"
        assert name in sections, f"{name} is not documented in docs/settings.md"
        section = sections[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert f"Default: {documented_default(default)}" in section, (
            f"{name}: docs/settings.md should say 'Default: {documented_default(default)}'"
        )
        help_text = " ".join(f.metadata["help"].split())
        assert help_text in section, f"{name}: docs/settings.md should include its help text: {help_text}"


def test_every_documented_setting_exists() -> None:
    known = {f"VITRINE_{f.name.upper()}" for f in setting_fields()} | {"VITRINE_CONFIG"}
    documented = set(documented_sections())
    assert documented - known == set(), "documented but no longer a setting"
    assert "VITRINE_CONFIG" in documented


def test_settings_docs_explain_precedence_and_the_settings_command(tmp_path: Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert "vitrine settings" in text
    assert "precedence" in text.lower()
    # The example file in the docs is a settings file that loads.
    example = re.search(r"```toml\n(.*?)```", text, flags=re.S)
    assert example, "docs/settings.md should show an example TOML file"
    assert tomllib.loads(example.group(1)), "the example sets something"
    Settings.load(write(tmp_path / "example.toml", example.group(1)), environ={})
