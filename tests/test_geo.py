"""Tests for server.geo: IP geolocation with GeoIP2 City databases."""

import pathlib
from collections.abc import Iterator

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from server.geo import Geo, GeoLocator, bundled_database_path


@pytest.fixture(scope="module")
def bundled() -> Iterator[GeoLocator]:
    locator = GeoLocator(bundled_database_path())
    yield locator
    locator.close()


def write_city_database(path: pathlib.Path, database_type: str = "GeoLite2-City") -> None:
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description="Vitrine test database",
    )
    writer.insert_network(
        IPSet(["5.6.7.0/24"]),
        {
            "country": {"iso_code": "FR", "names": {"en": "France"}},
            "subdivisions": [
                {"iso_code": "IDF", "names": {"en": "Île-de-France"}},
                {"iso_code": "75", "names": {"en": "Paris"}},
            ],
            "city": {"names": {"en": "Paris"}},
            "location": {"time_zone": "Europe/Paris"},
        },
    )
    writer.insert_network(
        IPSet(["2a01:e000::/20"]),
        {
            "country": {"iso_code": "FR", "names": {"en": "France"}},
            "location": {"time_zone": "Europe/Paris"},
        },
    )
    writer.to_db_file(str(path))


@pytest.fixture
def small(tmp_path: pathlib.Path) -> Iterator[GeoLocator]:
    path = tmp_path / "city.mmdb"
    write_city_database(path)
    locator = GeoLocator(path)
    yield locator
    locator.close()


def test_bundled_database_is_found() -> None:
    path = bundled_database_path()
    assert path.name == "GeoLite2-City.mmdb"
    assert path.is_file()


def test_bundled_database_locates_a_british_address(bundled: GeoLocator) -> None:
    assert bundled.lookup("81.2.69.160") == Geo(
        country="GB",
        country_name="United Kingdom",
        region="Cambridgeshire",  # the most specific of England > Cambridgeshire
        city="Gamlingay",
        timezone="Europe/London",
        region_code="ENG",  # the first subdivision's code: what the holidays package names England by
    )


def test_bundled_database_locates_an_american_address(bundled: GeoLocator) -> None:
    geo = bundled.lookup("8.8.8.8")
    assert geo.known
    assert (geo.country, geo.timezone) == ("US", "America/Chicago")


def test_ipv4_mapped_address_is_looked_up_as_ipv4(bundled: GeoLocator) -> None:
    assert bundled.lookup("::ffff:81.2.69.160").city == "Gamlingay"


@pytest.mark.parametrize(
    "ip", [None, "", "not an ip", "999.1.1.1", "10.0.0.1", "192.168.1.5", "127.0.0.1", "::1"]
)
def test_missing_invalid_and_private_addresses_give_empty_geo(
    bundled: GeoLocator, ip: str | None
) -> None:
    geo = bundled.lookup(ip)
    assert geo == Geo()
    assert not geo.known


def test_small_database_lookup(small: GeoLocator) -> None:
    assert small.lookup("5.6.7.8") == Geo(
        country="FR",
        country_name="France",
        region="Paris",
        city="Paris",
        timezone="Europe/Paris",
        region_code="IDF",  # Île-de-France, the first of Île-de-France > Paris
    )


def test_record_without_city_or_region(small: GeoLocator) -> None:
    assert small.lookup("2a01:e123::1") == Geo(
        country="FR", country_name="France", timezone="Europe/Paris"
    )


def test_address_not_in_database_gives_empty_geo(small: GeoLocator) -> None:
    assert small.lookup("8.8.8.8") == Geo()


def test_lookup_after_close_gives_empty_geo(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "city.mmdb"
    write_city_database(path)
    locator = GeoLocator(path)
    locator.close()
    assert locator.lookup("5.6.7.8") == Geo()


def test_missing_file_error_names_the_path(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nowhere" / "GeoLite2-City.mmdb"
    with pytest.raises(FileNotFoundError, match="GeoIP database not found") as error:
        GeoLocator(missing)
    assert str(missing) in str(error.value)


def test_file_that_is_not_a_maxmind_database_is_rejected(tmp_path: pathlib.Path) -> None:
    bogus = tmp_path / "city.mmdb"
    bogus.write_text("this is not a database")
    with pytest.raises(ValueError, match="not a MaxMind DB") as error:
        GeoLocator(bogus)
    assert str(bogus) in str(error.value)


def test_database_without_cities_is_rejected(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "asn.mmdb"
    write_city_database(path, database_type="GeoLite2-ASN")
    with pytest.raises(ValueError, match="City database is needed"):
        GeoLocator(path)


def test_answers_are_kept_by_a_keyed_hash_never_by_the_address(small: GeoLocator) -> None:
    first = small.lookup("5.6.7.8")
    assert small.lookup("5.6.7.8") is first  # the second lookup is the kept answer
    assert small.lookup("10.0.0.1") == Geo()
    kept = small._cache
    assert len(kept) == 2
    assert all(isinstance(k, bytes) and len(k) == 16 for k in kept)
    assert not any(b"5.6.7.8" in k or b"10.0.0.1" in k for k in kept)
    # Another process (another key) keeps the same address under another hash.
    other = GeoLocator(small.path)
    other.lookup("5.6.7.8")
    assert set(other._cache).isdisjoint(kept)
    other.close()


def test_close_forgets_the_kept_answers(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "city.mmdb"
    write_city_database(path)
    locator = GeoLocator(path)
    assert locator.lookup("5.6.7.8").country == "FR"
    locator.close()
    assert locator.lookup("5.6.7.8") == Geo()
