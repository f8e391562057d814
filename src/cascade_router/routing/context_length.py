"""Skip rungs whose context window cannot hold the request (and its answer)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr

from cascade_router.routing.base import RouteContext, RoutingRule, _fork_safe

if TYPE_CHECKING:
    from cascade_router.ladder import RungRuntime


class ContextLengthRule(RoutingRule):
    """``{kind: context_length}``: a rung is skipped when the prompt's tokens plus the rung's
    ``max_tokens`` exceed its context window (``Rung.context_window``, else the price catalog's;
    a rung whose window is unknown is never skipped). A provider's "context length exceeded"
    error teaches it: that rung is skipped for requests at least as long, in this process."""

    kind: Literal["context_length"] = "context_length"
    safety_margin: float = Field(default=0.1, ge=0, le=1)
    """Share of the window kept free: the prompt is counted with OpenAI's cl100k encoding,
    which other providers' tokenizers differ from by some 10-20 %."""
    output_tokens: int = Field(default=0, ge=0, le=10_000_000)
    """Tokens kept for the answer when a rung states no ``max_tokens``."""

    _refused: dict[int, int] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def model_post_init(self, context: Any, /) -> None:
        _fork_safe.add(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def skip(self, ctx: RouteContext, rung: RungRuntime) -> str | None:
        refused = self._refused.get(rung.index)
        if refused is not None and ctx.prompt_tokens_at_most >= refused and ctx.prompt_tokens >= refused:
            return (
                f"context {ctx.prompt_tokens:,} tokens >= {refused:,}, "
                "a size its provider refused as too long"
            )
        window = rung.context_window
        if window is None:
            return None
        answer = rung.max_output_tokens if rung.max_output_tokens is not None else self.output_tokens
        usable = int(window * (1 - self.safety_margin))
        if ctx.prompt_tokens_at_most + answer <= usable or ctx.prompt_tokens + answer <= usable:
            return None  # the bound, free to compute, settles most requests without counting
        room = f"window {window:,}" + (f" less {self.safety_margin:.0%}" if self.safety_margin else "")
        asked = f"context {ctx.prompt_tokens:,}" + (f" + max_tokens {answer:,}" if answer else "")
        return f"{asked} tokens > {room}"

    def learn(self, ctx: RouteContext, rung: RungRuntime, error_class: str | None) -> None:
        if error_class != "context_length":
            return
        with self._lock:
            known = self._refused.get(rung.index)
            if known is None or ctx.prompt_tokens < known:
                self._refused[rung.index] = ctx.prompt_tokens
