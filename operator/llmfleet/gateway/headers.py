"""Which headers cross the gateway: hop-by-hop ones never do, and none is ever sent twice.

Header names are compared case-insensitively: clients send ``content-length`` as readily as
``Content-Length``, and a duplicate Content-Length is a 400 at nginx.
"""

from __future__ import annotations

from collections.abc import Iterable

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "expect",
    }
)


def upstream_request_headers(
    headers: Iterable[tuple[str, str]], remote: str | None, keep_length: bool, identity: bool = False
) -> list[tuple[str, str]]:
    """The client's headers as sent upstream: hop-by-hop ones dropped (case-insensitively, so
    none is ever sent twice), ``X-Forwarded-For`` extended, and, when the gateway re-encodes the
    body (``keep_length`` false) or wants it uncompressed (``identity``), the matching headers
    left to httpx or replaced."""
    dropped = _HOP_BY_HOP | {"x-forwarded-for"}
    if not keep_length:
        dropped |= {"content-length"}
    if identity:
        dropped |= {"accept-encoding"}
    items = list(headers)
    forwarded = [(k, v) for k, v in items if k.lower() not in dropped]
    previous = [v for k, v in items if k.lower() == "x-forwarded-for"]
    chain = [*previous, remote] if remote else previous
    if chain:
        forwarded.append(("X-Forwarded-For", ", ".join(chain)))
    if identity:
        forwarded.append(("Accept-Encoding", "identity"))
    return forwarded


def response_headers(headers: Iterable[tuple[str, str]], decoded: bool) -> list[tuple[str, str]]:
    """Upstream response headers for the client (pass every repeated one, e.g. Set-Cookie);
    without length and encoding when httpx decoded the body."""
    dropped = _HOP_BY_HOP | ({"content-length", "content-encoding"} if decoded else set())
    return [(k, v) for k, v in headers if k.lower() not in dropped]
