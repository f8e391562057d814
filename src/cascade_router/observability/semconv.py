"""Span and attribute names.

The GenAI semantic conventions are still in development and the constants in
``opentelemetry-semantic-conventions`` are marked deprecated, so the names are defined here.
OpenInference names make Phoenix show span kinds correctly; ``cascade.*`` names are ours.
"""

# GenAI semantic conventions
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT = "gen_ai.usage.input_tokens"
USAGE_OUTPUT = "gen_ai.usage.output_tokens"
WORKFLOW_NAME = "gen_ai.workflow.name"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
EVALUATION_EVENT = "gen_ai.evaluation.result"
DRIFT_EVENT = "cascade.drift"
"""On a rung span: its live scores no longer look like its calibration data (see ``drift``)."""
EVALUATION_NAME = "gen_ai.evaluation.name"
EVALUATION_SCORE = "gen_ai.evaluation.score.value"
EVALUATION_LABEL = "gen_ai.evaluation.score.label"
INFERENCE_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
ERROR_TYPE = "error.type"

# OpenInference
OI_SPAN_KIND = "openinference.span.kind"
OI_MODEL_NAME = "llm.model_name"
OI_PROMPT_TOKENS = "llm.token_count.prompt"
OI_COMPLETION_TOKENS = "llm.token_count.completion"
OI_TOTAL_TOKENS = "llm.token_count.total"

# cascade-router
LADDER = "cascade.ladder"
REQUEST_ID = "cascade.request_id"
ATTEMPT_COUNT = "cascade.attempt_count"
ANSWERED_MODEL = "cascade.answered_by.model"
ANSWERED_PROVIDER = "cascade.answered_by.provider"
ANSWERED_RUNG = "cascade.answered_by.rung"
ANSWERED_NAME = "cascade.answered_by.name"
OUTCOME = "cascade.outcome"
FINAL_CONFIDENCE = "cascade.final_confidence"
COST = "cascade.cost.usd"
CASCADE_INPUT = "cascade.usage.input_tokens"
CASCADE_OUTPUT = "cascade.usage.output_tokens"
RUNG_INDEX = "cascade.rung.index"
RUNG_NAME = "cascade.rung.name"
CONFIDENCE = "cascade.confidence"
CONFIDENCE_METHOD = "cascade.confidence.method"
THRESHOLD = "cascade.threshold"
DECISION = "cascade.decision"
DECISION_REASON = "cascade.decision.reason"
ERROR_CLASS = "cascade.error.class"
"""What a rung's error means (``cascade_router.failures``): retryable, timeout, context_length..."""
CIRCUIT = "cascade.circuit.state"
"""``open`` on a rung skipped because its circuit breaker is open."""
ROUTING_RULE = "cascade.routing.rule"
"""On a rung skipped by a routing rule: the rule's kind (``context_length``, ``domain``...);
``cascade.decision.reason`` says why."""
"""Why the rung's answer was accepted or escalated (``score 0.412 < threshold 0.85``, ``final
rung``): a decision's reason, whichever way it went."""
ROLE = "cascade.role"

OI_INPUT_VALUE = "input.value"
OI_INPUT_MIME = "input.mime_type"
OI_OUTPUT_VALUE = "output.value"
OI_OUTPUT_MIME = "output.mime_type"
OI_PROJECT = "openinference.project.name"
"""The Phoenix project a trace lands in (a resource attribute); Phoenix's ``default`` otherwise."""

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
