"""The HTTP layer: URL attachments fetched with httpx2, capped, typed, cancellation-safe.

Knows nothing of llm. One module per concept: :mod:`.urls` (which URLs and
redirect targets are fetched), :mod:`.pool` (connection pools per event
loop), :mod:`.exchange` (requests, redirects and the responses they open),
:mod:`.retries`, :mod:`.decoding` (bounded decompression), :mod:`.body`,
:mod:`.cancellation`, :mod:`.address_policy` (which network addresses an
untrusted URL may reach) and :mod:`.fetch`, the entry points.
:mod:`.cache_rules` holds the shared cache's RFC 9111 rules; it is not
imported here, so that hishel is loaded only once a response carries caching
headers.
"""

from .exchange import REQUEST_HEADERS
from .fetch import Fetched, fetch_content, fetch_type

__all__ = ["REQUEST_HEADERS", "Fetched", "fetch_content", "fetch_type"]
