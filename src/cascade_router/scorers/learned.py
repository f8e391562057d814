"""A learned quality estimator (FrugalGPT-style) usable as a rung's scorer.

Features of (request, answer): an embedding of the text (any LangChain ``Embeddings``, any
``texts -> vectors`` callable, or the offline default: hashed words and word pairs, which
downloads nothing) plus cheap answer features (length, hedging, a final-answer marker, arithmetic
the answer states and whether it is right...). A logistic regression maps them to P(good answer).

Fitting needs ``pip install 'cascade-router[learn]'`` (scikit-learn); scoring needs nothing: the
model is saved as plain JSON weights, so loading a scorer file never runs code from it.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import PrivateAttr

from cascade_router.errors import ConfigError
from cascade_router.model_io import ModelOutput, Request
from cascade_router.scorers.base import PrefixCheck, Score, Scorer, ScoringContext

FORMAT = "cascade-router.learned-scorer"
VERSION = 1

_NUMBER = r"-?\d[\d,]*\.?\d*"
_ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
_INLINE = re.compile(r"((?:\d[\d,]*\.?\d*\s*[-+*/x×]\s*)+\d[\d,]*\.?\d*)\s*=\s*\$?(-?\d[\d,]*\.?\d*)")
_FINAL = re.compile(r"####\s*\$?(" + _NUMBER + ")")
_HEDGE = re.compile(
    r"\b(however|assum\w*|approximately|round\w*|cannot|can't|not possible|doesn't make sense|unclear|"
    r"i think|probably|maybe|not sure)\b",
    re.IGNORECASE,
)
_ARITH_OK = re.compile(r"[\d\s.+\-*/()%]+")

FEATURES = (
    "has_final_marker",
    "annotations",
    "annotations_wrong",
    "any_annotation_wrong",
    "inline_equations",
    "inline_equations_wrong",
    "any_inline_wrong",
    "final_not_integer",
    "final_negative",
    "final_in_question",
    "hedges",
    "log_answer_chars",
    "log_question_chars",
    "question_numbers",
    "answer_numbers",
    "answer_lines",
    "final_matches_last_result",
    "final_missing_from_work",
)
"""The cheap answer features, in model order."""


def _evaluate(expression: str) -> float | None:
    """The value of a plain arithmetic expression, or None. Only digits and operators are
    evaluated; anything else is not arithmetic and is not run."""
    text = expression.replace(",", "").replace("x", "*").replace("×", "*").replace("^", "**")
    if not _ARITH_OK.fullmatch(text) or len(text) > 200:
        return None
    try:
        value = eval(text, {"__builtins__": {}}, {})
    except Exception:
        return None
    return float(value) if isinstance(value, int | float) else None


def _wrong(expression: str, stated: str) -> bool:
    value = _evaluate(expression)
    try:
        claimed = float(stated.replace(",", "").rstrip("."))
    except ValueError:
        return True
    return value is None or abs(value - claimed) > 1e-4 * max(1.0, abs(claimed))


def _complete(text: str, stated: str) -> bool:
    """Whether the number ``stated`` is followed by something, i.e. fully generated (a prefix
    may end inside a number: "= 4" of "= 42")."""
    end = text.rfind(stated)
    return end >= 0 and end + len(stated) < len(text)


def _to_float(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def _appears_before(value: float, answer: str, final: re.Match[str] | None) -> bool:
    """Whether the final answer's number was worked out before the final-answer marker."""
    body = answer[: final.start()] if final else answer
    return any(_to_float(n) == value for n in re.findall(_NUMBER, body))


def answer_features(question: str, answer: str) -> list[float]:
    """The values of ``FEATURES`` for one (question, answer)."""
    annotations = _ANNOTATION.findall(answer)
    annotations_wrong = sum(_wrong(e, v) for e, v in annotations)
    inline = _INLINE.findall(answer)
    inline_wrong = sum(_wrong(e, v) for e, v in inline)
    final = _FINAL.search(answer)
    results = [m[1] for m in annotations] + [m[1] for m in inline]
    last = _to_float(results[-1]) if results else None
    value: float | None = None
    if final:
        try:
            value = float(final.group(1).replace(",", "").rstrip("."))
        except ValueError:
            value = None
    return [
        1.0 if final else 0.0,
        float(len(annotations)),
        float(annotations_wrong),
        1.0 if annotations_wrong else 0.0,
        float(len(inline)),
        float(inline_wrong),
        1.0 if inline_wrong else 0.0,
        1.0 if value is not None and value != int(value) else 0.0,
        1.0 if value is not None and value < 0 else 0.0,
        1.0 if value is not None and value == int(value) and str(int(value)) in question else 0.0,
        float(len(_HEDGE.findall(answer))),
        math.log1p(len(answer)),
        math.log1p(len(question)),
        float(len(re.findall(_NUMBER, question))),
        float(len(re.findall(_NUMBER, answer))),
        float(answer.count("\n")),
        1.0 if value is not None and last is not None and abs(value - last) < 1e-6 else 0.0,
        1.0 if value is not None and not _appears_before(value, answer, final) else 0.0,
    ]


_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class HashingEmbedder:
    """Hashed counts of words and word pairs, L2-normalised: an embedding that needs no model.

    CRC32 keeps the hashing identical across processes and machines (Python's ``hash`` is salted)."""

    n_features: int = 4096

    def embed(self, text: str) -> dict[int, float]:
        words = _WORD.findall(text.lower())
        counts: dict[int, float] = {}
        for token in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
            index = zlib.crc32(token.encode()) % self.n_features
            counts[index] = counts.get(index, 0.0) + 1.0
        norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
        return {k: v / norm for k, v in counts.items()}


Embeddings = Callable[[list[str]], list[list[float]]]


def embedding_function(embeddings: Any) -> Embeddings:
    """A ``texts -> vectors`` function from a LangChain ``Embeddings`` or a callable."""
    if hasattr(embeddings, "embed_documents"):
        return embeddings.embed_documents  # type: ignore[no-any-return]
    if callable(embeddings):
        return embeddings  # type: ignore[no-any-return]
    raise ConfigError(
        "embeddings", f"expected a LangChain Embeddings or a callable, got {type(embeddings).__name__}"
    )


@dataclass
class LearnedModel:
    """Weights of a fitted estimator, and how its features are built."""

    mean: list[float]
    scale: list[float]
    hand_weights: list[float]
    embed_weights: list[float]
    intercept: float
    embedder: dict[str, Any] = field(default_factory=lambda: {"kind": "hashing", "n_features": 4096})
    """``{"kind": "hashing", "n_features": N}`` or ``{"kind": "external", "dimensions": D}``."""
    info: dict[str, Any] = field(default_factory=dict)
    """What it was fitted on (counts, cross-fitted AUROC...), for people reading the file."""
    prefix: LearnedModel | None = None
    """A model of P(good answer) from the *start* of an answer (``fit(prefixes=...)``), for the
    ``early_abort`` mode: the full model, fitted on finished answers, reads a prefix as an
    answer without a final result and scores nearly every one low."""

    def text(self, question: str, answer: str) -> str:
        return f"{question}\n\n{answer}"

    def hand(self, question: str, answer: str) -> list[float]:
        raw = answer_features(question, answer)
        return [(x - m) / s for x, m, s in zip(raw, self.mean, self.scale, strict=True)]

    def predict(self, question: str, answer: str, embedding: Sequence[float] | None = None) -> float:
        z = self.intercept + sum(
            w * x for w, x in zip(self.hand_weights, self.hand(question, answer), strict=True)
        )
        if self.embedder["kind"] == "hashing":
            sparse = HashingEmbedder(self.embedder["n_features"]).embed(self.text(question, answer))
            z += sum(self.embed_weights[i] * v for i, v in sparse.items())
        else:
            if embedding is None:
                raise ConfigError("embeddings", "this scorer was fitted with external embeddings: pass them")
            z += sum(w * x for w, x in zip(self.embed_weights, embedding, strict=True))
        # A stable logistic: an answer far outside the training data (a feature constant in
        # training, so its scale is tiny) gives a huge |z|, and exp would overflow.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "prefix"}
        if self.prefix is not None:
            data["prefix"] = self.prefix.as_dict()
        return data

    def save(self, path: str | Path) -> None:
        payload = {"format": FORMAT, "version": VERSION, "features": list(FEATURES), **self.as_dict()}
        Path(path).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnedModel:
        prefix = data.get("prefix")
        return cls(
            mean=data["mean"],
            scale=data["scale"],
            hand_weights=data["hand_weights"],
            embed_weights=data["embed_weights"],
            intercept=data["intercept"],
            embedder=data["embedder"],
            info=data.get("info", {}),
            prefix=cls.from_dict(prefix) if isinstance(prefix, dict) else None,
        )

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(str(path), "not a cascade-router learned-scorer file")
        if data.get("version") != VERSION or data.get("features") != list(FEATURES):
            raise ConfigError(str(path), "written by another cascade-router version: fit it again")
        return cls.from_dict(data)


PREFIX_CHARS = (64, 128, 256)
"""Where answers are cut to fit the prefix model (``fit(prefixes=...)``): about 16, 32 and 64
tokens, the span in which an early abort saves most."""


@dataclass(frozen=True)
class Example:
    """One labelled answer: the request's text, the answer's text, and whether it was good."""

    question: str
    answer: str
    good: bool


def fit(
    examples: Sequence[Example],
    *,
    embeddings: Any = None,
    c: float = 1.0,
    n_features: int = 4096,
    prefixes: Sequence[int] = (),
    prefix_targets: Sequence[float] | None = None,
    targets: Sequence[float] | None = None,
) -> LearnedModel:
    """Fit a logistic regression on labelled answers (needs scikit-learn).

    ``c`` is the inverse L2 regularisation strength (scikit-learn's default). Choosing it by
    cross-validation inside the fitted half was tried on GSM8K and did worse than this default.
    ``prefixes``: also fit ``LearnedModel.prefix`` on the answers cut to these many characters,
    for the ``early_abort`` mode; not with external embeddings (a prefix check must not call an
    embedding model every few chunks). Each cut is labelled with ``prefix_targets`` (the whole
    answer's score by a model that never saw it, from ``cross_fit``), so that the prefix model
    estimates the score the finished answer will get, which is what the threshold is compared
    with; without them, with whether the whole answer was good. ``targets``: soft labels in
    [0, 1] instead of ``good`` (fitted as weighted positive and negative copies).
    """
    try:
        import numpy as np
        from scipy.sparse import csr_matrix, hstack, vstack
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise ImportError("fitting a learned scorer needs: pip install 'cascade-router[learn]'") from exc
    labels = np.array([e.good for e in examples], dtype=float)
    if targets is None and len(set(labels.tolist())) < 2:
        raise ConfigError("examples", "need both good and bad answers to learn from")
    hand = np.array([answer_features(e.question, e.answer) for e in examples])
    mean = hand.mean(axis=0)
    scale = hand.std(axis=0)
    scale[scale == 0] = 1.0
    hand = (hand - mean) / scale
    texts = [f"{e.question}\n\n{e.answer}" for e in examples]
    embedder: dict[str, Any]
    if embeddings is None:
        hasher = HashingEmbedder(n_features)
        rows, cols, vals = [], [], []
        for r, text in enumerate(texts):
            for col, v in hasher.embed(text).items():
                rows.append(r)
                cols.append(col)
                vals.append(v)
        embedded = csr_matrix((vals, (rows, cols)), shape=(len(texts), n_features))
        embedder = {"kind": "hashing", "n_features": n_features}
    else:
        vectors = np.array(embedding_function(embeddings)(texts), dtype=float)
        embedded = csr_matrix(vectors)
        embedder = {"kind": "external", "dimensions": int(vectors.shape[1])}
    matrix = hstack([csr_matrix(hand), embedded]).tocsr()
    if targets is None:
        model = LogisticRegression(C=c, max_iter=5000).fit(matrix, labels)
    else:
        # Soft labels: each example once as good with weight t and once as bad with 1 - t,
        # which is the logistic loss of the target probability t.
        soft = np.clip(np.asarray(targets, dtype=float), 0.0, 1.0)
        model = LogisticRegression(C=c, max_iter=5000).fit(
            vstack([matrix, matrix]),
            np.concatenate([np.ones(len(soft)), np.zeros(len(soft))]),
            sample_weight=np.concatenate([soft, 1.0 - soft]),
        )
    weights = model.coef_[0]
    k = hand.shape[1]
    prefix = None
    if prefixes and embeddings is None:
        cut: list[Example] = []
        cut_targets: list[float] = []
        for n in prefixes:
            for i, e in enumerate(examples):
                if len(e.answer) > n:
                    cut.append(Example(e.question, e.answer[:n], e.good))
                    cut_targets.append(prefix_targets[i] if prefix_targets is not None else float(e.good))
        if cut and 0.0 < sum(cut_targets) < len(cut_targets):
            prefix = fit(cut, c=c, n_features=n_features, targets=cut_targets)
            prefix.info["prefix_chars"] = list(prefixes)
            prefix.info["targets"] = "cross-fitted scores" if prefix_targets is not None else "good"
    return LearnedModel(
        mean=mean.tolist(),
        scale=scale.tolist(),
        hand_weights=weights[:k].tolist(),
        embed_weights=weights[k:].tolist(),
        intercept=float(model.intercept_[0]),
        embedder=embedder,
        info={"examples": len(examples), "good": int(labels.sum()), "c": c},
        prefix=prefix,
    )


def cross_fit(
    examples: Sequence[Example], *, folds: int = 5, seed: int = 0, **fit_kwargs: Any
) -> list[float]:
    """Out-of-fold P(good) for every example: each is scored by a model that never saw it."""
    import random

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    scores = [0.0] * len(examples)
    for fold in range(folds):
        held = set(order[fold::folds])
        model = fit([e for i, e in enumerate(examples) if i not in held], **fit_kwargs)
        given = fit_kwargs.get("embeddings")
        embed = embedding_function(given) if given is not None else None
        held_list = sorted(held)
        vectors = (
            embed([model.text(examples[i].question, examples[i].answer) for i in held_list])
            if embed
            else None
        )
        for j, i in enumerate(held_list):
            e = examples[i]
            scores[i] = model.predict(e.question, e.answer, vectors[j] if vectors is not None else None)
    return scores


class LearnedScorer(Scorer):
    """P(good answer) from a fitted ``LearnedModel``, as a rung's scorer.

    ``LearnedScorer(path="scorer.json")`` or, in YAML, ``scorer: {kind: learned, path: scorer.json}``.
    """

    kind: Literal["learned"] = "learned"
    method: ClassVar[str] = "learned"
    path: str | None = None
    """The file written by ``LearnedModel.save`` / ``cascade-router learn``."""
    embeddings: Any = None
    """The embeddings the model was fitted with, when not the default hashing."""
    model: Any = None
    """A ``LearnedModel`` given directly instead of a path."""

    _model: LearnedModel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(self.model, LearnedModel):
            self._model = self.model
        elif self.path is not None:
            self._model = LearnedModel.load(self.path)
        else:
            raise ConfigError("scorer", "a learned scorer needs a path or a model")
        if self._model.embedder["kind"] == "external" and self.embeddings is None:
            raise ConfigError(
                "scorer.embeddings", "this scorer was fitted with external embeddings: pass them"
            )

    @property
    def fitted(self) -> LearnedModel:
        """The fitted model this scorer uses (loaded from ``path`` or given as ``model``)."""
        return self._model

    def score(self, request: Request, output: ModelOutput, ctx: ScoringContext) -> Score:
        question = "\n".join(m.content for m in request.messages if m.role != "system")
        embedding = None
        if self.embeddings is not None:
            embedding = embedding_function(self.embeddings)([self._model.text(question, output.text)])[0]
        return Score(self._model.predict(question, output.text, embedding), "learned")

    def score_prefix(self, request: Request, partial: ModelOutput, threshold: float) -> PrefixCheck | None:
        """The prefix model's value on the text so far (None without one); hopeless once the
        text states a calculation that is wrong (``<<6*7=43>>``, ``6 x 7 = 43``): the finished
        answer will still state it. Not with external embeddings (a call per check would cost
        more than it saves)."""
        if self.embeddings is not None or not partial.text.strip():
            return None
        question = "\n".join(m.content for m in request.messages if m.role != "system")
        # Only a model fitted on prefixes gives a prefix a comparable score; without one, only
        # the wrong-calculation rule can abandon an answer.
        prefix_model = self._model.prefix
        value = prefix_model.predict(question, partial.text) if prefix_model is not None else None
        for expression, stated in [*_ANNOTATION.findall(partial.text), *_INLINE.findall(partial.text)]:
            evaluable = _evaluate(expression.replace(",", "")) is not None
            if evaluable and _complete(partial.text, stated) and _wrong(expression, stated):
                return PrefixCheck(value, f"a stated calculation is wrong: {expression.strip()} = {stated}")
        return PrefixCheck(value)
