"""Which URLs are not downloaded: the real plugins' classes, against loopback servers.

llm-mistral, llm-openai-plugin and llm-openrouter send some URL attachments to their API
as URLs, and llm-gemini YouTube links (llm_async_attachments/integration/url_support.py
says which, and where that was read). For
those, the file server must see no request at all when the type is given, and no
body read when it is not; their API stub must get the URL itself; a type they
inline must still be fetched, before execute() reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from types import SimpleNamespace
from typing import Any, ClassVar

import httpx
import llm
import pytest
import respx

import llm_async_attachments as laa
from llm_async_attachments.config import Config
from llm_async_attachments.integration.prepare import plan_for
from llm_async_attachments.integration.url_support import (
    KNOWN_URL_SUPPORT,
    url_patterns,
    url_support,
)
from llm_async_attachments.testing import samples
from tests.support.models import Carrier

# Both plugins build new API clients, loading TLS certificates on the event loop, for
# every prompt: llm-mistral 0.16 two (the mistralai SDK makes a sync and an async
# httpx2 client), 0.2 s here on a loaded machine; not attachment I/O. So these tests
# allow 0.5 s, and the file server answers after 1 s: a blocking download of any
# attachment still fails them.
pytestmark = pytest.mark.no_leaks(blocking_threshold=0.5)
LATENCY = 1.0
KiB = 1024


def use(**changes):
    """The suite's config (strict guard) with ``changes``, for this test."""
    laa.configure(dataclasses.replace(laa.get_config(), **changes))


# --- llm-mistral ------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm_mistral(_openai_server):
    """The plugin module, after one sync prompt (no attachments) to the stub.

    llm-mistral's newest releases need llm >= 0.36; under llm 0.30 (make test-oldest)
    pip installs 0.15, which needs llm >= 0.26: either is tested here. 0.16's mistralai
    SDK imports its modules and builds its pydantic schemas on first use, hundreds
    of milliseconds once per process: start-up, not attachment I/O, so it is done
    here, before any loop runs (as tests/conftest.py's warm_up() does for openai).
    """
    module = pytest.importorskip("llm_mistral")
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        _mistral_stubbed(module, _openai_server, monkeypatch),
    ):
        model = module.Mistral("mistral/loopback", "loopback", True, True, True, True)
        assert model.prompt("warm up", key="loopback").text() == "ok"
    return module


@pytest.fixture
def mistral_api(llm_mistral, openai_server, monkeypatch):
    """Mistral's API, answered by the loopback OpenAI-compatible stub (same paths)."""
    with _mistral_stubbed(llm_mistral, openai_server, monkeypatch):
        yield openai_server


@contextlib.contextmanager
def _mistral_stubbed(llm_mistral, server, monkeypatch):
    """Send llm-mistral's API calls to ``server``.

    llm-mistral takes no base URL. 0.16 talks through the mistralai SDK, whose one
    server table is pointed at the stub here. 0.15 posts to https://api.mistral.ai
    with httpx, literally: respx forwards those requests to the stub and lets every
    other one (the file server's, the forwarding itself) through untouched.
    """
    stub = httpx.URL(server.base_url)
    if hasattr(llm_mistral, "MistralClient"):  # 0.16: the mistralai SDK (on httpx2)
        from mistralai.client import sdkconfiguration

        address = f"http://{stub.host}:{stub.port}"
        monkeypatch.setitem(sdkconfiguration.SERVERS, sdkconfiguration.SERVER_GLOBAL, address)
        yield
        return

    def target(request: httpx.Request) -> httpx.URL:
        return request.url.copy_with(scheme=stub.scheme, host=stub.host, port=stub.port)

    def answer(response: httpx.Response) -> httpx.Response:
        headers = {"content-type": response.headers["content-type"]}
        return httpx.Response(response.status_code, headers=headers, content=response.content)

    async def forward(request: httpx.Request) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            json_body = {"content-type": "application/json"}
            return answer(
                await client.request(
                    request.method, target(request), content=request.content, headers=json_body
                )
            )

    def forward_sync(request: httpx.Request) -> httpx.Response:
        with httpx.Client() as client:
            json_body = {"content-type": "application/json"}
            return answer(
                client.request(
                    request.method, target(request), content=request.content, headers=json_body
                )
            )

    def forward_either(request: httpx.Request) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the sync warm-up
            return forward_sync(request)
        return forward(request)

    with respx.mock(assert_all_called=False) as router:
        router.route(host="api.mistral.ai").mock(side_effect=forward_either)
        router.route().pass_through()
        yield


def mistral_model(llm_mistral, model_id="mistral/loopback"):
    """The plugin's own async class, with vision and audio, as its register_models() makes it."""
    model = llm_mistral.AsyncMistral(model_id, "loopback", True, True, True, True)
    return laa.prepare_before_execute(model)


@pytest.fixture
def media(file_server):
    """An image and an mp3 larger than max_bytes (reading either would fail), and a PDF."""
    use(max_bytes=16 * KiB)
    big = bytes(64 * KiB)
    return SimpleNamespace(
        png=file_server.add("/cat.png", big, content_type="image/png", latency=LATENCY),
        mp3=file_server.add("/hello.mp3", big, content_type="audio/mpeg", latency=LATENCY),
        pdf=file_server.add("/doc.pdf", samples.pdf(), content_type="application/pdf"),
    )


async def test_llm_mistral_sends_image_and_audio_urls_that_are_never_requested(
    llm_mistral, mistral_api, file_server, media
):
    model = mistral_model(llm_mistral)
    attachments = [
        llm.Attachment(url=media.png, type="image/png"),
        llm.Attachment(url=media.mp3, type="audio/mpeg"),
    ]
    response = model.prompt("describe", attachments=attachments, key="loopback")

    assert await response.text() == "ok"
    assert file_server.requests == []
    assert mistral_api.paths == ["/v1/chat/completions"]
    content = mistral_api.bodies[-1]["messages"][-1]["content"]
    assert {"type": "image_url", "image_url": media.png} in content
    audio = [part for part in content if part["type"] == "input_audio"]
    assert media.mp3 in json.dumps(audio)  # 0.16: the URL itself; 0.15: {"data": URL}
    assert "base64" not in json.dumps(content)


async def test_llm_mistral_urls_of_unknown_type_are_asked_for_headers_only(
    llm_mistral, mistral_api, file_server, media
):
    model = mistral_model(llm_mistral)
    attachments = [llm.Attachment(url=media.png), llm.Attachment(url=media.mp3)]
    response = model.prompt("describe", attachments=attachments, key="loopback")

    # Reading either body would raise AttachmentTooLarge: max_bytes is 16 KiB.
    assert await response.text() == "ok"
    assert sorted(file_server.requests) == [("GET", "/cat.png"), ("GET", "/hello.mp3")]
    content = json.dumps(mistral_api.bodies[-1]["messages"][-1]["content"])
    assert media.png in content and media.mp3 in content


async def test_llm_mistral_a_type_it_does_not_take_is_still_fetched(
    llm_mistral, mistral_api, file_server, media
):
    model = mistral_model(llm_mistral)
    response = model.prompt("read", attachments=[llm.Attachment(url=media.pdf)], key="loopback")

    with pytest.raises(ValueError, match="does not support attachments of type 'application/pdf'"):
        await response.text()
    assert file_server.requests == [("GET", "/doc.pdf")]  # fetched whole, as llm would
    assert mistral_api.bodies == []


async def test_configuration_can_empty_a_known_declaration(
    llm_mistral, mistral_api, file_server, media
):
    use(max_bytes=128 * KiB, url_support=(("mistral/loopback", ()),))
    model = mistral_model(llm_mistral)
    attachments = [
        llm.Attachment(url=media.png, type="image/png"),
        llm.Attachment(url=media.mp3, type="audio/mpeg"),
    ]
    response = model.prompt("describe", attachments=attachments, key="loopback")

    assert await response.text() == "ok"
    assert sorted(file_server.requests) == [("GET", "/cat.png"), ("GET", "/hello.mp3")]
    # The plugin still sends the URLs: the user only asked for the content in hand.
    assert media.png in json.dumps(mistral_api.bodies[-1]["messages"])


# --- llm-openai-plugin -----------------------------------------------------------


@pytest.fixture(scope="module")
def llm_openai(_openai_server):
    """The plugin module, after one sync prompt (no attachments) to the stub.

    The openai client builds its Responses event types' schemas on first use: start-up,
    as for llm-mistral above. Its register_models() is too slow to run on a loop, so
    tests/conftest.py takes it out of the registry: these tests use its classes, as
    register_models() would.
    """
    module = pytest.importorskip("llm_openai")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OPENAI_BASE_URL", _openai_server.base_url)
        model = module.ResponsesModel("gpt-4o", vision=True)
        assert model.prompt("warm up", key="loopback").text() == "ok"
    return module


async def test_llm_openai_plugin_sends_image_urls_and_inlines_pdfs(
    llm_openai, openai_server, file_server, media
):
    use(max_bytes=128 * KiB)
    model = laa.prepare_before_execute(llm_openai.AsyncResponsesModel("gpt-4o", vision=True))
    attachments = [
        llm.Attachment(url=media.png, type="image/png"),
        llm.Attachment(url=media.pdf, type="application/pdf"),
    ]
    response = model.prompt("compare", attachments=attachments)

    assert await response.text() == "ok"
    assert file_server.requests == [("GET", "/doc.pdf")]
    assert openai_server.paths == ["/v1/responses"]
    content = openai_server.bodies[-1]["input"][-1]["content"]
    assert {"type": "input_image", "image_url": media.png, "detail": "low"} in content
    (pdf,) = [part for part in content if part["type"] == "input_file"]
    assert pdf["file_data"].startswith("data:application/pdf;base64,JVBER")


async def test_a_subclass_that_overrides_the_payload_method_gets_its_images_fetched(
    llm_openai, openai_server, file_server
):
    class Inlining(llm_openai.AsyncResponsesModel):
        """Inlines every image: a proxy that cannot reach the web might need it."""

        def _build_messages(self, prompt, conversation):
            messages = super()._build_messages(prompt, conversation)
            for part, attachment in zip(
                messages[-1]["content"][1:], prompt.attachments, strict=True
            ):
                part["image_url"] = f"data:image/png;base64,{attachment.base64_content()}"
            return messages

    png = file_server.add("/cat.png", samples.png(), content_type="image/png", latency=LATENCY)
    model = laa.prepare_before_execute(Inlining("gpt-4o", vision=True))
    assert url_support(model, Config()) is False
    response = model.prompt("look", attachments=[llm.Attachment(url=png, type="image/png")])

    # Had the parent's declaration applied, base64_content() would read the URL
    # inside execute(), on the loop: the strict guard raises.
    assert await response.text() == "ok"
    assert file_server.requests == [("GET", "/cat.png")]
    assert openai_server.bodies[-1]["input"][-1]["content"][1]["image_url"].startswith(
        "data:image/png;base64,"
    )


# --- llm-openrouter -------------------------------------------------------------------

OPENROUTER = {"model_id": "openrouter/openai/gpt-4o", "model_name": "openai/gpt-4o", "vision": True}


@pytest.fixture(scope="module")
def llm_openrouter(_openai_server):
    """The plugin module, after one sync prompt (no attachments) to the stub.

    Its register_models() registers nothing without an OpenRouter key, so these tests use
    its classes as it would: the Responses ones from 0.7 on (llm >= 0.32), the chat ones
    before (under llm 0.30, make test-oldest, pip installs 0.6). The openai client's
    start-up is done here, as for llm-openai-plugin above.
    """
    module = pytest.importorskip("llm_openrouter")
    registered = getattr(module, "OpenRouterResponses", module.OpenRouterChat)
    model = registered(**OPENROUTER, api_base=_openai_server.base_url)
    assert model.prompt("warm up", key="loopback").text() == "ok"
    return module


@pytest.mark.parametrize("name", ["OpenRouterAsyncResponses", "OpenRouterAsyncChat"])
async def test_llm_openrouter_sends_image_urls_on_a_first_turn_without_downloading_them(
    name, llm_openrouter, openai_server, file_server, media
):
    cls = getattr(llm_openrouter, name, None)
    if cls is None:
        pytest.skip(f"this llm-openrouter has no {name}")
    model = laa.prepare_before_execute(cls(**OPENROUTER, api_base=openai_server.base_url))
    typed = llm.Attachment(url=media.png, type="image/png")
    untyped = llm.Attachment(url=media.png.replace("cat.png", "cat.png?again"))
    pdf = llm.Attachment(url=media.pdf, type="application/pdf")
    conversation = model.conversation()
    response = conversation.prompt("compare", attachments=[typed, untyped, pdf], key="loopback")

    # Downloading either image would raise AttachmentTooLarge: max_bytes is 16 KiB.
    assert await response.text() == "ok"
    # The typed one: nothing; the other: the GET that reads its type, its body unread;
    # the PDF, which the plugin inlines: fetched whole.
    assert sorted(file_server.requests) == [("GET", "/cat.png"), ("GET", "/doc.pdf")]
    sent = json.dumps(openai_server.bodies[-1])
    assert media.png in sent and untyped.url in sent
    assert "data:application/pdf;base64,JVBER" in sent


# --- which declaration applies -----------------------------------------------------


def test_each_plugin_class_is_declared_for_what_its_source_sends(
    llm_mistral, llm_openai, llm_openrouter
):
    config = Config()
    chat = llm.get_async_model("gpt-4o-mini")
    assert url_support(chat, config) == {"image/*"}
    assert url_support(mistral_model(llm_mistral), config) == {"image/*", "audio/*"}
    sync_mistral = llm_mistral.Mistral("mistral/loopback", "loopback", True, True, True, True)
    assert url_support(sync_mistral, config) == {"image/*", "audio/*"}
    for cls in (llm_openai.ResponsesModel, llm_openai.AsyncResponsesModel):
        assert url_support(cls("gpt-4o", vision=True), config) == {"image/*"}
    for name in ("Chat", "AsyncChat", "Responses", "AsyncResponses"):
        cls = getattr(llm_openrouter, f"OpenRouter{name}", None)  # Responses: 0.7 and later
        if cls is not None:
            assert url_support(cls(**OPENROUTER), config) == {"image/*"}, name


def test_a_subclass_keeps_the_declaration_unless_it_overrides_a_payload_method(llm_mistral):
    config = Config()

    class Renamed(llm_mistral.AsyncMistral):
        def __str__(self):
            return "renamed"

    class OwnMessages(llm_mistral.AsyncMistral):
        def build_messages(self, prompt, conversation):
            return super().build_messages(prompt, conversation)

    args = ("mistral/x", "x", True, True, True, True)
    assert url_support(Renamed(*args), config) == {"image/*", "audio/*"}
    assert url_support(OwnMessages(*args), config) is False
    patched = llm_mistral.AsyncMistral(*args)
    patched.build_messages = lambda prompt, conversation: []
    assert url_support(patched, config) is False


def test_a_helper_the_declared_class_lacks_counts_only_if_the_subclass_adds_it():
    from llm.default_plugins.openai_models import AsyncChat

    config = Config()
    (declared,) = [d for d in KNOWN_URL_SUPPORT if d.cls.endswith(".AsyncChat")]
    helpers = [name for name in declared.methods if not hasattr(AsyncChat, name)]

    class Adds(AsyncChat):
        pass

    for name in helpers:  # llm 0.30 has no _append_llm_message; 0.36 has every one
        setattr(Adds, name, lambda self, *args: None)
    model = Adds("gpt-4o-mini")
    assert url_support(model, config) == (False if helpers else {"image/*"})
    assert url_support(AsyncChat("gpt-4o-mini"), config) == {"image/*"}


def test_configuration_declares_a_model_that_declared_nothing():
    model = SimpleNamespace(model_id="my-proxy")
    assert url_support(model, Config()) is False
    configured = Config(url_support=(("my-proxy", ("image/*", "audio/*")), ("all", ("*",))))
    assert url_support(model, configured) == {"image/*", "audio/*"}
    assert url_support(SimpleNamespace(model_id="all"), configured) is True


def test_precedence_is_configuration_then_the_model_then_the_table_then_nothing():
    from llm.default_plugins.openai_models import AsyncChat

    class Declares(AsyncChat):
        supports_attachment_urls = frozenset({"application/pdf"})

    chat, declares = AsyncChat("gpt-4o-mini"), Declares("gpt-4o-mini")
    other = SimpleNamespace(model_id="gpt-4o-mini")
    nothing = Config()
    assert url_support(chat, nothing) == {"image/*"}  # the table
    assert url_support(declares, nothing) == {"application/pdf"}  # the model over the table
    assert url_support(other, nothing) is False  # nothing known: fetch everything
    configured = Config(url_support=(("gpt-4o-mini", ("audio/*",)),))
    for model in (chat, declares, other):  # the user over all
        assert url_support(model, configured) == {"audio/*"}
    emptied = Config(url_support=(("gpt-4o-mini", ()),))
    assert not url_support(declares, emptied)
    assert not url_support(chat, emptied)


async def test_a_configured_model_takes_its_urls_unfetched(file_server, media):
    model = llm.get_async_model("echo")
    use(url_support=(("echo", ("image/*",)),))  # and max_bytes=16 KiB, from media
    output = json.loads(await model.prompt("x", attachments=[llm.Attachment(url=media.png)]).text())
    assert output["attachments"][0]["url"] == media.png
    assert file_server.requests == [("GET", "/cat.png")]  # its headers only

    use(url_support=())
    with pytest.raises(laa.AttachmentTooLarge):  # fetched: 64 KiB is over max_bytes
        await model.prompt("x", attachments=[llm.Attachment(url=media.png)]).text()


# --- URLs sent as a type of their own, by pattern ------------------------------------

YOUTUBE = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
GEMINI_ANSWER = [
    {
        "candidates": [{"content": {"parts": [{"text": "a video"}], "role": "model"}}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
        "modelVersion": "gemini-loopback",
    }
]


@pytest.fixture
def gemini_model():
    """llm-gemini's own async class, as its register_models() makes it (>= 0.35, whose
    payload methods the declaration names; older releases get no declaration)."""
    llm_gemini = pytest.importorskip("llm_gemini")
    model = llm_gemini.AsyncGeminiPro("gemini-2.5-flash")
    if not url_patterns(model, Config()):
        pytest.skip("this llm-gemini builds its payload in methods the declaration does not name")
    return laa.prepare_before_execute(model)


@contextlib.contextmanager
def gemini_api():
    """Google's API answered with ``GEMINI_ANSWER``: yields the request bodies it got, and
    the route that any request to YouTube would take.

    llm-gemini posts to Google's API with encode's httpx (respx's default mocker); the
    package's own fetches go through httpcore2, where any request to YouTube would show.
    """
    sent: list[Any] = []

    def answer(request):
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=GEMINI_ANSWER)

    with (
        respx.mock(assert_all_called=False) as api,
        respx.mock(using="httpcore2", assert_all_called=False) as ours,
    ):
        api.post(host="generativelanguage.googleapis.com").mock(side_effect=answer)
        yield sent, ours.route(host__regex=r"(www\.)?youtube\.com|youtu\.be")


async def test_llm_gemini_sends_a_youtube_url_as_file_data_with_no_request_to_youtube(
    gemini_model,
):
    with gemini_api() as (sent, youtube):
        video = llm.Attachment(url=YOUTUBE)
        text = await gemini_model.prompt("what is this?", attachments=[video], key="k").text()

    assert text == "a video"
    assert not youtube.called
    (body,) = sent
    parts = body["contents"][-1]["parts"]
    assert {"fileData": {"mimeType": "video/youtube", "fileUri": YOUTUBE}} in parts
    assert video.resolve_type() == "video/youtube"  # prepared: no I/O


async def test_configured_url_patterns_send_youtube_shorts_to_llm_gemini_with_no_request(
    gemini_model,
):
    # llm-gemini's own patterns (and so the shipped declaration) know no Shorts link:
    # alone, llm would ask YouTube with a HEAD, get text/html, and refuse it.
    shorts = "https://www.youtube.com/shorts/dQw4w9WgXcQ"
    watch_or_shorts = r"video/youtube@^https://(www\.)?youtube\.com/(watch\?v=|shorts/)"
    # By its id, gemini/gemini-2.5-flash: llm-gemini registers gemini-2.5-flash as an alias.
    use(url_support=((gemini_model.model_id, (watch_or_shorts,)),))

    with gemini_api() as (sent, youtube):
        videos = [llm.Attachment(url=shorts), llm.Attachment(url=YOUTUBE)]
        text = await gemini_model.prompt("what are these?", attachments=videos, key="k").text()

    assert text == "a video"
    assert not youtube.called
    (body,) = sent
    parts = body["contents"][-1]["parts"]
    for url in (shorts, YOUTUBE):
        assert {"fileData": {"mimeType": "video/youtube", "fileUri": url}} in parts


async def test_a_configured_url_pattern_types_a_url_with_no_request_to_its_host(file_server):
    model = llm.get_async_model("echo")  # takes image/png, image/jpeg, image/gif
    shot = file_server.add("/shots/1", samples.png(), content_type="image/png")
    host = re.escape(file_server.base_url)
    use(url_support=(("echo", (f"image/png@^{host}/shots/",)),))

    output = json.loads(await model.prompt("x", attachments=[llm.Attachment(url=shot)]).text())

    assert output["attachments"][0]["url"] == shot  # passed on as it is, as image/png
    assert file_server.requests == []


def test_configured_url_patterns_replace_the_models_and_the_shipped_ones():
    class Clips(Carrier):
        model_id = "clips"
        attachment_url_patterns: ClassVar = {"video/clip": (r"^https://clips\.test/",)}

    llm_gemini = pytest.importorskip("llm_gemini")
    gemini = llm_gemini.AsyncGeminiPro("gemini-2.5-flash")
    configured = Config(
        url_support=(
            ("clips", ("image/*", r"video/mp4@^https://cdn\.test/.*\.mp4$")),
            (gemini.model_id, ()),
        )
    )
    assert url_patterns(Clips(), configured) == (("video/mp4", (r"^https://cdn\.test/.*\.mp4$",)),)
    assert url_support(Clips(), configured) == {"image/*"}  # the URL pattern is not a MIME type
    assert url_patterns(gemini, configured) == ()  # an entry with no patterns: none
    policy = plan_for(Clips(), configured).urls
    assert policy.type_of("https://cdn.test/a/b.mp4") == "video/mp4"
    assert policy.type_of("https://clips.test/c/1") is None


async def test_a_model_declares_its_own_url_patterns(file_server):
    class Clips(Carrier):
        attachment_types = frozenset({"video/clip"})
        attachment_url_patterns: ClassVar = {"video/clip": (r"^https?://clips\.test/",)}

    clip = llm.Attachment(url="https://clips.test/c/1")
    prompt = llm.Prompt("x", Clips(), attachments=[clip])

    summary = await laa.prepare_attachments(prompt)

    assert summary.requests == 0 and file_server.requests == []
    assert clip.resolve_type() == "video/clip"


def test_the_gemini_declaration_matches_llm_geminis_own_patterns():
    llm_gemini = pytest.importorskip("llm_gemini")
    if not hasattr(llm_gemini, "is_youtube_url"):
        pytest.skip("this llm-gemini has no YouTube support")
    (declaration,) = [d for d in KNOWN_URL_SUPPORT if d.cls == "llm_gemini._SharedGemini"]
    ((kind, patterns),) = declaration.url_types
    policy = laa.UrlPolicy(False, [(kind, patterns)])
    for url in (
        YOUTUBE,
        "https://youtu.be/dQw4w9WgXcQ",
        "https://youtube.com/embed/x",
        "https://example.com/v",
    ):
        assert (policy.type_of(url) == "video/youtube") == llm_gemini.is_youtube_url(url), url
