"""Headers sent upstream: never a hop-by-hop one, never one twice, whatever the client's casing."""

from __future__ import annotations

import httpx
from multidict import CIMultiDict

from llmfleet.gateway.headers import response_headers, upstream_request_headers

CLIENT = [
    ("host", "gateway:8080"),
    ("content-length", "42"),
    ("accept-encoding", "gzip, br"),
    ("connection", "keep-alive"),
    ("Transfer-Encoding", "chunked"),
    ("authorization", "Bearer k"),
    ("x-forwarded-for", "10.0.0.1"),
    ("Cookie", "a=1"),
    ("Cookie", "b=2"),
]


def test_cacheable_request_headers_leave_length_and_encoding_to_the_gateway() -> None:
    headers = CIMultiDict(upstream_request_headers(CLIENT, "10.0.0.9", keep_length=False, identity=True))
    for name in ("host", "content-length", "connection", "transfer-encoding"):
        assert name not in headers
    assert headers.getall("accept-encoding") == ["identity"]
    assert headers.getall("x-forwarded-for") == ["10.0.0.1, 10.0.0.9"]
    assert headers.getall("authorization") == ["Bearer k"]
    assert headers.getall("cookie") == ["a=1", "b=2"]  # repeated headers survive
    # what httpx then sends: exactly one Content-Length, the body's
    request = httpx.Request(
        "POST", "http://lb/v1/chat/completions", headers=list(headers.items()), content=b"{}"
    )
    assert request.headers.get_list("content-length") == ["2"]


def test_streamed_request_keeps_the_clients_length() -> None:
    headers = CIMultiDict(upstream_request_headers(CLIENT, None, keep_length=True))
    assert headers.getall("content-length") == ["42"]
    assert headers.getall("accept-encoding") == ["gzip, br"]
    assert headers.getall("x-forwarded-for") == ["10.0.0.1"]
    assert "transfer-encoding" not in headers


def test_response_headers_keep_repeated_ones_and_drop_what_decoding_changed() -> None:
    upstream = httpx.Headers(
        [("Content-Type", "application/json"), ("Content-Length", "10"), ("Content-Encoding", "gzip"),
         ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Connection", "close")]
    )  # fmt: skip
    raw = response_headers(upstream.multi_items(), decoded=False)
    assert [k for k, _ in raw] == [
        "content-type",
        "content-length",
        "content-encoding",
        "set-cookie",
        "set-cookie",
    ]
    decoded = response_headers(upstream.multi_items(), decoded=True)
    assert decoded == [("content-type", "application/json"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]
