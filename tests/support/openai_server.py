"""A minimal OpenAI-compatible API server on 127.0.0.1 for tests, demos and benchmarks.

Serves ``POST /v1/chat/completions`` and ``POST /v1/responses`` (streaming SSE
and plain JSON) with a fixed assistant reply, plus ``GET /v1/models``. Every
request is recorded: its parsed JSON body in :attr:`OpenAIServer.bodies`, its
path in :attr:`OpenAIServer.paths` and its headers in :attr:`OpenAIServer.headers`.

Point llm's built-in OpenAI models at it with ``OPENAI_BASE_URL=<server.base_url>``
(read by the ``openai`` client, since those models pass no ``base_url``) and any
key, e.g. ``OPENAI_API_KEY=x`` or ``prompt(..., key="x")``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from llm_async_attachments.testing.server import ServerThread, TrackingHTTPServer

__all__ = ["OpenAIServer"]

HOST = "127.0.0.1"
SYSTEM_FINGERPRINT = "fp_test"

Json = dict[str, Any]


def _pieces(text: str) -> list[str]:
    """Split ``text`` into word-sized stream deltas that join back to ``text``."""
    return [piece for piece in re.findall(r"\S*\s*", text) if piece]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class _Exchange:
    """One API request: its body and the token counts reported back."""

    def __init__(self, body: Json, raw_size: int, reply: str) -> None:
        self.body = body
        self.reply = reply
        self.model = str(body.get("model") or "gpt-4o-mini")
        self.created = int(time.time())
        # A rough, deterministic stand-in for tokenization.
        self.input_tokens = max(1, raw_size // 4)
        self.output_tokens = max(1, len(reply.split()))

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# -- Chat Completions ----------------------------------------------------------


def _chat_usage(ex: _Exchange) -> Json:
    return {
        "prompt_tokens": ex.input_tokens,
        "completion_tokens": ex.output_tokens,
        "total_tokens": ex.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_completion(ex: _Exchange) -> Json:
    return {
        "id": _new_id("chatcmpl"),
        "object": "chat.completion",
        "created": ex.created,
        "model": ex.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": ex.reply,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _chat_usage(ex),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _chat_chunks(ex: _Exchange) -> Iterator[Json]:
    include_usage = bool((ex.body.get("stream_options") or {}).get("include_usage"))
    base: Json = {
        "id": _new_id("chatcmpl"),
        "object": "chat.completion.chunk",
        "created": ex.created,
        "model": ex.model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if include_usage:
        base["usage"] = None

    def chunk(delta: Json, finish_reason: str | None = None) -> Json:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _pieces(ex.reply):
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    if include_usage:
        yield {**base, "choices": [], "usage": _chat_usage(ex)}


# -- Responses -----------------------------------------------------------------


def _output_text(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str) -> Json:
    content = [_output_text(text)] if status == "completed" else []
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _response_object(ex: _Exchange, response_id: str, output: list[Json], status: str) -> Json:
    body = ex.body
    reasoning = body.get("reasoning") or {}
    text = {"format": {"type": "text"}, "verbosity": "medium", **(body.get("text") or {})}
    usage = None
    if status == "completed":
        usage = {
            "input_tokens": ex.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": ex.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": ex.total_tokens,
        }
    return {
        "id": response_id,
        "object": "response",
        "created_at": ex.created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": ex.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {
            "effort": reasoning.get("effort"),
            "summary": reasoning.get("summary"),
        },
        "service_tier": "default",
        "store": bool(body.get("store", False)),
        "temperature": body.get("temperature", 1.0),
        "text": text,
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _response(ex: _Exchange) -> Json:
    output = [_message_item(_new_id("msg"), ex.reply, "completed")]
    return _response_object(ex, _new_id("resp"), output, "completed")


def _response_events(ex: _Exchange) -> Iterator[Json]:
    response_id, item_id = _new_id("resp"), _new_id("msg")
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    done_item = _message_item(item_id, ex.reply, "completed")
    in_progress = _response_object(ex, response_id, [], "in_progress")
    yield {"type": "response.created", "response": in_progress}
    yield {"type": "response.in_progress", "response": in_progress}
    yield {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": _message_item(item_id, "", "in_progress"),
    }
    yield {"type": "response.content_part.added", **where, "part": _output_text("")}
    for piece in _pieces(ex.reply):
        yield {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
    yield {"type": "response.output_text.done", **where, "text": ex.reply, "logprobs": []}
    yield {"type": "response.content_part.done", **where, "part": _output_text(ex.reply)}
    yield {"type": "response.output_item.done", "output_index": 0, "item": done_item}
    yield {
        "type": "response.completed",
        "response": _response_object(ex, response_id, [done_item], "completed"),
    }


# -- HTTP plumbing -------------------------------------------------------------


class _HTTPServer(TrackingHTTPServer):
    block_on_close = True  # server_close() joins handler threads (after close_connections)

    def __init__(self, owner: OpenAIServer) -> None:
        self.owner = owner
        super().__init__(HOST, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Request handler; one request per connection.

    Every response carries ``Connection: close``: llm builds a new ``openai`` client
    per prompt, so keep-alive would only leave idle sockets and handler threads behind.
    """

    protocol_version = "HTTP/1.1"
    server_version = "TestOpenAIServer/1.0"
    timeout = 30.0  # bounds a stalled client

    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr logging."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.server.owner._record({}, path, self._header_dict())
        if path.rstrip("/") == "/v1/models":
            models = [
                {"id": name, "object": "model", "created": 0, "owned_by": "test"}
                for name in ("gpt-4o-mini", "gpt-4o", "gpt-5-mini")
            ]
            self._json(200, {"object": "list", "data": models})
        else:
            self._error(404, f"Unknown path {path}", "not_found")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        owner = self.server.owner
        owner._record(body if isinstance(body, dict) else {}, path, self._header_dict())
        if not isinstance(body, dict):
            self._error(400, "Request body is not a JSON object", "invalid_json")
            return
        exchange = _Exchange(body, len(raw), owner.reply)
        stream = bool(body.get("stream"))
        route = path.rstrip("/")
        if route == "/v1/chat/completions":
            if stream:
                self._sse(_chat_chunks(exchange), named=False, done=True)
            else:
                self._json(200, _chat_completion(exchange))
        elif route == "/v1/responses":
            if stream:
                self._sse(_response_events(exchange), named=True, done=False)
            else:
                self._json(200, _response(exchange))
        else:
            self._error(404, f"Unknown path {path}", "not_found")

    def end_headers(self) -> None:
        self.send_header("Connection", "close")
        self.close_connection = True
        super().end_headers()

    def _header_dict(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _read_body(self) -> bytes:
        """Read a Content-Length or chunked request body."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json(self, status: int, payload: Json) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", _new_id("req"))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, code: str) -> None:
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        self._json(status, {"error": error})

    def _sse(self, events: Iterable[Json], *, named: bool, done: bool) -> None:
        """Send ``events`` as a chunked ``text/event-stream``."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", _new_id("req"))
        self.end_headers()
        for sequence_number, event in enumerate(events):
            if named:
                event = {**event, "sequence_number": sequence_number}
                text = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            else:
                text = f"data: {json.dumps(event)}\n\n"
            self._chunk(text.encode())
        if done:
            self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class OpenAIServer(ServerThread):
    """OpenAI-compatible API on 127.0.0.1 (ephemeral port) that always answers :attr:`reply`."""

    reply: str = "ok"

    def __init__(self, reply: str = "ok") -> None:
        super().__init__()
        self.reply = reply
        self.base_url = ""
        self.bodies: list[Json] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def _make_server(self) -> TrackingHTTPServer:
        return _HTTPServer(self)

    def _started(self, port: int) -> None:
        self.base_url = f"http://{HOST}:{port}/v1"

    def reset(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self.bodies.clear()
            self.paths.clear()
            self.headers.clear()

    def _record(self, body: Json, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.bodies.append(body)
            self.paths.append(path)
            self.headers.append(headers)
