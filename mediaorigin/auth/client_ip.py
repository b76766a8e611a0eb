"""The viewer's IP address behind reverse proxies: X-Forwarded-For, trusted hops only.

Each proxy appends the address it received the connection from, so the list reads
`client, proxy1, proxy2` and the TCP peer is the last proxy. Only the entries written by
proxies we trust mean anything: walk from the right while the address is a trusted proxy
and take the first untrusted one. Anything left of it was written by the client and is
ignored (the classic spoofing hole is taking the leftmost entry).

A malformed entry stops the walk: the request is attributed to the trusted hop that passed
it on, never to an address guessed from garbage. When every entry is trusted (an internal
client), the leftmost one is the client.

Several X-Forwarded-For header lines must be joined with "," in order before calling
(`", ".join(request.headers.getall("X-Forwarded-For", []))`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_PORT = re.compile(r"[0-9]{1,5}")


@lru_cache(maxsize=8192)  # the same few peers ask again and again (proxies, crowds)
def parse_ip(text: str) -> IPAddress | None:
    """One address as proxies write it, or None when malformed.

    Accepts `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` and
    `[2001:db8::1]:443`; IPv4-mapped IPv6 (`::ffff:1.2.3.4`) comes back as IPv4.
    """
    s = text.strip()
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            return None
        host, rest = s[1:end], s[end + 1 :]
        if rest and not (rest.startswith(":") and _valid_port(rest[1:])):
            return None
    elif s.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        host, port = s.split(":")
        if not _valid_port(port):
            return None
    else:
        host = s
    try:
        ip = ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _valid_port(text: str) -> bool:
    return _PORT.fullmatch(text) is not None and 0 < int(text) <= 65535


def parse_networks(text: str) -> list[IPNetwork]:
    """`"10.0.0.0/8, ::1/128"` → networks; a bare address is a /32 or /128.

    Host bits are allowed (`10.1.2.3/8` is `10.0.0.0/8`); blanks are skipped.
    """
    networks: list[IPNetwork] = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {item!r} (expected e.g. 10.0.0.0/8)") from None
    return networks


def client_ip(
    peer: str, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> IPAddress:
    """The client's address: the peer, or the rightmost untrusted X-Forwarded-For entry.

    X-Forwarded-For is read only when the TCP peer itself is a trusted proxy.
    """
    current = parse_ip(peer)
    if current is None:
        raise ValueError(f"peer address is not an IP address: {peer!r}")
    if not forwarded_for or not _trusted(current, trusted_proxies):
        return current
    for entry in reversed(forwarded_for.split(",")):
        hop = parse_ip(entry)
        if hop is None:
            return current  # garbage: stay with the trusted hop that handed it to us
        current = hop
        if not _trusted(hop, trusted_proxies):
            return hop
    return current  # every hop trusted: the leftmost is an internal client


def _trusted(ip: IPAddress, trusted_proxies: Sequence[IPNetwork]) -> bool:
    return any(ip in network for network in trusted_proxies)
