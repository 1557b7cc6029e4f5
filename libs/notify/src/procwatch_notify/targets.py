"""SSRF protection: where a channel may send to.

A target URL is refused when it is not https (unless private targets are allowed) or when
any address its host resolves to is loopback, private, link-local, unspecified, multicast,
reserved, shared (CGNAT) or a cloud metadata address. Checked twice: when the API creates or
updates a channel (`check_target`), and again on every connection the notifier opens
(`resolve_checked`, used by procwatch_notify.http, which connects to the very address it
checked: a DNS answer that changes between the check and the connect, "DNS rebinding",
cannot redirect the request).

`allow_private=True` (PROCWATCH_NOTIFIER_ALLOW_PRIVATE_TARGETS=1, set by `procwatch up` and the
tests) lets private and loopback targets through and allows plain http for them only; cloud
metadata addresses stay refused whatever the setting.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS IPv6;
# Alibaba; Azure's wire server; Oracle's). Never a notification target.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16", "169.254.170.2",
    "192.0.0.192",
))
CGNAT = ipaddress.ip_network("100.64.0.0/10")


class TargetRefused(ValueError):
    """The target may not be sent to; `reason` says why (shown to the user by the API)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def address_refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why this resolved address may not be connected to, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_multicast or address.is_unspecified:
        return f"{address} is not a unicast host address"
    if allow_private:
        return None
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_private or address.is_reserved or not address.is_global \
            or (isinstance(address, ipaddress.IPv4Address) and address in CGNAT):
        return f"{address} is a private or reserved address"
    return None


def check_url(url: str, allow_private: bool) -> tuple[str, int]:
    """The URL's host and port, after the checks that need no DNS (scheme, host present)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise TargetRefused("the URL must start with https://")
    if parts.scheme == "http" and not allow_private:
        raise TargetRefused("the URL must use https")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not supported")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_addresses(host: str, addresses: Iterable[str], allow_private: bool) -> list[str]:
    """The addresses `host` resolved to, if every one may be connected to (one bad answer
    refuses the target: which one a client picks is not ours to predict)."""
    checked: list[str] = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = address_refusal(address, allow_private)
        if reason is not None:
            raise TargetRefused(f"{host} resolves to {reason}")
        checked.append(str(address))
    if not checked:
        raise TargetRefused(f"{host} does not resolve")
    return checked


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _addresses(infos: list) -> list[str]:
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_target(url: str, allow_private: bool) -> None:
    """Raise TargetRefused unless `url` is a target the notifier may send to (resolves DNS)."""
    host, port = check_url(url, allow_private)
    literal = _literal(host)
    if literal is not None:
        check_addresses(host, [literal], allow_private)
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"{host} does not resolve ({exc})") from None
    check_addresses(host, _addresses(infos), allow_private)


async def resolve_checked(host: str, port: int, allow_private: bool) -> list[str]:
    """Resolve `host` (without blocking the loop) and check every address."""
    literal = _literal(host)
    if literal is not None:
        return check_addresses(host, [literal], allow_private)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"{host} does not resolve ({exc})") from None
    return check_addresses(host, _addresses(infos), allow_private)
