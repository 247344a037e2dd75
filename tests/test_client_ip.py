"""Tests for server.client_ip: the visitor address behind trusted proxies."""

import ipaddress

import pytest

from server.client_ip import client_ip, parse_networks

TRUSTED = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])


def test_parse_networks_accepts_addresses_and_networks() -> None:
    assert parse_networks(["127.0.0.1", "10.0.0.0/8", "::1", " 2001:db8::/32 ", ""]) == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("2001:db8::/32"),
    )


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", "300.1.1.1", "10.0.0.0/8/8"])
def test_parse_networks_rejects_bad_input_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match="invalid trusted proxy") as error:
        parse_networks([value])
    assert repr(value) in str(error.value)


def test_untrusted_peer_is_the_client_and_its_header_is_ignored() -> None:
    assert client_ip("203.0.113.7", "198.51.100.1", TRUSTED) == "203.0.113.7"


def test_no_trusted_proxies_means_header_is_never_used() -> None:
    assert client_ip("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"


def test_trusted_peer_without_header_is_the_client() -> None:
    assert client_ip("127.0.0.1", None, TRUSTED) == "127.0.0.1"
    assert client_ip("127.0.0.1", "", TRUSTED) == "127.0.0.1"


def test_trusted_peer_forwards_the_client() -> None:
    assert client_ip("127.0.0.1", "198.51.100.1", TRUSTED) == "198.51.100.1"


def test_walks_from_the_right_past_trusted_proxies() -> None:
    # The visitor forged the first entry; the proxies appended the rest.
    header = "1.1.1.1, 198.51.100.1, 10.1.2.3, 10.0.0.5"
    assert client_ip("127.0.0.1", header, TRUSTED) == "198.51.100.1"


def test_all_hops_trusted_gives_the_leftmost() -> None:
    assert client_ip("127.0.0.1", "10.0.0.9, 10.0.0.5", TRUSTED) == "10.0.0.9"


def test_malformed_entry_stops_the_walk_at_the_last_valid_hop() -> None:
    assert client_ip("127.0.0.1", "198.51.100.1, unknown, 10.0.0.5", TRUSTED) == "10.0.0.5"
    assert client_ip("127.0.0.1", "garbage", TRUSTED) == "127.0.0.1"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("198.51.100.1:51234", "198.51.100.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ('"[2001:db8::1]:443"', "2001:db8::1"),
    ],
)
def test_ports_and_brackets_are_stripped(header: str, expected: str) -> None:
    assert client_ip("127.0.0.1", header, TRUSTED) == expected


def test_ipv6_trusted_peer() -> None:
    assert client_ip("::1", "198.51.100.1", TRUSTED) == "198.51.100.1"


def test_ipv4_mapped_peer_matches_ipv4_trusted_proxy() -> None:
    assert client_ip("::ffff:127.0.0.1", "198.51.100.1", TRUSTED) == "198.51.100.1"


@pytest.mark.parametrize("peer", [None, "", "testclient"])
def test_peer_that_is_not_an_address_gives_none(peer: str | None) -> None:
    assert client_ip(peer, "198.51.100.1", TRUSTED) is None
