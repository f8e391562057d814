"""A fault-injecting OpenAI-compatible server, for testing what a ladder does when providers fail.

```python
from cascade_router.testing.fault_server import FaultServer

with FaultServer() as server:
    rungs = [
        {"model": {"provider": "openai", "model": "cut-after-3", "base_url": server.url, "max_retries": 0}},
        {"model": {"provider": "openai", "model": "ok", "base_url": server.url, "max_retries": 0}},
    ]
    ...
    server.requests_for("cut-after-3")  # what the server saw: times, streamed or not, messages
```

The request's ``model`` names the fault; a ``/`` separates a fault from a tag, so that two
rungs (or two tests) with the same fault keep separate counters (``500-once/a``):

| model | what the server does |
| --- | --- |
| ``ok`` | answers ``ANSWER`` (streamed when asked), with logprobs and usage |
| ``429`` / ``429-retry-after-N`` | 429 without / with ``Retry-After: N`` (seconds) |
| ``500-once`` | 500 on its first request, then answers |
| ``503`` | 503 always |
| ``down-for-N`` | 503 on its first N requests, then answers (a primary that recovers) |
| ``reset`` | closes the connection (RST) before any header |
| ``silent`` | never answers (until the server stops) |
| ``slow-first-token-S`` | waits S seconds before the first byte of the answer |
| ``cut-after-N`` | streams N tokens, then closes the connection mid-body |
| ``stall-after-N`` | streams N tokens, then goes silent |
| ``malformed-after-N`` | streams N tokens, then a chunk that is not JSON |
| ``no-done`` | streams the whole answer, then closes without ``data: [DONE]`` |
| ``context-length`` | 400, ``code: context_length_exceeded`` |
| ``content-filter`` | 400, ``code: content_filter`` |
| ``auth`` | 401, ``invalid_api_key`` |
| ``prefill-rejected`` | 400 when the last message is the assistant's (prefill), else answers |

Only the standard library: it runs wherever the tests run, one thread per connection.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "The answer is 42 because six times seven is forty-two."
"""What a healthy fault model answers."""


@dataclass(slots=True)
class SeenRequest:
    """One request as the server received it."""

    model: str
    at: float
    """``time.monotonic()`` when it arrived."""
    stream: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    chunks_sent: int = 0
    """Content chunks written to the client (fewer than the answer's tokens when the client
    closed the stream early, as an abandoned answer does)."""


class FaultServer:
    """The server, on 127.0.0.1 and a free port; a context manager (``start`` / ``stop``)."""

    def __init__(self, answer: str = ANSWER, *, token_delay_s: float = 0.0) -> None:
        self.answer = answer
        self.token_delay_s = token_delay_s
        """Seconds between streamed tokens (0: as fast as possible)."""
        self.requests: list[SeenRequest] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (``http://127.0.0.1:<port>/v1``)."""
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FaultServer:
        handler = type("_Handler", (_Handler,), {"fault_server": self})
        self._httpd = _Quiet(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name="fault-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_for(self, model: str) -> list[SeenRequest]:
        """The requests that named ``model``, in order."""
        with self._lock:
            return [r for r in self.requests if r.model == model]

    def reset(self) -> None:
        """Forget the requests and the per-model counters."""
        with self._lock:
            self.requests.clear()
            self._counts.clear()

    def _seen(self, request: SeenRequest) -> int:
        with self._lock:
            self.requests.append(request)
            n = self._counts.get(request.model, 0) + 1
            self._counts[request.model] = n
            return n

    def wait(self, seconds: float) -> None:
        """Sleep, but wake up when the server stops (a silent or stalled fault)."""
        self._stopping.wait(seconds)


class _Quiet(ThreadingHTTPServer):
    """Clients that hang up (timeouts, abandoned streams) are the point here, not errors."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def tokens(text: str) -> list[str]:
    """The answer as the server streams it: words with their leading space."""
    return re.findall(r"\s*\S+", text)


class _Handler(BaseHTTPRequestHandler):
    fault_server: FaultServer
    seen: SeenRequest
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet: tests read ``requests`` instead

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": []})
        else:
            self._json(404, _error("not found", "invalid_request_error", None))

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(400, _error("body is not JSON", "invalid_request_error", None))
            return
        model = str(body.get("model", "ok"))
        stream = bool(body.get("stream"))
        messages = body.get("messages") or []
        server = self.fault_server
        self.seen = SeenRequest(model, time.monotonic(), stream, messages, body)
        n = server._seen(self.seen)
        fault = model.split("/", 1)[0]
        try:
            self._fault(fault, n, body, stream, messages)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout, a closed stream)

    # -- the faults -----------------------------------------------------------------------------

    def _fault(self, fault: str, n: int, body: dict[str, Any], stream: bool, messages: list[Any]) -> None:
        server = self.fault_server
        number = _number(fault)
        if fault == "429":
            self._json(429, _error("Rate limit reached", "requests", "rate_limit_exceeded"))
        elif fault.startswith("429-retry-after-"):
            self._json(
                429,
                _error("Rate limit reached", "requests", "rate_limit_exceeded"),
                {"retry-after": f"{number:g}"},
            )
        elif fault == "500-once" and n == 1:
            self._json(500, _error("The server had an error", "server_error", None))
        elif fault == "503" or (fault.startswith("down-for-") and n <= number):
            self._json(503, _error("The engine is currently overloaded", "server_error", None))
        elif fault == "reset":
            self._reset()
        elif fault == "silent":
            server.wait(600)
            self._reset()
        elif fault == "context-length":
            self._json(
                400,
                _error(
                    "This model's maximum context length is 4096 tokens. However, your messages "
                    "resulted in 9000 tokens. Please reduce the length of the messages.",
                    "invalid_request_error",
                    "context_length_exceeded",
                ),
            )
        elif fault == "content-filter":
            self._json(
                400,
                _error(
                    "The response was filtered due to the prompt triggering the content management policy.",
                    "invalid_request_error",
                    "content_filter",
                ),
            )
        elif fault == "auth":
            self._json(401, _error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"))
        elif fault == "prefill-rejected" and messages and messages[-1].get("role") == "assistant":
            self._json(
                400,
                _error("assistant prefill is not supported", "invalid_request_error", "unsupported_prefill"),
            )
        else:
            if fault.startswith("slow-first-token-"):
                server.wait(number)
            self._answer(fault, body, stream, number)

    def _answer(self, fault: str, body: dict[str, Any], stream: bool, number: float) -> None:
        server = self.fault_server
        model = str(body.get("model"))
        words = tokens(server.answer)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        if not stream:
            self._json(
                200,
                {
                    "id": "chatcmpl-fault",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": server.answer},
                            "logprobs": {"content": [_logprob(w) for w in words]},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        stop_at = (
            int(number) if fault.split("-after-", maxsplit=1)[0] in ("cut", "stall", "malformed") else None
        )
        for i, word in enumerate(words):
            if stop_at is not None and i == stop_at:
                if fault.startswith("cut-"):
                    self._reset()
                    return
                if fault.startswith("stall-"):
                    server.wait(600)
                    self._reset()
                    return
                self._chunk(b"data: {not json\n\n")
                self._chunk(b"")
                return
            delta: dict[str, Any] = {"content": word}
            if i == 0:
                delta["role"] = "assistant"
            self._event(
                {
                    "id": "chatcmpl-fault",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "delta": delta,
                            "logprobs": {"content": [_logprob(word)]},
                            "finish_reason": None,
                        }
                    ],
                }
            )
            self.seen.chunks_sent = i + 1
            if server.token_delay_s:
                server.wait(server.token_delay_s)
        self._event(
            {
                "id": "chatcmpl-fault",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                **({"usage": usage} if (body.get("stream_options") or {}).get("include_usage") else {}),
            }
        )
        if fault == "no-done":
            self._reset()
            return
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    # -- the wire -------------------------------------------------------------------------------

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _event(self, payload: dict[str, Any]) -> None:
        self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _reset(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0), as a crashed peer would."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def _number(fault: str) -> float:
    match = re.search(r"(\d+(?:\.\d+)?)$", fault)
    return float(match.group(1)) if match else 0.0


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _logprob(token: str) -> dict[str, Any]:
    # Each token at probability 0.95, with a runner-up, as a server asked for top_logprobs sends.
    top = [
        {"token": token, "logprob": -0.05, "bytes": list(token.encode())},
        {"token": " maybe", "logprob": -3.0, "bytes": list(b" maybe")},
    ]
    return {"token": token, "logprob": -0.05, "bytes": list(token.encode()), "top_logprobs": top}
