"""Qdrant-style hybrid queries: a nested ``prefetch`` compiled to one :class:`PipelineSpec`.

The request mirrors Qdrant's Query API (``POST /collections/NAME/points/query``)::

    {"collection": "kb",
     "prefetch": [{"query": "stem cells", "using": "bm25", "limit": 100},
                  {"query": "stem cells", "using": "dense", "limit": 100, "filter": {"year": {"$gte": 2020}}}],
     "query": {"fusion": "rrf"},
     "limit": 10}

A node (the request itself, or one ``prefetch`` entry) is one of:

- a **retriever** (no ``prefetch``): ``using`` names the retriever family of one of the
  collection's indexes (optional when it holds one), ``limit`` is how many hits it hands up
  (the stage's ``depth``; Qdrant's default 10), ``params`` are search-time parameters
  (Qdrant's ``params``: e.g. ``{"nprobe": 32}``; over the collection stage's own),
  ``index_params`` (Cascade's) picks one of several indexes of one family by its build
  parameters, ``query`` is the query text;
- a **fusion** of retrievers: ``prefetch`` is a list of retrievers and ``query`` is
  ``{"fusion": "rrf" | "dbsf" | "zscore" | "minmax"}`` or ``{"rrf": {"k": K, "weights": [...]}}``;
- a **rerank** stage over one prefetch (a retriever, a fusion or another rerank stage):
  ``query`` is ``{"rerank": NAME}`` or ``{"rerank": {"reranker": NAME, "params": {...}}}``
  (Qdrant re-scores with a vector named by ``using``; Cascade re-scores with a reranker); it
  reads the prefetch's ``limit`` candidates (the stage's ``depth``);
- a pass-through: one ``prefetch`` and no query object; its ``limit`` caps its prefetch's.

The top node's ``limit`` (or ``k``) is the number of hits. A ``filter`` (Cascade's syntax,
:mod:`.filters`) holds for every retriever beneath the node that carries it, ANDed on the
way down, as Qdrant propagates filters to the leaf queries; the request's top-level
``filter`` holds for all of them. Cascade runs every retriever on one query text (or one
batch of texts), so every ``query`` text in the tree must be the same; a retriever without
one takes it from the request's ``query``.

Fusion names (and how they map onto :func:`cascade.retrieval.fusion.fuse`):

- ``rrf``: Qdrant's RRF, sum of w / (k + rank) with zero-based ranks and k = 2 by default,
  is Cascade's ``rrf`` (one-based ranks) with k - 1: ``{"fusion": "rrf"}`` is Cascade's
  rrf with k = 1, ``{"rrf": {"k": 60}}`` with k = 59; the scores are Qdrant's exactly.
- ``dbsf``: Qdrant's distribution-based score fusion, implemented exactly as Cascade's
  ``dbsf`` (each list mapped linearly from mean -/+ 3 sample standard deviations onto 0..1,
  unclipped, a missing document adding nothing). Per list that is (z + 3) / 6, so it ranks
  like a z-score sum in which a document missing from a list counts as z = -3; Cascade's
  ``zscore`` instead gives it the lowest z-score in that list and uses the population
  standard deviation. ``{"fusion": "zscore"}`` asks for that one.
- ``minmax`` and ``zscore``: Cascade's own (Weaviate's relativeScoreFusion is ``minmax``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.pipeline import PipelineSpec

#: Cascade's fusion method for each ``{"fusion": NAME}`` a prefetch request may name.
FUSION_NAMES = {"rrf": "rrf", "dbsf": "dbsf", "zscore": "zscore", "minmax": "minmax"}
#: Qdrant's RRF constant when a request gives none (zero-based ranks: Cascade's k is one less).
QDRANT_RRF_K = 2
MAX_DEPTH = 8


@dataclasses.dataclass(frozen=True)
class Node:
    """One level of a prefetch tree, as the request gives it."""

    prefetch: tuple[Node, ...] = ()
    query: Any = None  # a text, a list of texts, a query object (dict) or None
    using: str | None = None
    limit: int = 10
    filter: Mapping[str, Any] | None = None
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    index_params: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, obj: Any) -> Node:
        """From a parsed request model (or anything with the same attributes)."""
        children = getattr(obj, "prefetch", None) or ()
        return cls(
            prefetch=tuple(cls.of(c) for c in children),
            query=getattr(obj, "query", None),
            using=getattr(obj, "using", None),
            limit=getattr(obj, "limit", None) or 10,
            filter=getattr(obj, "filter", None) or None,
            params=dict(getattr(obj, "params", None) or {}),
            index_params=getattr(obj, "index_params", None),
        )


@dataclasses.dataclass(frozen=True)
class CompiledPrefetch:
    """What a prefetch request runs: the pipeline, its query texts, the hits to return and
    the filter of each retriever stage (``None`` when no prefetch carries one)."""

    spec: PipelineSpec
    texts: list[str]
    k: int
    stage_where: list[dict[str, Any] | None] | None


def compile_prefetch(
    prefetch: Sequence[Any], query: Any, k: int, collection_pipeline: PipelineSpec
) -> CompiledPrefetch:
    """Compile a request's ``prefetch`` tree into a pipeline.

    Args:
        prefetch: the request's ``prefetch`` entries (models or :class:`Node` objects).
        query: the request's ``query``: a text, a list of texts, a query object or None.
        k: the request's ``limit`` / ``k``.
        collection_pipeline: the collection's own pipeline: ``using`` names a retriever
            family among its stages, whose build and search parameters a prefetch inherits.

    Raises:
        InvalidInput: a tree that does not describe retrievers -> fusion -> rerankers, differing
            query texts, an unknown retriever or fusion, an ambiguous ``using``.
    """
    top = Node(prefetch=tuple(Node.of(p) for p in prefetch), query=query, limit=k)
    texts = _query_texts(top)
    rerankers: list[dict[str, Any]] = []  # outermost first
    filters: list[dict[str, Any]] = []  # the filters of the stages above the retrievers
    fusion: dict[str, Any] = {}
    node, place, k_out = top, "", None
    for _ in range(MAX_DEPTH + 1):
        node = _collapse(node, place)
        k_out = node.limit if k_out is None else k_out
        obj = node.query if isinstance(node.query, Mapping) else None
        if not node.prefetch:  # one retriever
            if obj is not None:
                raise InvalidInput(f"{_at(place)}a query object ({_keys(obj)}) needs a prefetch to act on")
            leaves = [(node, place.rstrip(".") or "prefetch.0")]
            break
        _no_retriever_fields(node, place)
        if node.filter:
            filters.append(dict(node.filter))
        kind, value = _query_object(obj, place)
        if kind == "rerank":
            if len(node.prefetch) != 1:
                raise InvalidInput(
                    f"{_at(place)}a rerank stage reads one prefetch, got {len(node.prefetch)}: fuse several "
                    'in a nested prefetch with "query": {"fusion": "rrf"}'
                )
            inner_place = f"{place}prefetch.0."
            inner = _collapse(node.prefetch[0], inner_place)
            rerankers.append(_rerank_stage(value, inner.limit, collection_pipeline, place))
            node, place = inner, inner_place
            continue
        for i, c in enumerate(node.prefetch):  # a fusion of retrievers
            if c.prefetch:
                raise InvalidInput(
                    f"{place}prefetch.{i}: Cascade fuses once, over retrievers: a fused prefetch cannot have "
                    "prefetches of its own (rerank stages go above the fusion)"
                )
        fusion = _fusion(kind, value, len(node.prefetch), place)
        leaves = [(c, f"{place}prefetch.{i}") for i, c in enumerate(node.prefetch)]
        break
    else:
        raise InvalidInput(f"prefetch: nested deeper than {MAX_DEPTH} levels")

    weights = fusion.pop("weights", None)
    retrievers, stage_where = [], []
    for i, (leaf, where) in enumerate(leaves):
        stage = _retriever_stage(leaf, collection_pipeline, where)
        if weights is not None:
            stage["weight"] = weights[i]
        retrievers.append(stage)
        own = [*filters, dict(leaf.filter)] if leaf.filter else filters
        stage_where.append(None if not own else own[0] if len(own) == 1 else {"$and": own})
    data: dict[str, Any] = {"name": "prefetch", "retrievers": retrievers, "k": k_out}
    data["rerankers"] = list(reversed(rerankers))  # the innermost reranks first
    if fusion:
        data["fusion"] = fusion
    spec = PipelineSpec.parse(data)
    return CompiledPrefetch(spec, texts, k_out, stage_where if any(w is not None for w in stage_where) else None)


def _at(place: str) -> str:
    return f"{place.rstrip('.')}: " if place else ""


def _keys(obj: Mapping[str, Any]) -> str:
    return ", ".join(repr(k) for k in obj) or "{}"


def _collapse(node: Node, place: str) -> Node:
    """A pass-through (one prefetch, no query object, nothing else) merged into its prefetch:
    the smaller limit, both filters."""
    while len(node.prefetch) == 1 and not isinstance(node.query, Mapping):
        _no_retriever_fields(node, place)
        inner = node.prefetch[0]
        both = [f for f in (node.filter, inner.filter) if f]
        node = dataclasses.replace(
            inner,
            limit=min(node.limit, inner.limit),
            filter=both[0] if len(both) == 1 else {"$and": [dict(f) for f in both]} if both else None,
        )
    return node


def _no_retriever_fields(node: Node, place: str) -> None:
    for name, value in (("using", node.using), ("params", node.params), ("index_params", node.index_params)):
        if value:
            raise InvalidInput(
                f"{_at(place)}{name!r} belongs to a prefetch that runs a retriever (one without prefetches "
                "of its own); this one combines prefetches"
            )


def _query_texts(top: Node) -> list[str]:
    """The one query text (or batch) of the whole tree."""
    found: list[tuple[str, Any]] = []

    def walk(node: Node, place: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"prefetch: nested deeper than {MAX_DEPTH} levels")
        if node.query is not None and not isinstance(node.query, Mapping):
            found.append((f"{place}query", node.query))
        for i, c in enumerate(node.prefetch):
            walk(c, f"{place}prefetch.{i}.", depth + 1)

    walk(top, "", 0)
    if not found:
        raise InvalidInput(
            'give the query text: in the request\'s "query", or in each prefetch\'s "query"'
        )
    first_place, first = found[0]
    for place, text in found[1:]:
        if text != first:
            raise InvalidInput(
                f"{place}: Cascade runs every retriever on the same query text, and this one "
                f"({json.dumps(text)[:200]}) differs from {first_place}'s ({json.dumps(first)[:200]})"
            )
    return [first] if isinstance(first, str) else list(first)


def _query_object(obj: Mapping[str, Any] | None, place: str) -> tuple[str, Any]:
    if obj is None:
        raise InvalidInput(
            f"{_at(place)}several prefetches need a \"query\" that says how to combine them: "
            '{"fusion": "rrf"} (or "dbsf", "zscore", "minmax"), {"rrf": {"k": 60}}, or over one prefetch '
            '{"rerank": NAME}; the query text goes in each prefetch\'s "query"'
        )
    if len(obj) != 1 or next(iter(obj)) not in ("fusion", "rrf", "rerank"):
        raise InvalidInput(
            f'{_at(place)}query: expected {{"fusion": NAME}}, {{"rrf": {{"k": K, "weights": [...]}}}} or '
            f"{{\"rerank\": NAME}}, got an object with {_keys(obj)}"
        )
    kind, value = next(iter(obj.items()))
    return kind, value


def _fusion(kind: str, value: Any, n: int, place: str) -> dict[str, Any]:
    where = f"{_at(place)}query.{kind}"
    if kind == "fusion":
        if value not in FUSION_NAMES:
            raise InvalidInput(f"{where}: unknown fusion {value!r}; valid: {', '.join(FUSION_NAMES)}")
        method = FUSION_NAMES[value]
        return {"method": method, "k": QDRANT_RRF_K - 1} if method == "rrf" else {"method": method}
    # {"rrf": {"k": K, "weights": [...]}}: Qdrant's parametrized RRF
    if not isinstance(value, Mapping) or set(value) - {"k", "weights"}:
        raise InvalidInput(f'{where}: expected {{"k": K, "weights": [...]}} (both optional)')
    k = value.get("k")
    k = QDRANT_RRF_K if k is None else k
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInput(f"{where}.k: expected an integer >= 1 (Qdrant's k; ranks count from 0), got {k!r}")
    out: dict[str, Any] = {"method": "rrf", "k": k - 1}
    weights = value.get("weights")
    if weights is not None:
        ok = isinstance(weights, list) and all(
            isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in weights
        )
        if not ok or len(weights) != n:
            raise InvalidInput(f"{where}.weights: expected {n} numbers >= 0, one per prefetch")
        out["weights"] = [float(w) for w in weights]
    return out


def _rerank_stage(value: Any, depth: int, collection: PipelineSpec, place: str) -> dict[str, Any]:
    where = f"{_at(place)}query.rerank"
    if isinstance(value, str):
        name, params = value, None
    elif isinstance(value, Mapping) and isinstance(value.get("reranker"), str) and set(value) <= {"reranker", "params"}:
        name, params = value["reranker"], value.get("params")
        if params is not None and not isinstance(params, Mapping):
            raise InvalidInput(f"{where}.params: expected an object")
    else:
        raise InvalidInput(f'{where}: expected a reranker name or {{"reranker": NAME, "params": {{...}}}}')
    if params is None:  # the collection's own stage of that family, if it has one
        own = [s for s in collection.rerankers if s.reranker == name]
        params = own[0].params if own else {}
    return {"reranker": name, "depth": depth, "params": dict(params)}


def _retriever_stage(leaf: Node, collection: PipelineSpec, place: str) -> dict[str, Any]:
    stages = collection.retrievers
    families = sorted({s.retriever for s in stages})
    using = leaf.using
    if using is None:
        if len(stages) != 1:
            raise InvalidInput(
                f"{place}: name the index to search with \"using\": this collection holds {', '.join(families)}"
            )
        using = stages[0].retriever
    same = [s for s in stages if s.retriever == using]
    if leaf.index_params is not None:
        same = [s for s in same if s.params == dict(leaf.index_params)]
        base = same[0] if same else None
        params = dict(leaf.index_params)
    elif len(same) > 1:
        options = " or ".join(json.dumps(s.params) for s in same)
        raise InvalidInput(
            f"{place}: this collection holds {len(same)} {using} indexes; pick one with \"index_params\": {options}"
        )
    else:
        base = same[0] if same else None
        params = dict(base.params) if base is not None else {}
    # a family the collection does not index is refused by the collection (IndexMismatch, 409)
    search = {**(base.search if base is not None else {}), **leaf.params}
    return {"retriever": using, "depth": leaf.limit, "params": params, "search": search}
