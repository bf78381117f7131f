"""The service engine: collections under a data directory, plus the shared models that
searches, reranking, embeddings and RAG context use. Plain Python; the REST API
(:mod:`api.app`) is a thin layer over it.

Models are loaded once per name and shared by every request (rerankers and encoders are
used read-only at inference, so one instance serves concurrent requests).
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.eval.presets import resolve_pipeline
from cascade.rerank.registry import RERANKERS, RerankerFactory, build_rerankers, load_reranker
from cascade.retrieval.base import Reranker
from cascade.retrieval.errors import Conflict, InvalidInput, MissingDependency, NotFound, require
from cascade.retrieval.models import DEFAULT_DENSE_MODEL, resolve_model_path
from cascade.retrieval.pipeline import PipelineSpec
from cascade.retrieval.types import Document, Query

from .collection import SegmentedCollection
from .config import CollectionConfig, SearchOutput, check_name
from .context import PackedContext, pack_context, whitespace_tokens
from .protocol import Collection, WritableCollection

log = logging.getLogger(__name__)


class Engine:
    """Args:
    data_dir: where collections live (``DATA_DIR/collections/NAME``).
    reranker_params: constructor arguments per reranker name (for ``/v1/rerank``).
    embedding_models: model names that ``embed`` may load.
    tokenizer_models: model names whose tokenizer may count context tokens.
    background_compaction: merge segments in a thread (else inline, after the write).
    reranker_factory: builds a reranker from (registry name, params); default: loaded in this
        process. The Ray deployment passes one that scores on reranker replicas.
    """

    def __init__(
        self,
        data_dir: str | Path,
        reranker_params: Mapping[str, Mapping[str, Any]] | None = None,
        embedding_models: Sequence[str] = (DEFAULT_DENSE_MODEL,),
        tokenizer_models: Sequence[str] = (DEFAULT_DENSE_MODEL,),
        background_compaction: bool = True,
        reranker_factory: RerankerFactory | None = None,
    ):
        self.root = Path(data_dir) / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self.reranker_params = {k: dict(v) for k, v in (reranker_params or {}).items()}
        self.embedding_models, self.tokenizer_models = list(embedding_models), list(tokenizer_models)
        self.background_compaction = background_compaction
        self._make_reranker = reranker_factory or load_reranker
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}
        self._model_lock = threading.Lock()
        self._collections: dict[str, Collection] = {}
        for trash in self.root.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)
        for path in sorted(self.root.iterdir()):
            if (path / "manifest.json").is_file():
                self._collections[path.name] = SegmentedCollection.open(path)

    # -- collections ---------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        pipeline: str | Mapping[str, Any] | None = "bm25",
        chunking: Mapping[str, Any] | None = None,
        compaction: Mapping[str, Any] | None = None,
    ) -> SegmentedCollection:
        """Raises: InvalidInput (bad name or config), NotFound (unknown preset), Conflict (exists)."""
        check_name(name)
        spec = resolve_pipeline(pipeline if pipeline is not None else "bm25", allow_files=False)
        compaction = {"background": self.background_compaction, **(compaction or {})}
        config = _validated_config(name, spec, chunking, compaction)
        with self._lock:
            if name in self._collections:
                raise Conflict(f"collection {name!r} already exists")
            coll = SegmentedCollection.create(self.root / name, config)
            self._collections[name] = coll
        return coll

    def attach(self, name: str, collection: Collection) -> None:
        """Serve a read-only collection held elsewhere (an index directory built by
        ``cascade index``, see :class:`.index_collection.IndexCollection`) beside the
        data directory's own.

        Raises: InvalidInput (bad name), Conflict (the name is taken).
        """
        check_name(name)
        with self._lock:
            if name in self._collections:
                raise Conflict(f"collection {name!r} already exists")
            self._collections[name] = collection

    def collection(self, name: str) -> Collection:
        with self._lock:
            coll = self._collections.get(name)
        if coll is None:
            raise NotFound(f"no collection {name!r}")
        return coll

    def writable_collection(self, name: str) -> WritableCollection:
        """The collection ``name`` for a write.

        Raises: NotFound (no such collection), Conflict (a read-only index served from elsewhere).
        """
        coll = self.collection(name)
        if coll.read_only or not isinstance(coll, WritableCollection):
            raise Conflict(
                f"collection {name!r} is a read-only index served from {coll.root}: rebuild it with "
                "`cascade index`, or write to a collection of the data directory"
            )
        return coll

    def collection_names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def drop_collection(self, name: str) -> None:
        with self._lock:
            coll = self._collections.get(name)
            if coll is None:
                raise NotFound(f"no collection {name!r}")
            if coll.read_only:
                raise Conflict(f"collection {name!r} is a read-only index served from {coll.root}; it cannot be dropped")
            del self._collections[name]
        coll.close()
        trash = self.root / f".trash-{name}-{uuid.uuid4().hex[:8]}"
        coll.root.rename(trash)  # gone from the data dir in one step; the files go after
        shutil.rmtree(trash, ignore_errors=True)

    # -- search and context --------------------------------------------------------------

    def search(
        self,
        collection: str,
        texts: Sequence[str],
        pipeline: str | Mapping[str, Any] | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        with_documents: bool = True,
    ) -> tuple[PipelineSpec, SearchOutput]:
        coll = self.collection(collection)
        spec = resolve_pipeline(pipeline, coll.pipeline, allow_files=False)
        coll.check_stages(spec)
        queries = [Query(str(i), t) for i, t in enumerate(texts)]
        return spec, coll.search(queries, spec, k, where, with_documents, rerankers=self.rerankers(spec))

    def context(
        self,
        collection: str,
        query: str,
        pipeline: str | Mapping[str, Any] | None = None,
        k: int = 20,
        where: Mapping[str, Any] | None = None,
        max_tokens: int = 1024,
        tokenizer: str | None = None,
        dedup_threshold: float = 0.9,
    ) -> PackedContext:
        """The best passages for ``query`` packed into ``max_tokens``, near-duplicates removed."""
        count = self.token_counter(tokenizer)
        _, out = self.search(collection, [query], pipeline, k, where, with_documents=True)
        return pack_context(out.hits[0], max_tokens, count, dedup_threshold)

    # -- models --------------------------------------------------------------------------

    def _model(self, key: str, load: Callable[[], Any]) -> Any:
        with self._model_lock:  # one load per name, even under concurrent first requests
            if key not in self._models:
                self._models[key] = load()
            return self._models[key]

    def reranker(self, name: str) -> Any:
        """Raises: InvalidInput naming the installed rerankers (or saying none is)."""
        if name not in RERANKERS:
            installed = ", ".join(RERANKERS.names())
            raise InvalidInput(
                f"unknown reranker model {name!r}; installed: {installed}"
                if installed
                else f"no reranker is installed, so {name!r} is not available (rerankers register in RERANKERS)"
            )
        params = self.reranker_params.get(name, {})
        key = f"reranker:{name}:{json.dumps(params, sort_keys=True)}"
        return self._model(key, lambda: self._make_reranker(name, params))

    def rerankers(self, spec: PipelineSpec) -> list[Reranker]:
        """The spec's rerankers, each loaded once per (family, params) and shared."""

        def shared(name: str, params: dict[str, Any]) -> Reranker:
            key = f"reranker:{name}:{json.dumps(params, sort_keys=True)}"
            return self._model(key, lambda: self._make_reranker(name, params))

        return build_rerankers(spec, shared)

    def rerank(self, model: str, query: str, texts: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """Cohere-style: (index into ``texts``, score), best first, ties by index."""
        reranker = self.reranker(model)
        docs = [Document(f"{i:08d}", t) for i, t in enumerate(texts)]
        ranking = reranker.rerank(Query("q", query), docs, top_n)
        return [(int(d), float(s)) for d, s in zip(ranking.doc_ids, ranking.scores, strict=True)]

    def embed(self, model: str, texts: Sequence[str]) -> np.ndarray:
        """Vectors from the dense encoder (``cascade.retrieval.encoders.dense``), when it is installed.

        Raises: InvalidInput (model not allowed), MissingDependency (no dense encoder here).
        """
        if model not in self.embedding_models:
            raise InvalidInput(f"embedding model {model!r} is not served; available: {', '.join(self.embedding_models)}")
        try:
            encode = importlib.import_module("cascade.retrieval.encoders.dense")
        except ImportError as e:
            raise MissingDependency(
                f"embeddings need the dense encoder (cascade.retrieval.encoders.dense), which this installation lacks: {e}"
            ) from None
        encoder = self._model(f"encoder:{model}", lambda: encode.DenseEncoder(model=model, show_progress=False))
        return np.asarray(encoder.encode(list(texts)), dtype=np.float32)

    def token_counter(self, tokenizer: str | None) -> Callable[[str], int]:
        """Whitespace tokens, or the tokenizer of an allowed model."""
        if tokenizer is None or tokenizer == "whitespace":
            return whitespace_tokens
        if tokenizer not in self.tokenizer_models:
            raise InvalidInput(
                f"tokenizer {tokenizer!r} is not served; available: whitespace, {', '.join(self.tokenizer_models)}"
            )

        def load():
            # a model's tokenizer.json through `tokenizers` (light, fast); transformers otherwise
            path = Path(resolve_model_path(tokenizer)) / "tokenizer.json"
            if path.is_file():
                tok = require("tokenizers", "models").Tokenizer.from_file(str(path))
                tok.no_padding()  # saved files may pad or truncate to a fixed length: count it all
                tok.no_truncation()
                return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
            auto = require("transformers", "models").AutoTokenizer.from_pretrained(resolve_model_path(tokenizer))
            return lambda text: len(auto(text, add_special_tokens=False)["input_ids"])

        return self._model(f"tokenizer:{tokenizer}", load)

    def close(self) -> None:
        with self._lock:
            colls, self._collections = list(self._collections.values()), {}
        for c in colls:
            c.close()


def _validated_config(name: str, spec: PipelineSpec, chunking: Any, compaction: Any) -> CollectionConfig:
    from pydantic import ValidationError

    try:
        return CollectionConfig(name=name, pipeline=spec, chunking=chunking or {}, compaction=compaction)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise InvalidInput(f"invalid collection config: {problems}") from None
