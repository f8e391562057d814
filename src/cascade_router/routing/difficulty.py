"""A learned difficulty model: from the request alone, the probability that each rung's answer
would be accepted and right (``cascade-router learn --pre-router``; the ``pre_router`` rule).

Requests are embedded offline by default (hashed words and word pairs of the text with its numbers
replaced by a placeholder, optionally character n-grams, plus a few counts: length, how many
numbers, sentences, percentages, fractions), which downloads nothing; or by any
LangChain ``Embeddings`` / ``texts -> vectors`` callable. Two variants:

- ``logistic``: a logistic regression per rung over the embedding (fitting needs scikit-learn,
  the ``learn`` extra; predicting needs nothing).
- ``knn``: embedding similarity over past outcomes: the similarity-weighted success rate of the
  ``k`` most similar fitted requests, shrunk towards the overall rate (``prior_weight``).

The model is saved as plain JSON, so loading a file never runs code from it.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cascade_router.errors import ConfigError
from cascade_router.scorers.learned import embedding_function

FORMAT = "cascade-router.pre-router"
VERSION = 1

Variant = Literal["logistic", "knn"]
Sparse = dict[int, float]

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_SENTENCE = re.compile(r"[.?!](?:\s|$)")

MAX_CHARS = 2000
"""Characters of a request that are embedded offline: its last 2,000."""

COUNTS = ("log_chars", "numbers", "log_words", "sentences", "percent", "decimals", "fractions", "money")
"""The request counts appended to the hashed features, in order (standardised when fitted)."""


def _counts(text: str) -> list[float]:
    text = text[-MAX_CHARS:]
    numbers = _NUMBER.findall(text)
    return [
        math.log1p(len(text)),
        float(len(numbers)),
        math.log1p(len(_WORD.findall(text))),
        float(len(_SENTENCE.findall(text))),
        float(text.count("%") + text.lower().count("percent")),
        float(sum("." in n for n in numbers)),
        float(text.count("/")),
        float(text.count("$")),
    ]


@dataclass(frozen=True)
class RequestHasher:
    """The offline request embedding: hashed features (CRC32, identical in every process; Python's
    ``hash`` is salted), L2-normalised, then the standardised ``COUNTS``."""

    n_features: int = 8192
    mean: tuple[float, ...] = (0.0,) * len(COUNTS)
    scale: tuple[float, ...] = (1.0,) * len(COUNTS)
    char_grams: tuple[int, ...] = ()
    """Lengths of the character n-grams hashed besides words and word pairs (none by default:
    on GSM8K, 3- and 4-grams changed no figure and took two thirds of the time)."""

    @property
    def dimensions(self) -> int:
        return self.n_features + len(COUNTS)

    def embed(self, text: str) -> Sparse:
        # The end of a long request (its question, usually) stands for all of it: a prediction
        # on every request must cost a fraction of a millisecond, not grow with the prompt.
        text = text[-MAX_CHARS:]
        words = _WORD.findall(_NUMBER.sub(" 0 ", text.lower()))
        joined = " ".join(words)
        n = self.n_features
        counts = Counter(
            _bucket(t, n) for t in itertools.chain(words, map(" ".join, itertools.pairwise(words)))
        )
        # Character n-grams in their own hash space, weighted down: there are many of them.
        grams = Counter(
            _bucket("#" + joined[i : i + k], n) for k in self.char_grams for i in range(len(joined) - k + 1)
        )
        out: Sparse = dict(counts)
        for index, c in grams.items():
            out[index] = out.get(index, 0.0) + 0.25 * c
        norm = math.sqrt(sum(v * v for v in out.values())) or 1.0
        sparse = {k: v / norm for k, v in out.items()}
        for j, (x, m, s) in enumerate(zip(_counts(text), self.mean, self.scale, strict=True)):
            sparse[n + j] = (x - m) / s
        return sparse


@functools.lru_cache(maxsize=1 << 17)
def _bucket(token: str, n_features: int) -> int:
    """The hashed index of a token (CRC32: identical in every process, unlike ``hash``); cached,
    since the same words and n-grams come back request after request."""
    return zlib.crc32(token.encode()) % n_features


def _dense(vector: Sequence[float]) -> Sparse:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return {i: v / norm for i, v in enumerate(vector) if v}


def _dot(a: Sparse, b: Sparse) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(k, 0.0) for k, v in a.items())


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass
class Head:
    """One rung's predictor of P(its answer is accepted and right)."""

    rung: str
    base_rate: float
    """The success rate in the fitted data."""
    weights: list[float] | None = None
    """``logistic``: one weight per embedding dimension."""
    intercept: float = 0.0
    neighbours: list[Sparse] | None = None
    """``knn``: the fitted requests' embeddings."""
    outcomes: list[float] | None = None
    """``knn``: whether each fitted request succeeded (1/0)."""

    def predict(self, x: Sparse, k: int, prior_weight: float) -> float:
        if self.weights is not None:
            w = self.weights
            return _sigmoid(self.intercept + sum(v * w[i] for i, v in x.items() if i < len(w)))
        assert self.neighbours is not None
        assert self.outcomes is not None
        sims = heapq.nlargest(k, zip((_dot(x, n) for n in self.neighbours), self.outcomes, strict=True))
        weight = sum(max(s, 0.0) for s, _ in sims)
        hits = sum(max(s, 0.0) * y for s, y in sims)
        return (hits + prior_weight * self.base_rate) / (weight + prior_weight)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"rung": self.rung, "base_rate": self.base_rate}
        if self.weights is not None:
            data |= {"weights": [round(w, 6) for w in self.weights], "intercept": self.intercept}
        else:
            assert self.neighbours is not None
            data |= {
                "neighbours": [{str(i): round(v, 6) for i, v in n.items()} for n in self.neighbours],
                "outcomes": self.outcomes,
            }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Head:
        neighbours = data.get("neighbours")
        return cls(
            rung=data["rung"],
            base_rate=float(data["base_rate"]),
            weights=data.get("weights"),
            intercept=float(data.get("intercept", 0.0)),
            neighbours=None
            if neighbours is None
            else [{int(i): v for i, v in n.items()} for n in neighbours],
            outcomes=data.get("outcomes"),
        )


@dataclass
class DifficultyModel:
    """Per-rung P(accepted and right) from the request alone."""

    variant: Variant
    heads: dict[str, Head]
    """By rung name."""
    embedder: dict[str, Any]
    """``{"kind": "hashing", "n_features": N, "mean": [...], "scale": [...]}`` or
    ``{"kind": "external", "dimensions": D}``."""
    k: int = 40
    """``knn``: neighbours consulted."""
    prior_weight: float = 2.0
    """``knn``: how many neighbours' worth of weight the base rate gets."""
    threshold: float | None = None
    """The threshold ``learn --pre-router`` chose (the rule's default)."""
    info: dict[str, Any] = field(default_factory=dict)
    """What it was fitted on and how well it did (cross-fitted AUROC per rung...)."""

    @property
    def hasher(self) -> RequestHasher | None:
        e = self.embedder
        if e["kind"] != "hashing":
            return None
        return RequestHasher(
            e["n_features"], tuple(e["mean"]), tuple(e["scale"]), tuple(e.get("char_grams", ()))
        )

    def embed(self, texts: Sequence[str], embeddings: Any = None) -> list[Sparse]:
        hasher = self.hasher
        if hasher is not None:
            return [hasher.embed(t) for t in texts]
        if embeddings is None:
            raise ConfigError("embeddings", "this pre-router was fitted with external embeddings: pass them")
        return [_dense(v) for v in embedding_function(embeddings)(list(texts))]

    def predict(self, x: Sparse) -> dict[str, float]:
        """P(accepted and right) per rung for one embedded request."""
        return {name: head.predict(x, self.k, self.prior_weight) for name, head in self.heads.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "variant": self.variant,
            "embedder": self.embedder,
            "k": self.k,
            "prior_weight": self.prior_weight,
            "threshold": self.threshold,
            "info": self.info,
            "heads": [h.as_dict() for h in self.heads.values()],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict()) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> DifficultyModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), f"cannot read a pre-router file: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(
                str(path), "not a cascade-router pre-router file (cascade-router learn --pre-router)"
            )
        if data.get("version") != VERSION:
            raise ConfigError(str(path), "written by another cascade-router version: fit it again")
        heads = [Head.from_dict(h) for h in data["heads"]]
        return cls(
            variant=data["variant"],
            heads={h.rung: h for h in heads},
            embedder=data["embedder"],
            k=int(data.get("k", 40)),
            prior_weight=float(data.get("prior_weight", 2.0)),
            threshold=data.get("threshold"),
            info=data.get("info", {}),
        )


def fit(
    texts: Sequence[str],
    outcomes: Mapping[str, Sequence[bool]],
    *,
    variant: Variant = "logistic",
    embeddings: Any = None,
    n_features: int = 8192,
    char_grams: Sequence[int] = (),
    c: float = 1.0,
    k: int = 40,
    prior_weight: float = 2.0,
) -> DifficultyModel:
    """Fit one head per rung: ``outcomes[rung][i]`` says whether that rung's answer to
    ``texts[i]`` was accepted and right. ``c``: the logistic variant's inverse L2 strength."""
    if not texts:
        raise ConfigError("examples", "no requests to learn from")
    for rung, ys in outcomes.items():
        if len(ys) != len(texts):
            raise ConfigError(f"outcomes[{rung}]", f"{len(ys)} outcomes for {len(texts)} requests")
    embedder: dict[str, Any]
    if embeddings is None:
        raw = [_counts(t) for t in texts]
        mean = [sum(col) / len(raw) for col in zip(*raw, strict=True)]
        scale = [
            math.sqrt(sum((x - m) ** 2 for x in col) / len(raw)) or 1.0
            for col, m in zip(zip(*raw, strict=True), mean, strict=True)
        ]
        grams = tuple(char_grams)
        embedder = {
            "kind": "hashing",
            "n_features": n_features,
            "mean": mean,
            "scale": scale,
            "char_grams": list(grams),
        }
        hasher = RequestHasher(n_features, tuple(mean), tuple(scale), grams)
        vectors = [hasher.embed(t) for t in texts]
        dims = hasher.dimensions
    else:
        dense = embedding_function(embeddings)(list(texts))
        dims = len(dense[0])
        embedder = {"kind": "external", "dimensions": dims}
        vectors = [_dense(v) for v in dense]
    heads: dict[str, Head] = {}
    for rung, ys in outcomes.items():
        labels = [1.0 if y else 0.0 for y in ys]
        rate = sum(labels) / len(labels)
        if variant == "knn":
            heads[rung] = Head(rung, rate, neighbours=vectors, outcomes=labels)
            continue
        if rate in (0.0, 1.0):
            # Nothing to separate: a constant (every request alike) is the honest model.
            heads[rung] = Head(rung, rate, weights=[0.0] * dims, intercept=_logit(rate))
            continue
        weights, intercept = _logistic(vectors, labels, dims, c)
        heads[rung] = Head(rung, rate, weights=weights, intercept=intercept)
    return DifficultyModel(
        variant=variant,
        heads=heads,
        embedder=embedder,
        k=k,
        prior_weight=prior_weight,
        info={"requests": len(texts), "success_rate": {r: h.base_rate for r, h in heads.items()}},
    )


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _logistic(
    vectors: Sequence[Sparse], labels: Sequence[float], dims: int, c: float
) -> tuple[list[float], float]:
    try:
        from scipy.sparse import csr_matrix
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise ImportError("fitting a pre-router needs: pip install 'cascade-router[learn]'") from exc
    rows, cols, vals = [], [], []
    for r, x in enumerate(vectors):
        for col, v in x.items():
            rows.append(r)
            cols.append(col)
            vals.append(v)
    matrix = csr_matrix((vals, (rows, cols)), shape=(len(vectors), dims))
    model = LogisticRegression(C=c, max_iter=5000).fit(matrix, labels)
    return [float(w) for w in model.coef_[0]], float(model.intercept_[0])


def cross_fit(
    texts: Sequence[str],
    outcomes: Mapping[str, Sequence[bool]],
    *,
    folds: int = 5,
    seed: int = 0,
    **fit_kwargs: Any,
) -> dict[str, list[float]]:
    """Out-of-fold predictions for every request and rung: each by a model that never saw it."""
    import random

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    out = {rung: [0.0] * len(texts) for rung in outcomes}
    for fold in range(folds):
        held = sorted(order[fold::folds])
        held_set = set(held)
        kept = [i for i in range(len(texts)) if i not in held_set]
        model = fit(
            [texts[i] for i in kept], {r: [ys[i] for i in kept] for r, ys in outcomes.items()}, **fit_kwargs
        )
        vectors = model.embed([texts[i] for i in held], fit_kwargs.get("embeddings"))
        for i, x in zip(held, vectors, strict=True):
            for rung, p in model.predict(x).items():
                out[rung][i] = p
    return out
