"""Families found by name: the Registry type, and the retriever families.

Rerankers register in :mod:`cascade.rerank.registry`, benchmarks in :mod:`cascade.eval.bench`.

Entries are ``"module:attribute"`` strings, imported on first use, so listing the names
costs nothing and a family whose optional dependency is missing fails only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import InvalidInput


class Registry:
    def __init__(self, kind: str, entries: dict[str, str] | None = None):
        self.kind = kind
        self._entries: dict[str, str | Any] = dict(entries or {})

    def register(self, name: str, target: str | Any) -> None:
        self._entries[name] = target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Any:
        try:
            target = self._entries[name]
        except KeyError:
            raise InvalidInput(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            ) from None
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._entries[name] = target
        return target


#: Index families: each class builds, saves, loads and searches one index format.
RETRIEVERS = Registry(
    "retriever",
    {
        "bm25": "cascade.retrieval.sparse.bm25:BM25Retriever",
        "dense": "cascade.retrieval.dense.retriever:DenseRetriever",
        "colbert": "cascade.retrieval.late.plaid:PLAIDIndex",
        "impact": "cascade.retrieval.sparse.impact:ImpactRetriever",
        "splade": "cascade.retrieval.sparse.impact:ImpactRetriever",
        "slim": "cascade.retrieval.sparse.slim:SlimRetriever",
        "lucene-bm25": "cascade.retrieval.sparse.lucene:LuceneBM25Retriever",
        "sharded": "cascade.retrieval.sharded:ShardedRetriever",
    },
)
