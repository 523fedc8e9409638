"""The origin policy on its own: which handshakes may open a socket."""

import pytest

from realtime.limits.origins import SAME_HOST, OriginPolicy


def test_no_origin_is_a_non_browser_client_and_allowed():
    """Without an Origin header the handshake is not from a browser page; it is allowed."""
    assert SAME_HOST.allows(None, "example.com")


@pytest.mark.parametrize("origin, host", [
    ("http://example.com", "example.com"),
    ("https://example.com", "example.com"),
    ("http://127.0.0.1:8888", "127.0.0.1:8888"),
    ("HTTP://Example.COM", "example.com"),
])
def test_page_of_the_same_host_is_allowed(origin, host):
    """An origin whose host[:port] is the Host header is allowed by default."""
    assert SAME_HOST.allows(origin, host)


@pytest.mark.parametrize("origin, host", [
    ("http://evil.example", "example.com"),
    ("http://example.com.evil.example", "example.com"),
    ("http://example.com:8080", "example.com"),
    ("null", "example.com"),
    ("", "example.com"),
    ("http://example.com", None),
])
def test_other_origins_are_refused_by_default(origin, host):
    """A different host, port, a "null" origin or a missing Host header is refused."""
    assert not SAME_HOST.allows(origin, host)


def test_allowlist_is_an_exact_match():
    """Listed origins are allowed; look-alikes with another scheme or port are not."""
    policy = OriginPolicy(["https://app.example.com", "http://localhost:3000/"])
    assert policy.allows("https://app.example.com", "api.example.com")
    assert policy.allows("http://localhost:3000", "api.example.com")
    assert not policy.allows("http://app.example.com", "api.example.com")
    assert not policy.allows("https://app.example.com:444", "api.example.com")
    assert not policy.allows("https://sub.app.example.com", "api.example.com")


def test_empty_entries_are_ignored():
    """An empty item (from a trailing comma) allows nothing."""
    assert OriginPolicy(["", " "]).allowed == frozenset()
