"""The rungs' (and judges') LangChain runs: children of the cascade's run, never streamed.

Every token a stream consumer sees (``stream``, ``astream``, ``astream_events``, LangGraph's
``messages`` mode) comes from the cascade's own run, and only from an answer that was accepted or
from the live final rung. The rungs' runs are still reported (start, end, errors, usage) so that
LangSmith and ``astream_events`` show each attempt, tagged ``cascade:rung:N`` or
``cascade:judge:N``, but:

- they carry LangGraph's ``nostream`` tag, so its ``messages`` mode ignores them (it would
  otherwise emit a rejected rung's answer when its run ends);
- streaming handlers (``astream_events``' and LangGraph's, which LangChain recognizes by their
  ``tap_output_iter``) reach them through ``_WithoutTokens``, which drops token events and is not
  itself a streaming handler, so a buffered rung does not switch to streaming because of it.

LangChain's ``stream`` / ``astream`` (and ``invoke`` with a streaming handler attached) call
``_stream`` without the run manager of the run they opened; ``publish`` / ``take`` carry it (or
what it was made from) from the calling method to ``_stream`` of the same model, in the same
context.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
)
from langchain_core.globals import get_debug
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers._streaming import _StreamingCallbackHandler
from langchain_core.utils.env import env_var_is_set

try:  # LangChain's own switches for the handlers it adds (see langchain_adds_handlers)
    from langchain_core.tracers.context import _configure_hooks, _tracing_v2_is_enabled

    _hooks: list[Any] | None = _configure_hooks
except ImportError:  # pragma: no cover - a LangChain without them: always ask it
    _hooks = None

NOSTREAM = "nostream"
"""LangGraph's tag for runs its ``messages`` stream mode leaves out (``langgraph.constants``)."""


@dataclass(frozen=True, slots=True)
class RunParent:
    """What a child run inherits from the cascade's run."""

    run_id: UUID
    handlers: list[BaseCallbackHandler]
    tags: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, run_manager: Any) -> RunParent:
        """From the run manager of the cascade's run."""
        return cls(
            run_manager.run_id,
            list(run_manager.inheritable_handlers),
            list(run_manager.inheritable_tags),
            dict(run_manager.inheritable_metadata),
        )


_STREAMING: dict[type, bool] = {}


def is_streaming_handler(handler: object) -> bool:
    """LangChain's test for a streaming handler (a runtime Protocol check, ~12 us), once per class."""
    known = _STREAMING.get(type(handler))
    if known is None:
        known = _STREAMING[type(handler)] = isinstance(handler, _StreamingCallbackHandler)
    return known


class _WithoutTokens(BaseCallbackHandler):
    """A streaming handler as a rung's run reaches it: every event but the tokens."""

    def __init__(self, inner: BaseCallbackHandler) -> None:
        self._inner = inner

    def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattribute__(self, name: str) -> Any:
        # Everything the callback managers read (events, ignore_* flags, run_inline,
        # raise_error) is the inner handler's, except the token event and the streaming
        # protocol's taps.
        if name in ("_inner", "on_llm_new_token", "__class__", "__dict__"):
            return object.__getattribute__(self, name)
        if name in ("tap_output_iter", "tap_output_aiter"):
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "_inner"), name)


class _AsyncWithoutTokens(_WithoutTokens, AsyncCallbackHandler):
    async def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        return None


def _tokenless(handler: BaseCallbackHandler) -> BaseCallbackHandler:
    if not is_streaming_handler(handler):
        return handler
    if isinstance(handler, AsyncCallbackHandler):
        return _AsyncWithoutTokens(handler)
    return _WithoutTokens(handler)


def child_callbacks(parent: RunParent | None, tag: str, asynchronous: bool) -> RunnableConfig | None:
    """Callbacks that make a rung's (or judge's) run a child of the cascade's run, unstreamed."""
    if parent is None:
        return None
    manager_cls = AsyncCallbackManager if asynchronous else CallbackManager
    handlers = [_tokenless(h) for h in parent.handlers]
    manager = manager_cls(
        handlers=handlers,
        inheritable_handlers=list(handlers),
        parent_run_id=parent.run_id,
        tags=[*parent.tags, tag, NOSTREAM],
        inheritable_tags=[*parent.tags, NOSTREAM],
        metadata=dict(parent.metadata),
        inheritable_metadata=dict(parent.metadata),
    )
    return {"callbacks": manager}


# -- from the method that opened the run to _stream -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Published:
    owner: int
    """``id()`` of the model whose ``_stream`` may take it (not any model nested inside)."""
    parent: RunParent


_PUBLISHED: contextvars.ContextVar[_Published | None] = contextvars.ContextVar(
    "cascade_router_stream_parent", default=None
)


@contextlib.contextmanager
def publish(owner: object, parent: RunParent) -> Iterator[None]:
    """Make ``parent`` what ``take(owner)`` returns in this context, until the block ends."""
    token = _PUBLISHED.set(_Published(id(owner), parent))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # reset from another context: already gone
            _PUBLISHED.reset(token)


def take(owner: object) -> RunParent | None:
    """The parent published for ``owner``, once: a second ``_stream`` of the same model nested
    inside (a rung that is the same object) does not get it."""
    published = _PUBLISHED.get()
    if published is None or published.owner != id(owner):
        return None
    _PUBLISHED.set(None)
    return published.parent


def parent_from_config(config: RunnableConfig, run_id: UUID, model: Any, *, asynchronous: bool) -> RunParent:
    """What the run that ``model.stream(input, config)`` opens with ``run_id`` passes on to its
    children, computed as LangChain computes it."""
    manager_cls = AsyncCallbackManager if asynchronous else CallbackManager
    manager = manager_cls.configure(
        config.get("callbacks"),
        model.callbacks,
        model.verbose,
        config.get("tags"),
        model.tags,
        config.get("metadata"),
        model.metadata,
    )
    return RunParent(
        run_id,
        list(manager.inheritable_handlers),
        list(manager.inheritable_tags),
        dict(manager.inheritable_metadata),
    )


def _plain(function: object) -> bool:
    return type(function) is FunctionType and function.__module__.startswith("langchain_core.")


def _patched() -> bool:
    """Whether something wraps how LangChain builds callback managers: the OpenTelemetry and
    OpenInference LangChain instrumentations wrap ``BaseCallbackManager.__init__`` to add their
    tracer to every manager, which no switch announces."""
    configure = CallbackManager.__dict__.get("configure")
    return not (
        _plain(BaseCallbackManager.__dict__.get("__init__"))
        and "__init__" not in CallbackManager.__dict__
        and isinstance(configure, classmethod)
        and _plain(configure.__func__)
    )


def langchain_adds_handlers(verbose: bool) -> bool:
    """Whether ``CallbackManager.configure`` would add handlers of its own to a call that brings
    none: verbose or debug output, LangSmith tracing, a context hook such as
    ``get_usage_metadata_callback()``, or an instrumentation that patched LangChain. The same
    conditions LangChain checks, without building a manager (half the cost); a test holds it to
    ``configure`` itself. When LangChain's internals move, it answers True and the caller asks
    LangChain."""
    if _hooks is None or _patched():
        return True
    try:
        if verbose or get_debug() or _tracing_v2_is_enabled():
            return True
        # Legacy tracing settings make LangChain raise its own clear error: let it.
        if env_var_is_set("LANGCHAIN_TRACING") or env_var_is_set("LANGCHAIN_HANDLER"):
            return True
        for var, _inheritable, handler_class, env_var in _hooks:
            if var.get() is not None:
                return True
            if env_var is not None and handler_class is not None and env_var_is_set(env_var):
                return True
    except Exception:
        return True
    return False
