"""The caching gateway: an OpenAI-compatible reverse proxy with a Redis response cache.

It sits between the public Service and the load balancer (client -> gateway -> nginx/haproxy
-> model pods) so that repeated deterministic requests never reach a GPU. ``keys`` decides what
is cacheable and under which key (pure), ``cache`` and ``semantic`` talk to Redis, ``coalesce``
merges identical concurrent requests, ``proxy`` is the aiohttp server, ``command`` the CLI.
"""
