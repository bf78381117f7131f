"""The service engine: collections under a data directory, plus the shared models that
searches, reranking, embeddings and RAG context use. Plain Python; the REST API
(:mod:`api.app`) is a thin layer over it.

Models are loaded once per name and shared by every request (rerankers and encoders are
used read-only at inference, so one instance serves concurrent requests).
"""

from __future__ import annotations

import copy
import dataclasses
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
from cascade.rerank.registry import RerankerFactory, build_rerankers, load_reranker
from cascade.retrieval.base import Reranker
from cascade.retrieval.errors import Conflict, InvalidInput, MissingDependency, NotFound, require
from cascade.retrieval.models import DEFAULT_DENSE_MODEL, resolve_model_path
from cascade.retrieval.pipeline import PipelineSpec
from cascade.retrieval.storage import fsync_dir
from cascade.retrieval.types import Document, Query

from .collection import SegmentedCollection
from .config import CollectionConfig, SearchOutput, check_name
from .context import PackedContext, Usefulness, grade_hits, pack_context, whitespace_tokens
from .data_lock import DataDirLock
from .models import (
    ModelCatalog,
    ServedModel,
    check_lengths,
    prompt_for,
    truncate_dimensions,
    truncate_to_tokens,
)
from .protocol import Collection, WritableCollection
from .snapshots import (
    SnapshotInfo,
    SnapshotStore,
    finish_restores,
    ready_path,
    rename_collection,
    unpack_snapshot,
)

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
    rerankers, embedders, sparse_embedders: served models by alias (alias -> (family, checkpoint)
        for rerankers, alias -> checkpoint otherwise); see :class:`.models.ModelCatalog`.
    """

    def __init__(
        self,
        data_dir: str | Path,
        reranker_params: Mapping[str, Mapping[str, Any]] | None = None,
        embedding_models: Sequence[str] = (DEFAULT_DENSE_MODEL,),
        tokenizer_models: Sequence[str] = (DEFAULT_DENSE_MODEL,),
        background_compaction: bool = True,
        reranker_factory: RerankerFactory | None = None,
        rerankers: Mapping[str, tuple[str, str]] | None = None,
        embedders: Mapping[str, str] | None = None,
        sparse_embedders: Mapping[str, str] | None = None,
    ):
        self.reranker_params = {k: dict(v) for k, v in (reranker_params or {}).items()}
        self.embedding_models, self.tokenizer_models = list(embedding_models), list(tokenizer_models)
        self.models = ModelCatalog(rerankers, embedders, sparse_embedders, self.embedding_models, self.reranker_params)
        self.background_compaction = background_compaction
        self._make_reranker = reranker_factory or load_reranker
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}
        self._model_lock = threading.Lock()
        self._data_lock = DataDirLock(data_dir)  # before touching the directory: a second writer stops here
        try:
            self._open(data_dir)
        except BaseException:
            self._data_lock.release()
            raise

    def _open(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self.snapshots = SnapshotStore(Path(data_dir) / "snapshots")
        self._collections: dict[str, Collection] = {}
        finish_restores(self.root)  # a restore killed between its renames, before the scan
        for trash in [*self.root.glob(".trash-*"), *self.root.glob(".*.tmp-*")]:  # and creates killed half-way
            shutil.rmtree(trash, ignore_errors=True)
        for path in sorted(self.root.iterdir()):
            if not path.name.startswith(".") and (path / "manifest.json").is_file():
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

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self, name: str) -> SnapshotInfo:
        """Archive the collection ``name`` at its current commit into the data directory's
        snapshot store (see :mod:`.snapshots`); searches and writes go on meanwhile.

        Raises: NotFound, Conflict (a read-only index: it is its own `cascade index` directory).
        """
        coll = self.writable_collection(name)
        return self.snapshots.create(coll)

    def restore(self, archive: str | Path, name: str | None = None) -> dict[str, Any]:
        """Bring back the collection in ``archive`` as ``name`` (default: its own name),
        replacing a collection of that name atomically (a restore killed half-way is finished
        or undone at the next start). The archive is verified whole before anything changes.

        Raises: NotFound (no archive), InvalidInput (a damaged archive, a bad name), Conflict
        (the name is a read-only index).
        """
        tmp = self.root / f".restore-{uuid.uuid4().hex[:8]}"
        manifest = unpack_snapshot(Path(archive), tmp)
        target = check_name(name or manifest.params.get("collection"))
        try:
            if target != manifest.params["config"].get("name"):
                rename_collection(tmp, target)
            SegmentedCollection.open(tmp).close()  # it opens: refuse it before replacing anything
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with self._lock:
            old = self._collections.get(target)
            if old is not None and old.read_only:
                shutil.rmtree(tmp, ignore_errors=True)
                raise Conflict(f"collection {target!r} is a read-only index served from {old.root}")
            ready = ready_path(self.root, target)
            shutil.rmtree(ready, ignore_errors=True)
            tmp.rename(ready)  # verified and complete: from here a crash finishes the restore
            trash = self.root / f".trash-{target}-{uuid.uuid4().hex[:8]}"
            if old is not None:
                old.close()
                old.root.rename(trash)
            ready.rename(self.root / target)
            fsync_dir(self.root)  # acknowledged below: the swap survives a power loss too
            self._collections[target] = coll = SegmentedCollection.open(self.root / target)
        shutil.rmtree(trash, ignore_errors=True)
        return coll.info()

    # -- search and context --------------------------------------------------------------

    def search(
        self,
        collection: str,
        texts: Sequence[str],
        pipeline: str | Mapping[str, Any] | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        with_documents: bool = True,
        stage_where: Sequence[Mapping[str, Any] | None] | None = None,
        trace: bool = False,
    ) -> tuple[PipelineSpec, SearchOutput]:
        """``stage_where``: a filter per retriever stage on top of ``where`` (a prefetch's own);
        ``trace``: keep each stage's lists (the output's ``trace``)."""
        coll = self.collection(collection)
        spec = resolve_pipeline(pipeline, coll.pipeline, allow_files=False)
        coll.check_stages(spec)
        queries = [Query(str(i), t) for i, t in enumerate(texts)]
        extra = {"stage_where": stage_where} if stage_where is not None else {}
        if trace:
            extra["trace"] = True
        return spec, coll.search(queries, spec, k, where, with_documents, rerankers=self.rerankers(spec), **extra)

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
        usefulness: Usefulness | None = None,
    ) -> PackedContext:
        """The best passages for ``query`` packed into ``max_tokens``, near-duplicates removed;
        with ``usefulness``, graded first by a reranker (:func:`.context.grade_hits`, CRAG's
        retrieval evaluator): passages under its lower threshold are dropped and the context
        carries a confidence.

        Raises: as :meth:`search`; NotFound or InvalidInput for an evaluator that is not served.
        """
        count = self.token_counter(tokenizer)
        spec, out = self.search(collection, [query], pipeline, k, where, with_documents=True)
        if usefulness is None:
            return pack_context(out.hits[0], max_tokens, count, dedup_threshold)
        if usefulness.reranker is None and spec.rerankers:
            evaluator = self.rerankers(spec)[-1]  # the pipeline's own last reranker, already loaded
        else:
            evaluator = self.reranker(usefulness.reranker)
        kept, scores, confidence = grade_hits(query, out.hits[0], evaluator, usefulness)
        packed = pack_context(kept, max_tokens, count, dedup_threshold, scores)
        packed.confidence = confidence
        packed.dropped_not_useful = sum(h.document is not None for h in out.hits[0]) - len(kept)
        return packed

    # -- models --------------------------------------------------------------------------

    def _model(self, key: str, load: Callable[[], Any]) -> Any:
        with self._model_lock:  # one load per name, even under concurrent first requests
            if key not in self._models:
                self._models[key] = load()
            return self._models[key]

    def reranker(self, name: str | None) -> Any:
        """The reranker ``name`` resolves to (:meth:`.models.ModelCatalog.reranker`), loaded once.

        Raises: NotFound naming the served rerankers, or InvalidInput naming the installed
        families when the server has no reranker aliases (as before aliases).
        """
        family, params = self.models.reranker(name)
        key = f"reranker:{family}:{json.dumps(params, sort_keys=True)}"
        return self._model(key, lambda: self._make_reranker(family, params))

    def rerankers(self, spec: PipelineSpec) -> list[Reranker]:
        """The spec's rerankers, each loaded once per (family, params) and shared."""

        def shared(name: str, params: dict[str, Any]) -> Reranker:
            key = f"reranker:{name}:{json.dumps(params, sort_keys=True)}"
            return self._model(key, lambda: self._make_reranker(name, params))

        return build_rerankers(spec, shared)

    def rerank(
        self,
        model: str | None,
        query: str,
        texts: Sequence[str],
        top_n: int | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> list[tuple[int, float]]:
        """Cohere-style: (index into ``texts``, score), best first, ties by index.

        ``max_tokens_per_doc`` cuts each text first (:func:`.models.truncate_to_tokens`: the
        reranker's tokenizer, or words for a reranker without one).
        """
        reranker = self.reranker(model)
        if max_tokens_per_doc is not None:
            texts = truncate_to_tokens(texts, max_tokens_per_doc, getattr(reranker, "tokenizer", None))
        docs = [Document(f"{i:08d}", t) for i, t in enumerate(texts)]
        ranking = reranker.rerank(Query("q", query), docs, top_n)
        return [(int(d), float(s)) for d, s in zip(ranking.doc_ids, ranking.scores, strict=True)]

    def served_models(self) -> list[ServedModel]:
        return self.models.served()

    def served_model(self, name: str) -> ServedModel:
        """Raises: NotFound naming the served models."""
        return self.models.get(name)

    def _encoder(self, checkpoint: str) -> Any:
        try:
            encode = importlib.import_module("cascade.retrieval.encoders.dense")
        except ImportError as e:
            raise MissingDependency(
                f"embeddings need the dense encoder (cascade.retrieval.encoders.dense), which this installation lacks: {e}"
            ) from None
        return self._model(f"encoder:{checkpoint}", lambda: encode.DenseEncoder(model=checkpoint, show_progress=False))

    def embed(self, model: str, texts: Sequence[str]) -> np.ndarray:
        """Vectors from the dense encoder (``cascade.retrieval.encoders.dense``), when it is installed.

        Raises: InvalidInput or NotFound (model not served), MissingDependency (no dense encoder here).
        """
        return self.embed_texts(model, texts).vectors

    def embed_texts(
        self,
        model: str | None,
        texts: Sequence[str],
        *,
        side: str | None = None,
        prompt_name: str | None = None,
        dimensions: int | None = None,
        normalize: bool | None = None,
        truncate: bool = True,
        max_tokens: int | None = None,
    ) -> Embedded:
        """Dense vectors and the tokens the model read, for the embedding endpoints.

        Args:
            model: a served embedder (alias or checkpoint); ``None``: the first served.
            side: ``"query"`` / ``"document"``: the encoder's query or document prompt.
            prompt_name: a prompt of the model's sentence-transformers config (TEI).
            dimensions: Matryoshka: keep the first coordinates, re-normalized when the
                vectors are normalized.
            normalize: ``None``: as the model does; ``True``: L2-normalized; ``False``: the raw
                pooled vector (TEI's ``normalize=false``).
            truncate: ``False`` refuses an input over the model's maximum length.
            max_tokens: cut each input to this many tokens, special tokens included (Cohere).

        Returns:
            :class:`Embedded`: ``tokens`` counts the model's tokens as encoded (prompt and
            special tokens included, after truncation), summed over the inputs.

        Raises:
            InvalidInput: ``dimensions`` above the model's width, an unknown prompt name, an
                input too long with ``truncate=False``; NotFound / InvalidInput: model not served.
        """
        model = self.models.default("embedding").id if model is None else model
        checkpoint = self.models.embedder(model)
        encoder = self._encoder(checkpoint)
        width = getattr(encoder, "dim", None)
        if dimensions is not None and width is not None and dimensions > width:
            raise InvalidInput(f"dimensions={dimensions} is above the width of model {model!r} ({width})")
        config = getattr(encoder, "config", None)
        model_normalizes = bool(getattr(config, "normalize", False))
        if not hasattr(encoder, "tokenize"):
            # an encoder that implements only encode(texts): no prompts, usage in whitespace words
            vectors = np.asarray(encoder.encode(list(texts)), dtype=np.float32)
            tokens = sum(whitespace_tokens(t) for t in texts)
        else:
            prompt = prompt_for(prompt_name, side, config, lambda: _named_prompts(checkpoint))
            if not truncate:
                check_lengths(_untruncated_lengths(encoder, texts, prompt), encoder.max_length)
            ids = encoder.tokenize(list(texts), prompt)
            if max_tokens is not None:
                keep = max(max_tokens - len(encoder.suffix_ids), len(encoder.prefix_ids) + 1)
                ids = [seq if len(seq) <= max_tokens else seq[:keep] + encoder.suffix_ids for seq in ids]
            if normalize is False and model_normalizes:
                encoder = self._model(f"encoder-raw:{checkpoint}", lambda: _without_normalize(encoder))
            vectors = encoder.embed_ids(ids)
            tokens = sum(len(seq) for seq in ids)
        normalized = model_normalizes if normalize is None else normalize
        renormalize = normalized and (dimensions is not None or (normalize is True and not model_normalizes))
        return Embedded(truncate_dimensions(vectors, dimensions, renormalize), tokens, checkpoint)

    def _splade(self, checkpoint: str) -> Any:
        from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

        return self._model(f"splade:{checkpoint}", lambda: SpladeEncoder(SpladeConfig(model=checkpoint)))

    def embed_sparse(
        self, model: str | None, texts: Sequence[str], truncate: bool = True
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """SPLADE document vectors (:class:`cascade.retrieval.encoders.splade.SpladeEncoder`, its
        default document length, 256 tokens): (vocabulary ids ascending, weights) per text.

        Raises: NotFound (no such sparse model), InvalidInput (too long with ``truncate=False``).
        """
        checkpoint = self.models.sparse_embedder(model)
        encoder = self._splade(checkpoint)
        if not truncate:
            tok = self._model(
                f"hf-tokenizer:{checkpoint}",
                lambda: require("transformers", "models").AutoTokenizer.from_pretrained(resolve_model_path(checkpoint)),
            )
            check_lengths([len(i) for i in tok(list(texts))["input_ids"]], encoder.config.max_length)
        matrix = encoder.encode_documents(list(texts))
        return [
            (matrix.indices[a:b].copy(), matrix.data[a:b].copy())
            for a, b in zip(matrix.indptr[:-1], matrix.indptr[1:], strict=True)
        ]

    def similarity(
        self, model: str | None, source: str, sentences: Sequence[str], prompt_name: str | None = None
    ) -> list[float]:
        """Cosine similarity of ``source`` to each sentence (TEI's ``/similarity``)."""
        vectors = self.embed_texts(model, [source, *sentences], prompt_name=prompt_name, normalize=True).vectors
        return (vectors[1:] @ vectors[0]).astype(float).tolist()

    def model_info(self) -> dict[str, Any]:
        """The default model (the first served embedder, else the first reranker) as TEI's ``/info``
        describes it: ``id``, ``kind``, ``checkpoint``, ``max_input_length``, ``pooling``."""
        kinds = {m.kind for m in self.models.served()}
        first = self.models.default("reranking" if "embedding" not in kinds and "reranking" in kinds else "embedding")
        info: dict[str, Any] = {"id": first.id, "kind": first.kind, "checkpoint": first.checkpoint or first.id}
        if first.kind == "embedding":
            encoder = self._encoder(self.models.embedder(first.id))
            info["max_input_length"] = getattr(encoder, "max_length", None)
            info["pooling"] = getattr(getattr(encoder, "config", None), "pooling", None)
        else:
            reranker = self.reranker(first.id)
            info["max_input_length"] = getattr(getattr(reranker, "policy", None), "max_length", None)
        return info

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
        self._data_lock.release()


@dataclasses.dataclass(frozen=True)
class Embedded:
    """Vectors (float32, one row per input), the tokens read (summed), and the checkpoint used."""

    vectors: np.ndarray
    tokens: int
    checkpoint: str


def _named_prompts(checkpoint: str) -> dict[str, str]:
    """The prompts a sentence-transformers model declares by name (TEI's ``prompt_name``)."""
    from cascade.retrieval.encoders.st_config import read_model_json

    config = read_model_json(resolve_model_path(checkpoint), "config_sentence_transformers.json") or {}
    return dict(config.get("prompts") or {})


def _untruncated_lengths(encoder: Any, texts: Sequence[str], prompt: str) -> list[int]:
    texts = [prompt + t for t in texts]
    if encoder.config.do_lower_case:
        texts = [t.lower() for t in texts]
    return [len(i) for i in encoder.tokenizer(texts, return_attention_mask=False)["input_ids"]]


def _without_normalize(encoder: Any) -> Any:
    """The same encoder (model, tokenizer and replicas shared) returning the pooled vector
    unnormalized: a shallow copy whose config says ``normalize=False``."""
    raw = copy.copy(encoder)
    raw.config = dataclasses.replace(encoder.config, normalize=False)
    return raw


def _validated_config(name: str, spec: PipelineSpec, chunking: Any, compaction: Any) -> CollectionConfig:
    from pydantic import ValidationError

    try:
        return CollectionConfig(name=name, pipeline=spec, chunking=chunking or {}, compaction=compaction)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise InvalidInput(f"invalid collection config: {problems}") from None
