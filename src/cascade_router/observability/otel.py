"""``configure_tracing``: OTLP export in one call, for applications with no tracer provider yet.

```python
from cascade_router.observability.otel import configure_tracing

configure_tracing("support-bot")  # OTLP/HTTP to the OTEL_EXPORTER_OTLP_* endpoint (default localhost:4318)
```

The standard ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, protocol, timeout) apply as
usual; arguments given here take precedence. Spans are exported by a ``BatchSpanProcessor`` in a
background thread, so a slow or unreachable collector never holds a request up. Needs the
``otel`` extra: ``pip install 'cascade-router[otel]'``.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from opentelemetry import trace

from cascade_router.observability import semconv as sc

Protocol = Literal["http/protobuf", "grpc"]

_log = logging.getLogger("cascade_router.otel")


def _protocol(protocol: Protocol | None) -> Protocol:
    if protocol is not None:
        return protocol
    env = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if env not in ("http/protobuf", "grpc"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={env!r}: cascade-router supports http/protobuf and grpc"
        )
    return env  # type: ignore[return-value]


def configure_tracing(
    service_name: str = "cascade-router",
    *,
    protocol: Protocol | None = None,
    endpoint: str | None = None,
    headers: dict[str, str] | None = None,
    set_global: bool = True,
) -> trace.TracerProvider:
    """Build a tracer provider that exports over OTLP, and (by default) make it the global one.

    ``endpoint``: for HTTP the full traces URL (``http://localhost:4318/v1/traces``), for gRPC
    ``host:port`` or ``http://host:4317``. None reads the ``OTEL_EXPORTER_OTLP_*`` variables.
    Returns the provider; call ``provider.shutdown()`` to flush it on exit (the SDK also does
    that at interpreter exit).
    """
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ImportError(
            "configure_tracing needs the otel extra: pip install 'cascade-router[otel]'"
        ) from exc

    chosen = _protocol(protocol)
    if chosen == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError as exc:
            raise ImportError("OTLP over gRPC needs: pip install 'cascade-router[otel]'") from exc
        exporter: object = GrpcExporter(endpoint=endpoint, headers=headers, insecure=_insecure(endpoint))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter(endpoint=endpoint, headers=headers)

    # The service name also names the Phoenix project (OpenInference's resource attribute), so
    # traces land in a project of their own instead of Phoenix's "default".
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name, sc.OI_PROJECT: service_name})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    if set_global:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            _log.warning("a tracer provider is already set; cascade-router spans go to that one")
        else:
            trace.set_tracer_provider(provider)
    return provider


def _insecure(endpoint: str | None) -> bool | None:
    if endpoint is None:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_INSECURE / the scheme itself
    return endpoint.startswith("http://") or "://" not in endpoint
