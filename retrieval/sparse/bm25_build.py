"""BM25 index build in bounded memory: term-sorted runs on disk, merged into the final arrays.

:meth:`BM25Retriever.build` holds every (doc, term) pair of the corpus, their sort and then
the weight matrix in memory: about 4.5 GB at a million MS MARCO passages. This build keeps a
chunk of documents at a time:

1. Each chunk of ``chunk_docs`` documents is tokenized (the same analysis, the same vocabulary
   in first-appearance order), its (doc, term, tf) postings sorted by term and written to disk
   as a run: doc numbers and tfs in term order, and the run's per-term offsets.
2. The merge walks the vocabulary in blocks of about ``merge_postings`` postings. For each
   block it reads every run's slice of those terms (contiguous: the runs are term-sorted),
   scatters them to their final places (doc numbers stay ascending within a term, since the
   runs are in doc order), computes the block's BM25 weights and appends the block to the
   index files with plain writes.

The working set is a chunk or a block, not the corpus; the files are written, not mapped, so
the page cache holds them, not this process. The index is the format
:class:`~cascade.retrieval.sparse.bm25.BM25Retriever` loads (format version 2: version 1 plus
``weights.npy``, each posting's weight under the saved k1, b and variant and the index's own
statistics, so loading computes no weight matrix), memory-mapped, with exactly the rankings
the in-memory build gives.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np

from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.jsonl import read_jsonl
from cascade.retrieval.progress import progress
from cascade.retrieval.storage import Manifest, atomic_dir, checksum_files, write_manifest
from cascade.retrieval.types import Document

from .analysis import Analyzer, TermIds
from .bm25 import _COUNT_BATCH, VARIANTS, WEIGHTS_FORMAT_VERSION, BM25Retriever

log = logging.getLogger(__name__)


class _NpyWriter:
    """A 1-d ``.npy`` file written front to back: the header (length known), then blocks."""

    def __init__(self, path: Path, dtype: np.dtype, length: int):
        self.f = open(path, "wb")
        self.dtype, self.length, self.written = np.dtype(dtype), int(length), 0
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.length,),
        }
        np.lib.format.write_array_header_1_0(self.f, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        self.f.write(block.data)
        self.written += len(block)

    def close(self) -> None:
        """Close the file; raises if fewer or more items were written than the header says."""
        self.f.close()
        if self.written != self.length:
            raise RuntimeError(f"{self.f.name}: wrote {self.written} of {self.length} items")


class _Run:
    """One chunk's postings on disk, in term order: ``offsets`` (per-term start, one past the
    chunk's vocabulary), ``docs`` and ``tfs`` (int32)."""

    def __init__(self, folder: Path, n: int, offsets: np.ndarray, docs: np.ndarray, tfs: np.ndarray):
        self.offsets_path = folder / f"run-{n:05d}.offsets"
        self.docs_path, self.tfs_path = folder / f"run-{n:05d}.docs", folder / f"run-{n:05d}.tfs"
        self.num_terms = len(offsets) - 1
        offsets.astype(np.int64).tofile(self.offsets_path)
        docs.astype(np.int32).tofile(self.docs_path)
        tfs.astype(np.int32).tofile(self.tfs_path)

    def counts(self) -> np.ndarray:
        return np.diff(np.fromfile(self.offsets_path, dtype=np.int64))

    def slice(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Postings per term of terms [t0, t1) (clipped to this run's vocabulary), and their
        doc numbers and tfs."""
        t1 = min(t1, self.num_terms)
        if t1 <= t0:
            return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32)
        off = np.fromfile(self.offsets_path, dtype=np.int64, count=t1 - t0 + 1, offset=8 * t0)
        a, n = int(off[0]), int(off[-1] - off[0])
        docs = np.fromfile(self.docs_path, dtype=np.int32, count=n, offset=4 * a)
        tfs = np.fromfile(self.tfs_path, dtype=np.int32, count=n, offset=4 * a)
        return np.diff(off), docs, tfs


def build_streaming(
    docs: Iterable[Document] | str | os.PathLike[str],
    path: str | Path,
    k1: float = 0.9,
    b: float = 0.4,
    variant: str = "lucene",
    stemmer: str | None = "porter",
    stopwords: Iterable[str] | None = None,
    chunk_docs: int = 200_000,
    merge_postings: int = 4_000_000,
    workers: int = 1,
    show_progress: bool = True,
) -> Manifest:
    """Index a stream of documents into the BM25 index directory ``path`` in bounded memory.

    Args:
        docs: the documents (title and text are indexed), each id once; or the path of a
            BEIR ``corpus.jsonl``, whose lines the tokenizing processes then parse themselves
            (this process only reads them), as Lucene's indexer reads its input files.
        path: the index directory (replaced atomically when the build succeeds).
        k1, b, variant, stemmer, stopwords: as :meth:`BM25Retriever.build`.
        chunk_docs: documents per run; the build's memory grows with it (about 2 KB per
            document of MS MARCO length).
        merge_postings: postings per merge block (about 90 bytes each while merged).
        workers: processes that tokenize (1: this one); with more, this process numbers the
            terms, sorts and merges while they analyze the next batches.

    Returns:
        The manifest written. Open the index with :meth:`BM25Retriever.load`.

    Raises:
        InvalidInput: an empty corpus, a repeated document id, a bad line of the corpus
            file (``FILE:LINE: reason``), bad settings.
        NotFound: the corpus file does not exist.

    Example:
        >>> build_streaming("corpus.jsonl", "idx/")   # doctest: +SKIP
        >>> BM25Retriever.load("idx/").search([Query("1", "stem cells")])   # doctest: +SKIP
    """
    if variant not in VARIANTS:
        raise InvalidInput(f"unknown BM25 variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if chunk_docs < 1 or merge_postings < 1 or workers < 1:
        raise InvalidInput("chunk_docs, merge_postings and workers must be >= 1")
    analyzer = Analyzer(stemmer, stopwords)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=f".{path.name}.runs-", dir=path.parent) as work,
        atomic_dir(path) as out,
    ):
        work = Path(work)
        term_index, runs, id_files, num_docs = _write_runs(
            docs, analyzer, work, chunk_docs, workers, show_progress
        )
        if num_docs == 0:
            raise InvalidInput("the corpus is empty: nothing to index")
        doc_lens = np.fromfile(work / "lens", dtype=np.int32)
        df = np.zeros(len(term_index), dtype=np.int64)
        for run in runs:
            c = run.counts()
            df[: len(c)] += c
        indptr = np.zeros(len(term_index) + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        log.info(
            "bm25: %d documents, %d terms, %d postings in %d runs",
            num_docs,
            len(term_index),
            indptr[-1],
            len(runs),
        )
        np.save(out / "indptr.npy", indptr, allow_pickle=False)
        np.save(out / "doc_lens.npy", doc_lens, allow_pickle=False)
        _write_doc_ids(id_files, out / "doc_ids.npy", num_docs)
        (out / "vocab.json").write_text(json.dumps(list(term_index)))
        del term_index
        _merge(runs, indptr, df, doc_lens, out, variant, float(k1), float(b), merge_postings, show_progress)
        params = {"k1": float(k1), "b": float(b), "variant": variant, "analyzer": analyzer.config}
        names = [
            "indptr.npy",
            "postings.npy",
            "tfs.npy",
            "weights.npy",
            "doc_lens.npy",
            "doc_ids.npy",
            "vocab.json",
        ]
        manifest = Manifest(
            BM25Retriever.kind, WEIGHTS_FORMAT_VERSION, params, num_docs, checksum_files(out, names)
        )
        write_manifest(out, manifest)
    return manifest


def _write_runs(docs, analyzer, work: Path, chunk_docs: int, workers: int, show_progress: bool):
    """Tokenize ``docs`` chunk by chunk into term-sorted runs; doc lengths to ``work/lens``,
    doc ids to one ``.npy`` per chunk. Returns the vocabulary, the runs, the id files, N."""
    term_index: dict[str, int] = {}
    # each analyzing process numbers terms its own way: its numbers -> ours, per process
    to_global: dict[int, np.ndarray] = {}
    runs: list[_Run] = []
    id_files: list[Path] = []
    num_docs = 0
    seen: set[str] = set()
    batches = _analyzed(docs, analyzer, workers, min(_COUNT_BATCH, chunk_docs))
    bar = progress(desc="bm25 index", unit="doc", enabled=show_progress)
    with open(work / "lens", "wb") as lens_file:
        while True:
            keys, tfs, ids = [], [], []
            first = num_docs
            while len(ids) < chunk_docs and (item := next(batches, None)) is not None:
                source, batch_ids, new_terms, local_ids, n = item
                for doc_id in batch_ids:
                    if doc_id in seen:
                        raise InvalidInput(f"duplicate document id {doc_id!r}")
                    seen.add(doc_id)
                # ids in order of first appearance, as BM25Retriever.build numbers them: a
                # process's new terms come in that order, and a term new to the corpus is new
                # to the process that meets it first (batches are taken in corpus order)
                add = term_index.setdefault  # a new term gets the next id (len before insertion)
                added = np.fromiter((add(t, len(term_index)) for t in new_terms), np.int64, len(new_terms))
                table = to_global[source] = np.concatenate((to_global.get(source, added[:0]), added))
                docs_of = np.repeat(np.arange(num_docs, num_docs + len(batch_ids), dtype=np.int64), n)
                key, tf = np.unique(docs_of << 32 | table[local_ids], return_counts=True)
                keys.append(key)
                tfs.append(tf.astype(np.int32))
                n.tofile(lens_file)
                ids.extend(batch_ids)
                num_docs += len(batch_ids)
                bar.update(len(batch_ids))
            if not ids:
                break
            key = np.concatenate(keys)
            del keys
            terms_arr = (key & 0xFFFFFFFF).astype(np.int32)
            order = np.argsort(terms_arr, kind="stable")  # stable: doc numbers stay ascending per term
            offsets = np.zeros(len(term_index) + 1, dtype=np.int64)
            np.cumsum(np.bincount(terms_arr, minlength=len(term_index)), out=offsets[1:])
            del terms_arr
            postings = (key >> 32).astype(np.int32)[order]
            runs.append(_Run(work, len(runs), offsets, postings, np.concatenate(tfs)[order]))
            del key, order, tfs, postings
            id_file = work / f"ids-{len(id_files):05d}.npy"
            np.save(id_file, np.array(ids, dtype=str), allow_pickle=False)
            id_files.append(id_file)
            log.debug("bm25 run %d: documents %d..%d", len(runs) - 1, first, num_docs - 1)
    bar.close()
    return term_index, runs, id_files, num_docs



_worker_terms: TermIds | None = None


def _start_worker(config: dict) -> None:
    global _worker_terms
    _worker_terms = TermIds(Analyzer.from_config(config))


def _analyze(texts: list[str], ids: list[str], terms: TermIds | None = None):
    """``texts`` as numbers in this process's own term numbering: ``(process, doc ids, terms it
    numbered first in this call, each kept word's number (int32), each text's count)``."""
    terms = terms or _worker_terms
    start = len(terms.terms)
    numbers, counts = terms.encode(texts)
    return os.getpid(), ids, terms.terms[start:], numbers.astype(np.int32), counts


def _analyze_lines(lines: list[bytes], source: str, first_line: int, terms: TermIds | None = None):
    """:func:`_analyze` of lines of a BEIR ``corpus.jsonl`` (parsed here: ``FILE:LINE`` errors)."""
    docs = list(read_jsonl(lines, source, Document.from_json, first_line))
    return _analyze([d.contents for d in docs], [d.id for d in docs], terms)


def _batches(docs, size: int):
    """``(function, args)`` per batch of ``size`` documents (or corpus lines), in corpus order."""
    if isinstance(docs, (str, os.PathLike)):
        path = Path(docs)
        if not path.is_file():
            raise NotFound(f"{path} does not exist")
        with open(path, "rb") as f:  # bytes: the parser reports a line that is not UTF-8
            line = 1
            while lines := list(islice(f, size)):
                yield _analyze_lines, (lines, str(path), line)
                line += len(lines)
        return
    stream = iter(docs)
    while batch := list(islice(stream, size)):
        yield _analyze, ([d.contents for d in batch], [d.id for d in batch])


def _analyzed(docs, analyzer: Analyzer, workers: int, size: int):
    """The :func:`_analyze` result of each batch of ``size`` documents, in corpus order; with
    ``workers`` > 1, analyzed in that many processes, a few batches ahead (bounded memory)."""
    tasks = _batches(docs, size)
    if workers <= 1:
        terms = TermIds(analyzer)
        for fn, args in tasks:
            yield fn(*args, terms)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a parent holding threads or big arrays
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_start_worker, initargs=(analyzer.config,)
    ) as pool:
        pending: deque = deque()
        while True:
            while len(pending) < 3 * workers and (task := next(tasks, None)) is not None:
                pending.append(pool.submit(task[0], *task[1]))
            if not pending:
                return
            yield pending.popleft().result()


def _write_doc_ids(id_files: list[Path], dest: Path, num_docs: int) -> None:
    """The doc ids as one fixed-width unicode array (as ``np.array(ids, dtype=str)`` makes)."""
    width = max(np.load(f, mmap_mode="r").dtype.itemsize // 4 for f in id_files)
    w = _NpyWriter(dest, np.dtype(f"<U{max(width, 1)}"), num_docs)
    for f in id_files:
        w.write(np.load(f))
    w.close()


def _merge(runs: list[_Run], indptr: np.ndarray, df: np.ndarray, doc_lens: np.ndarray, out: Path,
           variant: str, k1: float, b: float, merge_postings: int, show_progress: bool) -> None:  # fmt: skip
    """Write postings, tfs and weights (term-major CSR order) block by block of terms."""
    nnz, num_terms = int(indptr[-1]), len(df)
    # the statistics exactly as BM25Retriever._weight_matrix takes them, so weights match bit for bit
    dff = df.astype(np.float64)
    n_docs, total = len(doc_lens), float(doc_lens.sum())
    scoring = VARIANTS[variant]
    norms = scoring.norm(doc_lens, total / n_docs, k1, b)  # per document and per term, once
    idf = scoring.idf(dff, dff, n_docs)
    writers = {n: _NpyWriter(out / f"{n}.npy", dt, nnz) for n, dt in
               (("postings", np.int32), ("tfs", np.int32), ("weights", np.float32))}  # fmt: skip
    bar = progress(total=nnz, desc="bm25 merge", unit="posting", enabled=show_progress)
    try:
        t0 = 0
        while t0 < num_terms:
            # the largest block of whole terms within merge_postings (at least one term)
            t1 = int(np.searchsorted(indptr, indptr[t0] + merge_postings, side="right")) - 1
            t1 = min(max(t1, t0 + 1), num_terms)
            size = int(indptr[t1] - indptr[t0])
            docs = np.empty(size, dtype=np.int32)
            tfs = np.empty(size, dtype=np.int32)
            fill = indptr[t0:t1] - indptr[t0]  # next free slot of each term of the block
            for run in runs:
                counts, run_docs, run_tfs = run.slice(t0, t1)
                if not len(run_docs):
                    continue
                local = np.repeat(np.arange(len(counts)), counts)
                starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
                dest = fill[local] + (np.arange(len(run_docs)) - starts[local])
                docs[dest], tfs[dest] = run_docs, run_tfs
                fill[: len(counts)] += counts
            term_of_posting = np.repeat(np.arange(t0, t1), df[t0:t1])
            weights = scoring.weights(tfs, norms[docs], idf[term_of_posting], k1)
            writers["postings"].write(docs)
            writers["tfs"].write(tfs)
            writers["weights"].write(weights)
            bar.update(size)
            t0 = t1
    except BaseException:
        for w in writers.values():
            w.f.close()
        raise
    finally:
        bar.close()
    for w in writers.values():
        w.close()
