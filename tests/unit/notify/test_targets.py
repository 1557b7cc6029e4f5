"""SSRF classification: which resolved addresses a channel may never reach."""

from __future__ import annotations

import ipaddress

import pytest

from procwatch_notify.targets import TargetRefused, address_refusal, check_target, check_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("address", [
    "127.0.0.1", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.10.10", "fe80::1", "fc00::1",
    "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1",
])
def test_private_loopback_link_local_refused(address):
    assert address_refusal(ipaddress.ip_address(address), allow_private=False) is not None


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200"])
def test_metadata_refused_even_when_private_allowed(address):
    assert "metadata" in address_refusal(ipaddress.ip_address(address), allow_private=True)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address), allow_private=False) is None


def test_private_allowed_lets_loopback_and_http_through():
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    check_target("http://127.0.0.1:9/hook", allow_private=True)


@pytest.mark.parametrize(("url", "why"), [
    ("http://93.184.216.34/hook", "https"),
    ("ftp://example.com/x", "https"),
    ("https://127.0.0.1/hook", "loopback"),
    ("https://[::1]:8443/hook", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "metadata"),
    ("https://localhost/hook", "loopback"),
    ("https://user:pw@93.184.216.34/", "credentials"),
    ("https:///nohost", "no host"),
])
def test_refused_urls(url, why):
    with pytest.raises(TargetRefused, match=why):
        check_target(url, allow_private=False)


def test_check_url_gives_host_and_default_port():
    assert check_url("https://hooks.example.com/x", False) == ("hooks.example.com", 443)
