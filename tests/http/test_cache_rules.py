"""The shared cache's rules (hishel's RFC 9111 core) and conditional requests on the wire."""

from __future__ import annotations

import time
from email.utils import formatdate, parsedate_to_datetime

import pytest

import llm_async_attachments as laa
from llm_async_attachments.caps import Budget
from llm_async_attachments.errors import AttachmentHTTPStatusError
from llm_async_attachments.http import cache_rules as caching
from llm_async_attachments.http import fetch_content
from llm_async_attachments.http.cache_rules import Fresh, Miss, Revalidate, Stored
from llm_async_attachments.testing import samples
from tests.support.raw_server import RawServer, response

URL = "https://files.example.test/cat.png"
SENT = {"Accept-Encoding": "gzip, deflate", "User-Agent": "llm-async-attachments"}
PNG = samples.png()
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"


def ago(seconds: float) -> str:
    return formatdate(time.time() - seconds, usegmt=True)


def stored(*headers: tuple[str, str], url: str = URL) -> Stored:
    kept = caching.to_store(url, SENT, 200, headers, "image/png")
    assert kept is not None, headers
    return kept


def looked_up(kept: Stored, url: str = URL, sent: dict[str, str] = SENT):
    return caching.lookup(url, sent, kept)


# Fresh, stale, revalidated --------------------------------------------------------


def test_a_response_within_its_max_age_answers_without_a_request():
    kept = stored(("Cache-Control", "max-age=60"), ("ETag", '"v1"'))
    assert looked_up(kept) == Fresh(kept)


def test_nothing_kept_is_a_miss():
    assert caching.lookup(URL, SENT, None) == Miss()


def test_a_response_kept_for_another_url_is_a_miss():
    kept = stored(("Cache-Control", "max-age=60"))
    assert looked_up(kept, url="https://files.example.test/dog.png") == Miss()


def test_max_age_0_is_revalidated_with_the_etag():
    kept = stored(("Cache-Control", "max-age=0"), ("ETag", '"v1"'))
    assert looked_up(kept) == Revalidate(kept, {"If-None-Match": '"v1"'})


def test_a_response_older_than_its_max_age_is_revalidated_with_its_last_modified():
    kept = stored(
        ("Cache-Control", "max-age=60"), ("Date", ago(120)), ("Last-Modified", LAST_MODIFIED)
    )
    assert looked_up(kept) == Revalidate(kept, {"If-Modified-Since": LAST_MODIFIED})


def test_the_conditions_of_an_earlier_request_do_not_hide_the_ones_to_send():
    kept = stored(("Cache-Control", "max-age=0"), ("ETag", '"v1"'))
    sent_last_time = {**SENT, "If-None-Match": '"v1"'}
    assert looked_up(kept, sent=sent_last_time) == Revalidate(kept, {"If-None-Match": '"v1"'})


def test_both_validators_are_sent_when_both_are_kept():
    kept = stored(
        ("Cache-Control", "max-age=60"),
        ("Date", ago(120)),
        ("ETag", '"v1"'),
        ("Last-Modified", LAST_MODIFIED),
    )
    result = looked_up(kept)
    assert isinstance(result, Revalidate)
    assert dict(result.headers) == {"If-None-Match": '"v1"', "If-Modified-Since": LAST_MODIFIED}


def test_no_cache_is_revalidated_even_while_fresh():
    kept = stored(("Cache-Control", "no-cache, max-age=3600"), ("ETag", '"v1"'))
    assert looked_up(kept) == Revalidate(kept, {"If-None-Match": '"v1"'})


def test_an_expires_in_the_past_is_stale():
    kept = stored(("Expires", ago(3600)), ("ETag", '"v1"'))
    assert looked_up(kept) == Revalidate(kept, {"If-None-Match": '"v1"'})


def test_an_expires_in_the_future_is_fresh():
    kept = stored(("Expires", formatdate(time.time() + 3600, usegmt=True)))
    assert looked_up(kept) == Fresh(kept)


def test_s_maxage_rules_over_max_age_in_a_shared_cache():
    longer = stored(("Cache-Control", "max-age=0, s-maxage=3600"), ("ETag", '"v1"'))
    shorter = stored(("Cache-Control", "max-age=3600, s-maxage=0"), ("ETag", '"v1"'))
    assert looked_up(longer) == Fresh(longer)
    assert looked_up(shorter) == Revalidate(shorter, {"If-None-Match": '"v1"'})


def test_a_stale_response_without_a_validator_is_a_miss():
    fresh_then = (("cache-control", "max-age=60"), ("date", ago(30)))
    kept = Stored(URL, tuple(SENT.items()), fresh_then, "image/png")
    assert looked_up(kept) == Fresh(kept)
    stale_now = (("cache-control", "max-age=60"), ("date", ago(120)))
    assert looked_up(Stored(URL, tuple(SENT.items()), stale_now, "image/png")) == Miss()


def test_a_response_without_a_date_ages_from_when_it_was_received():
    kept = stored(("Cache-Control", "max-age=60"))
    date = parsedate_to_datetime(dict(kept.headers)["date"])
    assert abs(date.timestamp() - time.time()) < 5


def test_an_old_last_modified_alone_makes_a_response_heuristically_fresh():
    kept = stored(("Last-Modified", ago(30 * 86400)))  # 10%: fresh for three days
    assert looked_up(kept) == Fresh(kept)


# Vary -------------------------------------------------------------------------------


def test_vary_on_a_header_sent_alike_answers():
    kept = stored(("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding"))
    assert looked_up(kept) == Fresh(kept)


def test_vary_on_a_header_sent_differently_does_not_answer():
    sent_in_french = {**SENT, "Accept-Language": "fr"}
    kept = caching.to_store(
        URL,
        sent_in_french,
        200,
        [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language"), ("ETag", '"fr"')],
        "text/plain",
    )
    assert kept is not None
    assert caching.lookup(URL, sent_in_french, kept) == Fresh(kept)
    assert looked_up(kept) == Revalidate(kept, {"If-None-Match": '"fr"'})


def test_vary_star_never_answers_unchecked():
    kept = stored(("Cache-Control", "max-age=60"), ("Vary", "*"), ("ETag", '"v1"'))
    assert looked_up(kept) == Revalidate(kept, {"If-None-Match": '"v1"'})


# What is not kept -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [("Cache-Control", "no-store, max-age=60")],
        [("Cache-Control", "private, max-age=60")],
        [("Cache-Control", "max-age=0")],  # never fresh, nothing to revalidate with
        [],  # no freshness, no validator
    ],
    ids=["no-store", "private", "max-age=0 without a validator", "nothing"],
)
def test_responses_that_must_not_or_need_not_be_kept(headers):
    assert caching.to_store(URL, SENT, 200, headers, "image/png") is None


@pytest.mark.parametrize("status", [206, 304])
def test_partial_and_not_modified_responses_are_not_kept(status):
    headers = [("Cache-Control", "max-age=60"), ("ETag", '"v1"')]
    assert caching.to_store(URL, SENT, status, headers, "image/png") is None


def test_a_response_to_credentials_is_kept_only_when_it_says_it_may_be_shared():
    url = "https://alice:secret@files.example.test/cat.png"
    private = caching.to_store(url, SENT, 200, [("Cache-Control", "max-age=60")], None)
    shared = caching.to_store(url, SENT, 200, [("Cache-Control", "public, max-age=60")], None)
    assert private is None
    assert shared is not None
    assert b"secret" not in shared.to_bytes()
    assert shared.url == "https://alice:***@files.example.test/cat.png"


def test_an_authorization_header_counts_as_credentials_and_is_never_kept():
    sent = {**SENT, "Authorization": "Bearer token-secret"}
    assert caching.to_store(URL, sent, 200, [("Cache-Control", "max-age=60")], None) is None
    kept = caching.to_store(URL, sent, 200, [("Cache-Control", "s-maxage=60")], None)
    assert kept is not None
    assert b"token-secret" not in kept.to_bytes()


def test_cookies_and_connection_fields_are_not_kept():
    kept = stored(
        ("Cache-Control", "max-age=60"),
        ("Set-Cookie", "session=alice-secret"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Content-Type", "image/png"),
    )
    names = [name for name, _ in kept.headers]
    assert "content-type" in names
    assert not {"set-cookie", "connection", "keep-alive"} & set(names)


# Freshening after a 304 -------------------------------------------------------------


def test_a_matching_304_freshens_the_kept_headers_but_not_the_bodys():
    kept = stored(
        ("Cache-Control", "max-age=60"),
        ("Date", ago(120)),
        ("ETag", '"v1"'),
        ("Content-Type", "image/png"),
    )
    assert isinstance(looked_up(kept), Revalidate)
    fresh = caching.refreshed(
        kept, 304, [("ETag", '"v1"'), ("Cache-Control", "max-age=600"), ("Content-Type", "x/y")]
    )
    assert fresh is not None
    headers = dict(fresh.headers)
    assert (headers["cache-control"], headers["content-type"]) == ("max-age=600", "image/png")
    assert (fresh.url, fresh.content_type) == (kept.url, kept.content_type)
    assert looked_up(fresh) == Fresh(fresh)  # the 304 had no Date: it counts from now


def test_a_304_for_another_etag_does_not_freshen():
    kept = stored(("Cache-Control", "max-age=0"), ("ETag", '"v1"'))
    assert caching.refreshed(kept, 304, [("ETag", '"v2"')]) is None


def test_a_304_that_forbids_keeping_does_not_freshen():
    kept = stored(("Cache-Control", "max-age=0"), ("ETag", '"v1"'))
    assert caching.refreshed(kept, 304, [("Cache-Control", "no-store")]) is None


def test_a_full_response_to_a_revalidation_replaces_the_kept_one():
    kept = stored(("Cache-Control", "max-age=0"), ("ETag", '"v1"'))
    assert caching.refreshed(kept, 200, [("ETag", '"v2"'), ("Cache-Control", "max-age=60")]) is None


# The disk tier's bytes --------------------------------------------------------------


def test_a_stored_record_survives_its_bytes():
    kept = stored(("Cache-Control", "max-age=60"), ("ETag", '"v1"'), ("Date", ago(10)))
    again = Stored.from_bytes(kept.to_bytes())
    assert again == kept
    assert looked_up(again) == Fresh(again)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b"{" * 100_000,
        b'{"format": 1}',
        b'{"format": 2, "url": "u", "request_headers": [], "headers": [], "content_type": null}',
        b'{"format": 1, "url": 3, "request_headers": [], "headers": [], "content_type": null}',
        b'{"format": 1, "url": "u", "request_headers": [["a"]], "headers": [], '
        b'"content_type": null}',
        b'{"format": 1, "url": "u", "request_headers": [], "headers": [["a", 1]], '
        b'"content_type": null}',
        b'{"format": 1, "url": "u", "request_headers": [], "headers": [], "content_type": 5}',
        b'{"format": 1, "url": "u", "request_headers": [], "headers": [], "content_type": null, '
        b'"extra": 0}',
    ],
)
def test_anything_else_is_a_value_error(data):
    with pytest.raises(ValueError, match="not a stored response"):
        Stored.from_bytes(data)


# Conditional requests on the wire ---------------------------------------------------


async def fetch(url, conditional=None):
    meter = Budget(1024 * 1024, 1024 * 1024).meter(url)
    return await fetch_content(url, meter, laa.get_config(), conditional=conditional)


def not_modified_unless_asked(head):
    if b'if-none-match: "v1"' in head.lower():
        # A Content-Length on a 304 describes the representation, not a body to read.
        yield response(304, [("ETag", '"v1"'), ("Content-Length", str(len(PNG)))])
    else:
        yield response(200, [("Content-Type", "image/png"), ("ETag", '"v1"')], PNG)


async def test_a_conditional_request_gets_a_304_and_reads_no_body():
    with RawServer(not_modified_unless_asked) as server:
        fetched = await fetch(f"{server.base_url}/x.png", {"If-None-Match": '"v1"'})
    assert b'if-none-match: "v1"' in server.heads[0].lower()
    assert (fetched.status, fetched.type, fetched.content) == (304, None, None)
    assert ("etag", '"v1"') in fetched.headers
    assert ("if-none-match", '"v1"') in fetched.request_headers
    assert ("user-agent", "llm-async-attachments") in fetched.request_headers


async def test_a_conditional_request_whose_answer_changed_reads_the_new_body():
    with RawServer(not_modified_unless_asked) as server:
        fetched = await fetch(f"{server.base_url}/x.png", {"If-None-Match": '"v0"'})
    assert (fetched.status, fetched.type, fetched.content) == (200, "image/png", PNG)


async def test_a_304_to_a_request_that_set_no_condition_is_an_http_error():
    with (
        RawServer(lambda head: [response(304, [("ETag", '"v1"')])]) as server,
        pytest.raises(AttachmentHTTPStatusError, match="HTTP 304") as caught,
    ):
        await fetch(f"{server.base_url}/x.png")
    assert caught.value.status_code == 304


async def test_the_request_headers_kept_never_hold_the_urls_credentials():
    with RawServer(not_modified_unless_asked) as server:
        url = f"http://user:pw@127.0.0.1:{server.port}/x.png"
        fetched = await fetch(url)
    assert b"authorization: basic" in server.heads[0].lower()  # they were sent
    assert fetched.status == 200
    assert fetched.request_headers
    assert not [name for name, _ in fetched.request_headers if name.lower() == "authorization"]


async def test_a_kept_response_revalidated_on_the_wire_is_fresh_again():
    def answer(head):
        if b"if-none-match" in head.lower():
            yield response(304, [("ETag", '"v1"'), ("Cache-Control", "max-age=600")])
        else:
            yield response(
                200,
                [("Content-Type", "image/png"), ("ETag", '"v1"'), ("Cache-Control", "no-cache")],
                PNG,
            )

    with RawServer(answer) as server:
        url = f"{server.base_url}/x.png"
        first = await fetch(url)
        kept = caching.to_store(
            url, dict(first.request_headers), first.status, first.headers, first.type
        )
        assert kept is not None
        check = caching.lookup(url, dict(first.request_headers), kept)
        assert isinstance(check, Revalidate)
        second = await fetch(url, check.headers)
        fresh = caching.refreshed(kept, second.status, second.headers)
    assert second.status == 304
    assert fresh is not None and fresh.content_type == "image/png"
    assert caching.lookup(url, dict(first.request_headers), fresh) == Fresh(fresh)
    assert server.requests() == 2
