"""Which request and response headers the router passes on between a client and an upstream."""

from __future__ import annotations

from collections.abc import Iterable

# Hop-by-hop headers (RFC 9110 §7.6.1) and headers the router recomputes.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)


def end_to_end_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers, including those the Connection header names."""
    kept = []
    named: set[bytes] | None = None  # the names the Connection headers list
    for header in headers:
        name = header[0].lower()
        if name in _HOP_BY_HOP:
            if name == b"connection":
                if named is None:
                    named = set()
                named.update(token.strip().lower() for token in header[1].split(b","))
            continue
        kept.append(header)
    if named:
        kept = [header for header in kept if header[0].lower() not in named]
    return kept
