"""Where a model server may fetch a model from over HTTP (pure).

A model URI makes the serving pod issue a request inside the cluster's network. Pointed at the
pod's own loopback, a link-local address or a cloud provider's instance metadata service, that
request can read credentials the resource's author should never see (server-side request forgery).
So ``http(s)://`` sources naming such a host are refused unless the operator is configured to allow
them. Host names are judged as written: a name that a DNS server resolves to a private address is
not caught here, which is why the metadata services' well-known names are listed explicitly.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

ALLOW_ENV = "MLROLLOUTS_ALLOW_PRIVATE_MODEL_HOSTS"
"""The environment variable (``true``) that lets model URIs name these hosts."""

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
"""Names cloud providers give their instance metadata services."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)

_HTTP_SCHEMES = ("http", "https")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused_host_reason(host: str) -> str | None:
    """Why a model server may not fetch from ``host``; ``None`` when it may."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        return "a cloud instance metadata service"
    if name == "localhost" or name.endswith(".localhost"):
        return "a loopback address"
    address = parse_address(name)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud instance metadata service"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address (it reaches the local host)"
    return None


def parse_address(name: str) -> IPAddress | None:
    """The IP address ``name`` denotes, including the legacy IPv4 forms HTTP clients still accept
    (``2130706433``, ``0x7f.1``, ``127.1``); ``None`` for a host name."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if not name or not all(c in "0123456789abcdefx." for c in name) or not name[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None


def model_uri_refusal(uri: str, field: str, allow_private_hosts: bool = False) -> str | None:
    """Why the model source ``uri`` at ``field`` is refused by the policy, naming the field and
    the setting that allows it; ``None`` when it is allowed."""
    if allow_private_hosts:
        return None
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError as exc:
        return f"{field}: {uri!r} is not a valid URI: {exc}"
    if parts.scheme.lower() not in _HTTP_SCHEMES or not host:
        return None
    reason = refused_host_reason(host)
    if reason is None:
        return None
    return (
        f"{field}: host {host!r} of {uri!r} is {reason}; model servers may not fetch from loopback, "
        f"link-local or cloud metadata addresses unless the operator allows it "
        f"({ALLOW_ENV}=true, Helm value operator.allowPrivateModelHosts)"
    )


def env_allows_private_hosts(value: str | None) -> bool:
    """``MLROLLOUTS_ALLOW_PRIVATE_MODEL_HOSTS``: ``true``/``1``/``yes`` allow; anything else does not."""
    return (value or "").strip().lower() in ("true", "1", "yes")
