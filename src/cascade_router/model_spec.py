"""A model written as a mapping in a config: ``{provider, model, <any client parameter>}``.

One format for every entry point. The core builds its native backend from it; the LangChain
adapter the provider's chat model (``init_chat_model``), the LlamaIndex adapter the provider's
LLM class, each with the other keys as the client's own parameters:

```yaml
model: {provider: openai, model: gemma-3-270m, base_url: "http://127.0.0.1:8177/v1", max_tokens: 64}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from cascade_router.errors import ConfigError
from cascade_router.observability.redaction import redact, register_object_secrets


@dataclass(frozen=True, slots=True)
class ModelSpec:
    provider: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    """The client's own parameters (``base_url``, ``max_tokens``, ``temperature``, ``api_key``...)."""

    def __repr__(self) -> str:  # never the options: they may hold a key
        return f"ModelSpec({self.provider}:{self.model}, options={sorted(self.options)})"


def model_spec(value: Mapping[str, Any], field_name: str) -> ModelSpec:
    """The spec a mapping describes; its credentials are registered for redaction first."""
    options = dict(value)
    provider = options.pop("provider", None)
    model = options.pop("model", None)
    # Before anything can fail and quote them: a key in an error message is redacted.
    register_object_secrets(SimpleNamespace(**{str(k): v for k, v in options.items()}))
    if not isinstance(provider, str) or not provider or not isinstance(model, str) or not model:
        raise ConfigError(field_name, "a model mapping needs string 'provider' and 'model' keys")
    return ModelSpec(provider, model, options)


def build_error(field_name: str, spec: ModelSpec, exc: BaseException) -> ConfigError:
    """A ``ConfigError`` for a client that could not be built, its message redacted."""
    return ConfigError(
        field_name, redact(f"cannot build {spec.provider}:{spec.model}: {type(exc).__name__}: {exc}")
    )
