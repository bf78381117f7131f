"""An index directory for a corpus: one sub-index per retriever configuration, plus the
docstore that rerankers and the API read document text from.

``cascade index`` writes one; ``cascade eval`` keeps one per dataset in the cache, so a
second run with the same index configuration does not re-encode the corpus.

Layout::

    ROOT/docstore.sqlite
    ROOT/<kind>-<hash of build params>/manifest.json ...
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cascade.retrieval.base import Reranker, Retriever
from cascade.retrieval.errors import NotFound
from cascade.retrieval.pipeline import Pipeline, PipelineSpec, RetrieverStage
from cascade.retrieval.registry import RETRIEVERS
from cascade.retrieval.storage import MANIFEST, pid_alive
from cascade.retrieval.types import Document, check_unique

from .docstore import DocStore

log = logging.getLogger(__name__)

CorpusFactory = Callable[[], Iterable[Document]]


def stage_key(stage: RetrieverStage) -> str:
    """Directory name of a retriever stage's index: its kind and a hash of its build params."""
    digest = hashlib.sha256(json.dumps(stage.params, sort_keys=True, default=str).encode()).hexdigest()
    return f"{stage.retriever}-{digest[:12]}"


class IndexSet:
    """Args:
    root: the directory.
    corpus: a function returning a fresh document stream; needed only to build what is missing.
    shards: build each retriever's index as this many shards (0: one plain index).
    ray_workers: build the shards on Ray with this many workers; needs ``source``, a corpus
        every worker can open (see :class:`cascade.indexing.ray_build.CorpusSource`).
    """

    def __init__(self, root: str | Path, corpus: CorpusFactory | None = None, shards: int = 0,
                 ray_workers: int = 0, source=None):  # fmt: skip
        self.root = Path(root)
        self.corpus = corpus
        self.shards, self.ray_workers, self.source = shards, ray_workers, source

    def _require_corpus(self, what: str) -> CorpusFactory:
        if self.corpus is None:
            raise NotFound(f"{self.root} has no {what} and no corpus was given to build it")
        return self.corpus

    def existing(self, stage: RetrieverStage) -> Path | None:
        """The stage's index on disk: a plain one, or a sharded one (``KEY-xN``)."""
        plain = self.root / stage_key(stage)
        if (plain / MANIFEST).is_file():
            return plain
        sharded = sorted(p for p in self.root.glob(f"{stage_key(stage)}-x*") if (p / MANIFEST).is_file())
        return sharded[0] if sharded else None

    def retriever(self, stage: RetrieverStage, build_only: bool = False) -> Retriever | None:
        """Load the stage's index, building and saving it first if it is missing."""
        path = self.existing(stage)
        if path is None:
            path = self._build(stage)
        if build_only:
            return None
        if path.name != stage_key(stage):
            return RETRIEVERS.get("sharded").load(path)
        return RETRIEVERS.get(stage.retriever).load(path)

    def _build(self, stage: RetrieverStage) -> Path:
        corpus = self._require_corpus(f"{stage.retriever} index with params {stage.params}")
        if self.shards > 1:
            path = self.root / f"{stage_key(stage)}-x{self.shards}"
            log.info("building %s index in %d shards in %s", stage.retriever, self.shards, path)
            if self.ray_workers and self.source is not None:
                from .ray_build import build_sharded

                build_sharded(self.source, path, stage.retriever, self.shards, self.ray_workers, stage.params)
            else:
                sharded = RETRIEVERS.get("sharded")
                sharded.build(check_unique(corpus()), stage.retriever, self.shards, **stage.params).save(path)
            return path
        path = self.root / stage_key(stage)
        log.info("building %s index in %s", stage.retriever, path)
        cls = RETRIEVERS.get(stage.retriever)
        params = dict(stage.params)
        work = path.with_name(f".{path.name}.work")
        if getattr(cls, "resumable_build", False):  # encodes in shards there; a killed build resumes
            params.setdefault("work_dir", work)
        if hasattr(cls, "build_streaming"):  # writes the index itself, in bounded memory (checks ids)
            cls.build_streaming(corpus(), path, **params)
        else:
            cls.build(check_unique(corpus()), **params).save(path)
        shutil.rmtree(work, ignore_errors=True)
        return path

    def docstore(self) -> DocStore:
        """The docstore, filled from the corpus on first use (atomically: temp file + rename)."""
        path = self.root / "docstore.sqlite"
        if not path.is_file():
            corpus = self._require_corpus("docstore")
            _remove_dead_builds(path)
            tmp = path.with_name(f".docstore.{os.getpid()}.sqlite")
            tmp.unlink(missing_ok=True)
            store = DocStore(tmp)
            batch: list[Document] = []
            for doc in check_unique(corpus()):
                batch.append(doc)
                if len(batch) >= 10_000:
                    store.put_many(batch, replace=False)
                    batch = []
            store.put_many(batch, replace=False)
            store.close()
            for suffix in ("-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
            tmp.rename(path)
        return DocStore(path)

    def pipeline(self, spec: PipelineSpec, rerankers: Sequence[Reranker] = ()) -> Pipeline:
        """The spec's pipeline over this directory's indexes; ``rerankers``, one per rerank stage,
        come from the caller (:func:`cascade.rerank.registry.build_rerankers`)."""
        retrievers = [self.retriever(s) for s in spec.retrievers]
        docs = self.docstore() if spec.rerankers else None
        return Pipeline(spec, retrievers, rerankers, docs=docs)

    def build(self, spec: PipelineSpec) -> None:
        """Build every index the spec needs and the docstore, without loading them."""
        for s in spec.retrievers:
            self.retriever(s, build_only=True)
        self.docstore().close()


def _remove_dead_builds(path: Path) -> None:
    """Temp docstores (``.docstore.PID.sqlite*``) left by builds that were killed: their
    process is gone (a live one, building beside this one, keeps its own)."""
    for tmp in path.parent.glob(".docstore.*.sqlite*"):
        pid = tmp.name.split(".")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
