"""The contracts of the pipeline's stages: retrievers (every index family) and rerankers.

The rerankers themselves live a layer up (:mod:`cascade.rerank`); the pipeline only needs
what they answer, declared here as a protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar, Protocol, Self, runtime_checkable

from .types import Document, Query, Ranking


class Retriever(ABC):
    """One index family: built from documents, saved to and loaded from a directory,
    searched a batch of queries at a time.

    ``search`` is the one method that matters; ``search_one`` is a convenience over it.
    """

    kind: ClassVar[str]

    @classmethod
    @abstractmethod
    def build(cls, docs: Iterable[Document], **params) -> Self:
        """Index a stream of documents."""

    @abstractmethod
    def search(self, queries: Sequence[Query], k: int = 10) -> list[Ranking]:
        """Return one ranking of at most ``k`` hits per query, in the order given."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the index directory atomically (manifest + arrays)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> Self:
        """Open an index directory written by :meth:`save`."""

    @property
    @abstractmethod
    def num_docs(self) -> int: ...

    def search_one(self, text: str, k: int = 10) -> Ranking:
        return self.search([Query("q", text)], k)[0]


@runtime_checkable
class Reranker(Protocol):
    """Reorders each query's candidates; what a pipeline's rerank stage calls."""

    def rerank_batch(
        self, queries: Sequence[Query], candidates: Sequence[Sequence[Document]], top_k: int | None = None
    ) -> list[Ranking]:
        """One ranking per query over its candidates (an empty list gives an empty ranking)."""
        ...


@runtime_checkable
class FeedbackReranker(Protocol):
    """A rerank stage that searches again with what it learned from the candidates (relevance
    feedback, e.g. ReDE-RF): the pipeline hands it its loaded retrievers as well. It may rank
    documents from outside its candidates; the pipeline keeps the rest of the list beneath them."""

    def rerank_with_retrievers(
        self, queries: Sequence[Query], candidates: Sequence[Sequence[Document]], retrievers: Sequence[Retriever]
    ) -> list[Ranking]:
        """One ranking per query."""
        ...
