"""An OTLP/HTTP trace receiver for tests: it parses each export as the protobuf
``ExportTraceServiceRequest`` a collector would."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


class Received:
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.paths: list[str] = []

    def spans(self) -> dict[str, dict[str, Any]]:
        """Span name -> attributes, over every request received."""
        out = {}
        for req in self.requests:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out[span.name] = {kv.key: value(kv.value) for kv in span.attributes}
        return out

    def span_list(self) -> list[dict[str, Any]]:
        """Every span received: name, trace id (hex) and attributes."""
        return [
            {
                "name": span.name,
                "trace_id": span.trace_id.hex(),
                "attributes": {kv.key: value(kv.value) for kv in span.attributes},
            }
            for req in self.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def service_names(self) -> set[str]:
        return {
            value(kv.value)
            for req in self.requests
            for rs in req.resource_spans
            for kv in rs.resource.attributes
            if kv.key == "service.name"
        }


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@contextmanager
def http_receiver() -> Iterator[tuple[str, Received]]:
    """``(base URL, received)``; spans go to ``<base URL>/v1/traces``."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.paths.append(self.path)
            received.requests.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
