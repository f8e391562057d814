"""What a request leaves behind for people: OpenTelemetry spans (``telemetry``, ``semconv``,
``otel``), the decision log (``decision_log``, ``log_stats``) and the redaction that keeps
secrets out of all of it (``redaction``). The runtime writes to it; it never calls a model."""
