"""Per-call overhead of the cascade against a bare chat model, measured paired.

Every variant calls zero-latency fake chat models in one process. The fakes report a model name
and token usage, as real providers do, so the cascade prices and records what it would in
production. The protocol, for noisy shared machines:

- **paired batches**: each round runs one batch of every variant, in a fresh random order, and
  each variant's time is divided by the bare model's time *in the same round*; the figure is the
  median of those paired ratios, with a bootstrap 95 % interval;
- **drained between batches**: the decision log's writer is flushed and the span processor
  forced to export before the next batch is timed, so one variant's leftovers are not paid by the
  next;
- **two paths**: with no callback handler attached the cascade runs its rungs without LangChain
  runs around them (its fast path); ``*_with_a_handler`` attach a no-op handler, which makes the
  cascade keep its own run and its rungs' child runs, as LangSmith or a usage callback would;
- **floors**: two wrappers that do the least a wrapper chat model can do. One calls its inner
  model's ``generate()`` under a child callback manager (two LangChain runs, as the cascade keeps
  them); the other calls the inner ``_generate`` directly (one run). The cascade's ratio is worth
  reading against them, not against 1.0.

    .venv/bin/python benchmarks/overhead.py [--rounds 30] [--calls 150] [--seed 0]

Writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, CallbackManager, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cascade_router.observability.decision_log import DecisionLog
from cascade_router.observability.telemetry import Telemetry
from cascade_router.routing import PreRouterRule, difficulty
from langchain_cascade_router import CascadeChatModel

RESULTS = Path(__file__).parent / "results" / "overhead.json"
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


LOGPROB_TOKENS = 500
LOGPROBS = {
    "content": [
        {"token": f" t{i}", "logprob": -0.05, "top_logprobs": [{"token": f" t{i}", "logprob": -0.05}]}
        for i in range(LOGPROB_TOKENS)
    ]
}


class Fake(BaseChatModel):
    """A zero-latency model that answers like a provider: a model name and token usage, and
    OpenAI-format token logprobs when given (as ``ChatOpenAI(logprobs=True)`` returns)."""

    model_name: str = "gpt-4o-mini"
    logprobs: dict[str, Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        metadata: dict[str, Any] = {"model_name": self.model_name, "finish_reason": "stop"}
        output_tokens = 3
        if self.logprobs is not None:
            metadata["logprobs"] = self.logprobs
            output_tokens = len(self.logprobs["content"])
        message = AIMessage(
            "ok",
            response_metadata=metadata,
            usage_metadata={
                "input_tokens": 12,
                "output_tokens": output_tokens,
                "total_tokens": 12 + output_tokens,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


class ChildRunFloor(BaseChatModel):
    """The least a wrapper that keeps its inner call a child run can do: ``generate()`` of the
    inner model under a child callback manager."""

    inner: BaseChatModel

    @property
    def _llm_type(self) -> str:
        return "floor-child-run"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        callbacks = (
            CallbackManager(
                handlers=list(run_manager.inheritable_handlers),
                inheritable_handlers=list(run_manager.inheritable_handlers),
                parent_run_id=run_manager.run_id,
            )
            if run_manager is not None
            else None
        )
        result = self.inner.generate([messages], stop=stop, callbacks=callbacks)
        generation = result.generations[0][0]
        assert isinstance(generation, ChatGeneration)
        return ChatResult(generations=[generation])


class DirectFloor(BaseChatModel):
    """The least any wrapper can do: the inner model's ``_generate``, one LangChain run."""

    inner: BaseChatModel

    @property
    def _llm_type(self) -> str:
        return "floor-direct"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self.inner._generate(messages, stop=stop, **kwargs)


class NoOpHandler(BaseCallbackHandler):
    """A callback handler that does nothing: attaching one makes every run real (as LangSmith or
    a usage callback would), so the cascade keeps its own run and its rungs' child runs."""


HANDLED: Any = {"callbacks": [NoOpHandler()]}


def traced(llm: CascadeChatModel) -> CascadeChatModel:
    """Spans to an in-memory exporter: the cheapest real SDK pipeline."""
    llm.engine.telemetry = Telemetry(llm.engine.name, ["only"], tracer_provider=PROVIDER)
    return llm


def recorded_spans() -> list[ReadableSpan]:
    """The spans of one traced 1-rung cascade call, outermost first."""
    llm = traced(CascadeChatModel(rungs=[{"model": Fake()}]))
    llm.invoke("hi")
    PROVIDER.force_flush()
    spans = sorted(EXPORTER.get_finished_spans(), key=lambda s: s.start_time or 0)
    EXPORTER.clear()
    if len(spans) != 3:
        raise RuntimeError(f"expected the three-span tree, got {[s.name for s in spans]}")
    return spans


def sdk_replica() -> Callable[[], Any]:
    """The cascade's three spans (workflow, rung, inference), nested as ours are, with the same
    names, kinds, attributes and events, made with the OTel SDK alone around a bare model call:
    what these spans cost at the least. Replayed from a recorded trace, so it stays the same
    tree as ours when our attributes change."""
    tracer = PROVIDER.get_tracer("replica")
    bare = Fake()
    workflow, rung, chat = (
        (s.name, s.kind, dict(s.attributes or {}), [(e.name, dict(e.attributes or {})) for e in s.events])
        for s in recorded_spans()
    )

    def span(recorded: tuple[str, trace.SpanKind, dict[str, Any], list[tuple[str, dict[str, Any]]]]) -> Any:
        name, kind, attributes, events = recorded
        current = tracer.start_as_current_span(name, kind=kind, attributes=attributes)
        return current, events

    def call() -> Any:
        (w, w_events), (r, r_events), (c, c_events) = span(workflow), span(rung), span(chat)
        with w as w_span, r as r_span, c as c_span:
            answer = bare.invoke("hi")
            for target, events in ((c_span, c_events), (r_span, r_events), (w_span, w_events)):
                for event_name, event_attributes in events:
                    target.add_event(event_name, event_attributes)
        return answer

    return call


TENANT = {"tenant": "bench"}
QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' market "
    "daily for $2 per fresh duck egg. How much in dollars does she make every day at the market?"
)
"""A GSM8K question (the first of its test set): what the pre-router is asked about."""


def _prerouter() -> Any:
    from cascade_router.evaluation.datasets import Dataset

    data = Dataset.load("builtin:routellm-gsm8k")
    texts = [str(item.request) for item in data]
    right = [data.quality(item.id, "mistralai/Mixtral-8x7B-Instruct-v0.1") >= 0.5 for item in data]
    return difficulty.fit(texts, {"cheap": right})


def variants(log: DecisionLog) -> dict[str, Callable[[], Any]]:
    bare = Fake()
    fallbacks = Fake().with_fallbacks([Fake()])
    child_floor = ChildRunFloor(inner=Fake())
    direct_floor = DirectFloor(inner=Fake())
    one = CascadeChatModel(rungs=[{"model": Fake()}], tracing=False)
    two_accept = CascadeChatModel(
        rungs=[{"model": Fake(), "scorer": lambda m, a: 0.9, "threshold": 0.5}, {"model": Fake()}],
        tracing=False,
    )
    two_escalate = CascadeChatModel(
        rungs=[{"model": Fake(), "scorer": lambda m, a: 0.1, "threshold": 0.5}, {"model": Fake()}],
        tracing=False,
    )
    # Every routing rule configured (in-process budget store), on the ladder above; the same
    # rules but the deadline (what the rules cost when no call needs a time limit); the learned
    # pre-router alone, fitted on the built-in GSM8K questions and asked about a GSM8K question
    # (its cost grows with the request, up to 2,000 characters).
    priced = {"price": {"input_per_mtok": 1, "output_per_mtok": 1}, "context_window": 100_000}

    def routed(rules: list[Any]) -> CascadeChatModel:
        return CascadeChatModel(
            rungs=[
                {"model": Fake(), "name": "cheap", "scorer": lambda m, a: 0.9, "threshold": 0.5, **priced},
                {"model": Fake(), "name": "strong", **priced},
            ],
            routing=rules,
            tracing=False,
        )

    rules: list[Any] = [
        {"kind": "context_length"},
        {"kind": "cost", "max_cost_usd": 1.0, "output_tokens": 100},
        {"kind": "deadline", "deadline_s": 60},
        {"kind": "domain", "name": "medical", "keywords": ["diagnosis", "dosage"], "only": ["strong"]},
        {"kind": "budget", "key": "tenant", "usd": 1e9, "output_tokens": 100},
    ]
    ruled = routed(rules)
    no_deadline = routed([r for r in rules if r["kind"] != "deadline"])
    prerouted = routed([PreRouterRule(model=_prerouter(), threshold=0.0)])
    unrouted = routed([])  # the pre-router's baseline: the same ladder, the same question
    # The same ladder with a 60 s timeout on each rung: what the deadline rule's timeout costs
    # (a sync call with a time limit runs on a thread), so the rules' own logic is seen apart.
    timed = CascadeChatModel(
        rungs=[
            {"model": Fake(), "name": "cheap", "scorer": lambda m, a: 0.9, "threshold": 0.5, "timeout": 60},
            {"model": Fake(), "name": "strong", "timeout": 60},
        ],
        tracing=False,
    )
    bare_logprobs = Fake(logprobs=LOGPROBS)
    one_logprobs = CascadeChatModel(rungs=[{"model": Fake(logprobs=LOGPROBS)}], tracing=False)
    with_trace = traced(CascadeChatModel(rungs=[{"model": Fake()}]))
    replica = sdk_replica()
    with_log = CascadeChatModel(rungs=[{"model": Fake()}], decision_log=log, tracing=False)
    with_both = traced(CascadeChatModel(rungs=[{"model": Fake()}], decision_log=log))
    return {
        "bare": lambda: bare.invoke("hi"),
        "with_fallbacks": lambda: fallbacks.invoke("hi"),
        "floor_child_run": lambda: child_floor.invoke("hi"),
        "floor_direct": lambda: direct_floor.invoke("hi"),
        "cascade_1_rung": lambda: one.invoke("hi"),
        "bare_with_a_handler": lambda: bare.invoke("hi", HANDLED),
        "floor_child_run_with_a_handler": lambda: child_floor.invoke("hi", HANDLED),
        "cascade_1_rung_with_a_handler": lambda: one.invoke("hi", HANDLED),
        "bare_500_logprob_tokens": lambda: bare_logprobs.invoke("hi"),
        "cascade_1_rung_500_logprob_tokens": lambda: one_logprobs.invoke("hi"),
        "cascade_2_rungs_accept_first": lambda: two_accept.invoke("hi"),
        "cascade_2_rungs_escalate_once": lambda: two_escalate.invoke("hi"),
        "cascade_2_rungs_accept_first_all_rules": lambda: ruled.invoke("hi", route_metadata=TENANT),
        "cascade_2_rungs_accept_first_timeout": lambda: timed.invoke("hi"),
        "cascade_2_rungs_accept_first_rules_but_deadline": lambda: no_deadline.invoke(
            "hi", route_metadata=TENANT
        ),
        "cascade_2_rungs_accept_first_prerouter": lambda: prerouted.invoke(QUESTION),
        "cascade_2_rungs_accept_first_question": lambda: unrouted.invoke(QUESTION),
        "cascade_1_rung_traced": lambda: with_trace.invoke("hi"),
        "sdk_replica_of_the_spans": replica,
        "cascade_1_rung_logged": lambda: with_log.invoke("hi"),
        "cascade_1_rung_traced_logged": lambda: with_both.invoke("hi"),
    }


def drain(log: DecisionLog) -> None:
    """Background work of the previous batch, done before the next batch is timed."""
    log.flush(60)
    PROVIDER.force_flush()
    EXPORTER.clear()
    gc.collect()


def measure(rounds: int, calls: int, seed: int, log: DecisionLog) -> dict[str, list[float]]:
    """Microseconds per call, one value per round and variant."""
    runs = variants(log)
    for fn in runs.values():  # warm up imports, caches and the price catalog
        for _ in range(100):
            fn()
    drain(log)
    rng = random.Random(seed)
    per_call: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    gc.disable()
    try:
        for _ in range(rounds):
            rng.shuffle(names)
            for name in names:
                fn = runs[name]
                t0 = time.perf_counter_ns()
                for _ in range(calls):
                    fn()
                per_call[name].append((time.perf_counter_ns() - t0) / calls / 1000)
                drain(log)
    finally:
        gc.enable()
    return per_call


def bootstrap(values: list[float], rng: random.Random, n: int = 2000) -> tuple[float, float]:
    """95 % interval of the median, by resampling the paired per-round values."""
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[int(0.025 * n)], medians[int(0.975 * n) - 1]


def paired(per_call: dict[str, list[float]], base: str, seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    for name, times in per_call.items():
        ratios = [t / b for t, b in zip(times, per_call[base], strict=True)]
        low, high = bootstrap(ratios, rng)
        yield (
            name,
            {
                "median_us": statistics.median(times),
                "ratio": statistics.median(ratios),
                "ratio_95ci": [low, high],
            },
        )


def per_round(per_call: dict[str, list[float]], fn: Callable[..., float], *names: str) -> float:
    """The median over rounds of ``fn`` applied to the named variants' times of each round."""
    return statistics.median(fn(*times) for times in zip(*(per_call[n] for n in names), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as log_dir:
        log = DecisionLog(Path(log_dir) / "bench.db")
        per_call = measure(args.rounds, args.calls, args.seed, log)
        log.close()
        stats = log.stats()
    print(f"decision log: {stats.written} records written, {stats.lost} lost")
    to_bare = dict(paired(per_call, "bare", args.seed))
    to_cascade = dict(paired(per_call, "cascade_1_rung", args.seed))
    # Both per round (the four batches of a round ran side by side), then the median.
    # What our spans add to the cascade, over what the same three spans cost made with the SDK
    # alone around a bare call.
    span_cost = per_round(
        per_call,
        lambda traced, plain, replica, bare: (traced - plain) / (replica - bare),
        "cascade_1_rung_traced",
        "cascade_1_rung",
        "sdk_replica_of_the_spans",
        "bare",
    )
    # What an answer's logprobs cost the cascade per token when no scorer reads them: the
    # cascade's extra time on a 500-token answer with logprobs over its extra time on a short one.
    per_token = per_round(
        per_call,
        lambda lp, lp_bare, plain, bare: ((lp - lp_bare) - (plain - bare)) / LOGPROB_TOKENS,
        "cascade_1_rung_500_logprob_tokens",
        "bare_500_logprob_tokens",
        "cascade_1_rung",
        "bare",
    )

    # What the routing rules add to a request, in microseconds: each routed ladder against the
    # same ladder without the rules (or, for all of them, also with the deadline's time limit).
    def added(variant: str, baseline: str) -> float:
        return per_round(per_call, lambda a, b: a - b, variant, baseline)

    rules_us = added("cascade_2_rungs_accept_first_all_rules", "cascade_2_rungs_accept_first")
    rules_logic_us = added("cascade_2_rungs_accept_first_all_rules", "cascade_2_rungs_accept_first_timeout")
    prerouter_us = added("cascade_2_rungs_accept_first_prerouter", "cascade_2_rungs_accept_first_question")
    rules_but_deadline_us = added(
        "cascade_2_rungs_accept_first_rules_but_deadline", "cascade_2_rungs_accept_first"
    )
    derived = {
        "routing_rules_added_us": rules_us,
        "routing_rules_but_the_deadline_added_us": rules_but_deadline_us,
        "prerouter_added_us": prerouter_us,
        "routing_rules_added_us_over_the_same_timeout": rules_logic_us,
        "extra_escalating_rung_in_bare_calls": (
            to_bare["cascade_2_rungs_escalate_once"]["ratio"]
            - to_bare["cascade_2_rungs_accept_first"]["ratio"]
        ),
        # The handler path against the least a wrapper keeping the child run does, both with
        # the same handler attached: what our own code adds there, in bare calls.
        "handler_path_over_its_floor_in_bare_calls": (
            to_bare["cascade_1_rung_with_a_handler"]["ratio"]
            - to_bare["floor_child_run_with_a_handler"]["ratio"]
        ),
        "tracing_added_to_cascade": to_cascade["cascade_1_rung_traced"]["ratio"] - 1.0,
        "tracing_cost_vs_sdk_replica_of_the_spans": span_cost,
        "unread_logprobs_us_per_token": per_token,
        "decision_log_added_to_cascade": to_cascade["cascade_1_rung_logged"]["ratio"] - 1.0,
    }
    print(f"{'variant':<32} {'median us/call':>15} {'x bare (95% CI)':>22} {'x cascade':>10}")
    for name, row in to_bare.items():
        low, high = row["ratio_95ci"]
        print(
            f"{name:<32} {row['median_us']:>15.1f} {row['ratio']:>8.2f} [{low:.2f}, {high:.2f}]"
            f" {to_cascade[name]['ratio']:>10.2f}"
        )
    print()
    for key, value in derived.items():
        print(f"{key:<40} {value:+.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "protocol": "paired batches in random order per round, log and spans drained between "
                "batches; ratio = median over rounds of variant/bare in the same round",
                "rounds": args.rounds,
                "calls_per_batch": args.calls,
                "seed": args.seed,
                "python": platform.python_version(),
                "variants": {
                    name: {**row, "ratio_to_cascade_1_rung": to_cascade[name]["ratio"]}
                    for name, row in to_bare.items()
                },
                "derived": derived,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
