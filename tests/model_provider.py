"""A local stand-in for a model provider, in OpenAI's documented streaming shapes: the Responses
API (`POST /v1/responses`, semantic SSE events ending in `response.completed` with `usage`) for
Codex CLI, and Chat Completions (`POST /v1/chat/completions`, `chat.completion.chunk` SSE with a
final usage chunk and `data: [DONE]`) for OpenCode's OpenAI-compatible provider. It is the
edge of the machine: the real agents talk to it over loopback HTTP.

Each answer follows the next step planned (`plan`), one per request, then `TEXT`: `TEXT` says a
short text, `HOLD` stops after its first text delta and keeps the stream open until
`release()` (a turn that is mid-call when it is interrupted), `Exec(cmd)` asks for Codex's
`exec_command` tool (a function call). Every answer reports the usage in `usage`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

API_KEY = "sk-test-fleetmeter-local"
TEXT = "text"
HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Exec:
    """A function call to Codex's `exec_command` (unified exec): `cmd` runs in a shell, and
    after `yield_ms` Codex sends the model what it printed so far, the shell still running."""

    cmd: str
    yield_ms: int = 300


Step = str | Exec


@dataclass(frozen=True, slots=True)
class Usage:
    """What one answer reports: OpenAI's counts (cached inside input, reasoning inside
    output)."""

    input_tokens: int = 1200
    cached_tokens: int = 200
    output_tokens: int = 42
    reasoning_tokens: int = 10

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Seen:
    path: str
    body: dict[str, Any]
    authorized: bool


@dataclass(slots=True)
class ProviderState:
    usage: Usage = field(default_factory=Usage)
    text: str = "Done: nothing to change."
    requests: list[Seen] = field(default_factory=list)
    steps: deque[Step] = field(default_factory=deque)
    released: threading.Event = field(default_factory=threading.Event)
    streams_open: int = 0
    cut: int = 0  # held answers the client hung up on
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelProvider:
    def __init__(self) -> None:
        self.state = ProviderState()
        state = self.state

        class Handler(_Handler):
            provider = state

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> ModelProvider:
        self._thread.start()
        return self

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def plan(self, *steps: Step) -> None:
        """The next answers, one step per request (then TEXT)."""
        with self.state.lock:
            self.state.released.clear()
            self.state.steps.extend(steps)

    def release(self) -> None:
        self.state.released.set()

    def model_calls(self, path: str = "/v1/responses") -> list[Seen]:
        with self.state.lock:
            return [r for r in self.state.requests if r.path == path]

    def wait_streaming(self, timeout: float) -> bool:
        """Wait until an answer is open and held mid-stream."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state.streams_open > 0:
                return True
            time.sleep(0.05)
        return False


@contextmanager
def model_provider() -> Iterator[ModelProvider]:
    provider = ModelProvider().start()
    try:
        yield provider
    finally:
        provider.close()


class _Handler(BaseHTTPRequestHandler):
    provider: ProviderState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "gpt-test", "object": "model"}]})
            return
        self._json(404, {"error": {"message": f"no {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {}
        authorized = self.headers.get("Authorization") == f"Bearer {API_KEY}"
        path = self.path.split("?")[0]
        with self.provider.lock:
            self.provider.requests.append(Seen(path, body, authorized))
            step = self.provider.steps.popleft() if authorized and self.provider.steps else TEXT
        if not authorized:
            self._json(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
        elif path.endswith("/responses"):
            self._stream(self._responses_events(step), step)
        elif path.endswith("/chat/completions"):
            self._stream(self._chat_events(), step, done=True)
        else:
            self._json(404, {"error": {"message": f"no {path}", "type": "not_found"}})

    def _json(self, status: int, value: dict[str, Any]) -> None:
        data = orjson.dumps(value)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(
        self, events: Iterator[tuple[str | None, dict[str, Any]]], step: Step, done: bool = False
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for name, data in events:
                head = f"event: {name}\n".encode() if name else b""
                self.wfile.write(head + b"data: " + orjson.dumps(data) + b"\n\n")
                self.wfile.flush()
                if _first_text(name, data) and step == HOLD:
                    self._hold()
            if done:
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _hold(self) -> None:
        """Keep the stream open, mid-answer, until released (or the client hangs up)."""
        state = self.provider
        with state.lock:
            state.streams_open += 1
        try:
            while not state.released.wait(0.1):
                self.wfile.write(b": held\n\n")  # an SSE comment: finds a client gone
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with state.lock:
                state.cut += 1  # the client gave up the answer mid-stream
            raise
        finally:
            with state.lock:
                state.streams_open -= 1

    def _responses_events(self, step: Step) -> Iterator[tuple[str | None, dict[str, Any]]]:
        state = self.provider
        usage = state.usage
        rid = f"resp_{time.time_ns()}"
        item_id = f"msg_{rid}"
        base = {"id": rid, "object": "response", "status": "in_progress", "output": []}
        seq = iter(range(1000))
        yield "response.created", {"type": "response.created", "response": base,
                                   "sequence_number": next(seq)}  # fmt: skip
        if isinstance(step, Exec):
            yield from _function_call(base, step, usage, seq)
            return
        message = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
                   "content": []}  # fmt: skip
        yield "response.output_item.added", {"type": "response.output_item.added",
            "output_index": 0, "item": message, "sequence_number": next(seq)}  # fmt: skip
        yield "response.output_text.delta", {"type": "response.output_text.delta",
            "item_id": item_id, "output_index": 0, "content_index": 0, "delta": state.text,
            "sequence_number": next(seq)}  # fmt: skip
        part = {"type": "output_text", "text": state.text, "annotations": []}
        done = {**message, "status": "completed", "content": [part]}
        yield "response.output_item.done", {"type": "response.output_item.done",
            "output_index": 0, "item": done, "sequence_number": next(seq)}  # fmt: skip
        final = {
            **base,
            "status": "completed",
            "output": [done],
            "usage": _usage(usage),
        }
        yield "response.completed", {"type": "response.completed", "response": final,
                                     "sequence_number": next(seq)}  # fmt: skip

    def _chat_events(self) -> Iterator[tuple[str | None, dict[str, Any]]]:
        state = self.provider
        usage = state.usage
        cid = f"chatcmpl-{int(time.time() * 1000)}"
        head = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": "gpt-test"}  # fmt: skip
        yield None, {**head, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                               "content": ""}}]}  # fmt: skip
        yield None, {**head, "choices": [{"index": 0, "delta": {"content": state.text}}]}
        yield None, {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield (
            None,
            {
                **head,
                "choices": [],
                "usage": {
                    "prompt_tokens": usage.input_tokens,
                    "completion_tokens": usage.output_tokens,
                    "total_tokens": usage.total,
                    "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
                    "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
                },
            },
        )


def _first_text(name: str | None, data: dict[str, Any]) -> bool:
    """The event that carries an answer's text (where a held answer stops)."""
    if data.get("type") == "response.output_text.delta":
        return True
    choices = data.get("choices")
    return name is None and bool(choices) and bool(choices[0]["delta"].get("content"))


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total,
    }


def _function_call(
    base: dict[str, Any], step: Exec, usage: Usage, seq: Iterator[int]
) -> Iterator[tuple[str | None, dict[str, Any]]]:
    arguments = orjson.dumps({"cmd": step.cmd, "yield_time_ms": step.yield_ms}).decode()
    call = {"id": f"fc_{base['id']}", "type": "function_call", "status": "completed",
            "call_id": f"call_{base['id']}", "name": "exec_command",
            "arguments": arguments}  # fmt: skip
    yield "response.output_item.added", {"type": "response.output_item.added",
        "output_index": 0, "item": {**call, "status": "in_progress", "arguments": ""},
        "sequence_number": next(seq)}  # fmt: skip
    yield "response.function_call_arguments.done", {
        "type": "response.function_call_arguments.done", "item_id": call["id"],
        "output_index": 0, "arguments": arguments, "sequence_number": next(seq)}  # fmt: skip
    yield "response.output_item.done", {"type": "response.output_item.done",
        "output_index": 0, "item": call, "sequence_number": next(seq)}  # fmt: skip
    final = {**base, "status": "completed", "output": [call], "usage": _usage(usage)}
    yield "response.completed", {"type": "response.completed", "response": final,
                                 "sequence_number": next(seq)}  # fmt: skip
