"""Reference searchers for ``cascade bench sparse``: scipy brute force, Lucene, Seismic.

Each one takes the same integer impact vectors as the native index (documents as a docs x
terms CSR matrix, queries as a queries x terms CSR matrix over the same vocabulary), each at
its best documented setting, named in the output with the installed version.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cascade.eval.bench import version
from cascade.retrieval.errors import require
from cascade.retrieval.topk import doc_names, id_ranks, rankings_from_rows
from cascade.retrieval.types import Ranking

SCIPY_SETTING = ("float32 on both sides: (queries x terms) CSR @ (terms x docs) CSR per batch of {batch} queries, "
                 "dense score block, np.argpartition over the block for the top k, ties by doc id")  # fmt: skip


def recall(approx: Sequence[Ranking], exact: Sequence[Ranking]) -> float:
    """Mean share of each exact top-k found by ``approx`` (queries with hits only)."""
    per = [len(set(a.doc_ids) & set(e.doc_ids)) / len(e.doc_ids) for a, e in zip(approx, exact, strict=True)
           if e.doc_ids]  # fmt: skip
    return round(float(np.mean(per)), 4) if per else 1.0


def dense_top_k(scores: np.ndarray, ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact top ``k`` of each row of a dense (queries x docs) block, ties by doc id: doc
    indexes and scores (queries x k, best first) and the count of hits (scores > 0) per row.

    One argpartition over the whole block; only a row with documents tied at its k-th score
    beyond the cut (rare with integer impacts over many terms) is finished on its own.
    """
    n = scores.shape[1]
    kk = min(k, n)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((ranks[part], -top), axis=-1)
    docs, vals = np.take_along_axis(part, order, axis=1), np.take_along_axis(top, order, axis=1)
    kth = vals[:, -1]
    tied = np.flatnonzero((kth > 0) & ((scores >= kth[:, None]).sum(axis=1) > kk))
    for i in tied.tolist():
        cand = np.flatnonzero(scores[i] >= kth[i])
        pick = cand[np.lexsort((ranks[cand], -scores[i, cand]))[:kk]]
        docs[i], vals[i] = pick, scores[i, pick]
    return docs, vals, (vals > 0).sum(axis=1)


def scipy_searcher(doc_matrix: sp.csr_matrix, doc_ids: Sequence[str]) -> Callable[..., list[Ranking]]:
    """``f(queries, qids, k, batch=256)``: brute force over a float32 (terms x docs) copy made
    once; queries are cast to float32 once, outside the timed call (see :func:`as_float32`)."""
    term_doc, ranks, names = doc_matrix.T.tocsr().astype(np.float32), id_ranks(doc_ids), doc_names(doc_ids)

    def search(queries: sp.csr_matrix, qids: Sequence[str], k: int, batch: int = 256) -> list[Ranking]:
        out = []
        for start in range(0, queries.shape[0], batch):
            block = (queries[start : start + batch] @ term_doc).toarray()
            docs, vals, counts = dense_top_k(block, ranks, k)
            out += rankings_from_rows(qids[start : start + batch], docs, vals, counts, names)
        return out

    return search


def as_float32(queries: sp.csr_matrix) -> sp.csr_matrix:
    return sp.csr_matrix(queries, dtype=np.float32)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr: pyseismic's Rust code and Anserini's JVM print their
    build logs on stdout, where ``--json`` promises a single JSON object."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _rows(m: sp.csr_matrix, vocab: np.ndarray):
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        yield vocab[m.indices[lo:hi]], m.data[lo:hi].astype(np.float32)


def seismic(doc_ids: Sequence[str], doc_matrix: sp.csr_matrix, vocab: Sequence[str], queries: sp.csr_matrix,
            qids: Sequence[str], k: int, exact: Sequence[Ranking], builds: Sequence[dict], race) -> dict:  # fmt: skip
    """pyseismic-lsr (Rust Seismic) on the same vectors, 1 thread: q/s and recall@k per setting.

    ``builds``: dicts of build keys (n_postings, centroid_fraction, summary_energy) and
    ``searches``, a list of search settings (query_cut, heap_factor) run on that build.
    """
    seismic_mod = require("seismic", "bench")
    words = np.asarray(vocab, dtype=seismic_mod.get_seismic_string())
    dataset = seismic_mod.SeismicDataset()
    for did, (terms, values) in zip(doc_ids, _rows(doc_matrix, words), strict=True):
        dataset.add_document(did, terms, values)
    q_terms, q_values = zip(*_rows(queries, words), strict=True)
    q_terms, q_values = list(q_terms), list(q_values)
    q_ids = np.asarray(qids, dtype=seismic_mod.get_seismic_string())
    out = []
    for b in builds:
        build = {key: b[key] for key in ("n_postings", "centroid_fraction", "summary_energy") if key in b}
        t = time.perf_counter()
        with _stdout_to_stderr():
            index = seismic_mod.SeismicIndex.build_from_dataset(dataset, num_threads=1, **build)
        build_s = time.perf_counter() - t
        for s in b["searches"]:
            (secs, res), = race({"seismic": lambda index=index, s=s: index.batch_search(
                q_ids, q_terms, q_values, k, s["query_cut"], s["heap_factor"], num_threads=1)}).values()  # fmt: skip
            by_id = {hits[0][0]: hits for hits in res if hits}  # results do not come back in query order
            rankings = [Ranking.from_scores(qid, [h[2] for h in by_id.get(qid, [])],
                                            [h[1] for h in by_id.get(qid, [])], k) for qid in qids]  # fmt: skip
            out.append({"settings": {**build, **s}, "index_s": round(build_s, 2),
                        "queries_per_s": round(len(qids) / secs, 1), "recall_vs_exact": recall(rankings, exact)})  # fmt: skip
    return {"name": "Seismic (pyseismic-lsr, Rust) SeismicIndex.batch_search", "version": version("pyseismic-lsr"),
            "setting": "1 thread (num_threads=1 for build and search); its documented MS MARCO build "
                       "(n_postings 3500, centroid_fraction 0.1, summary_energy 0.4) and a high-recall one, "
                       "several (query_cut, heap_factor) each",
            "runs": out}  # fmt: skip


def lucene(doc_ids, doc_matrix, vocab, queries, qids, k, exact, race) -> dict:
    """Lucene impact search through Pyserini: Anserini's own batch search, one thread (JVM
    start, indexing and building the Java query maps not timed; hits read back untimed)."""
    from cascade.retrieval.sparse.lucene_impact import (
        LuceneImpactSearcher,
        build_lucene_impact_index,
        write_json_vector_collection,
    )

    with tempfile.TemporaryDirectory() as tmp:
        write_json_vector_collection(Path(tmp) / "coll" / "docs.jsonl", doc_ids, doc_matrix, vocab)
        t = time.perf_counter()
        with _stdout_to_stderr():  # the JVM logs the indexing on stdout
            build_lucene_impact_index(Path(tmp) / "coll", Path(tmp) / "index")
        index_s = time.perf_counter() - t
        searcher = LuceneImpactSearcher(Path(tmp) / "index")
        dicts = [{vocab[c]: int(v) for c, v in zip(*row, strict=True)}
                 for row in _rows(queries, np.arange(len(vocab)))]  # fmt: skip
        batch = searcher.jbatch(dicts, qids)
        ((secs, result),) = race(
            {"lucene": lambda: searcher.batch_search_prepared(batch, k, threads=1)}
        ).values()
        by_id = {e.getKey(): e.getValue() for e in result.entrySet().toArray()}
        rankings = [Ranking.from_scores(q, [h.docid for h in by_id.get(q, [])],
                                        np.round([h.score for h in by_id.get(q, [])]), k) for q in qids]  # fmt: skip
    return {"name": "Lucene impact search (Anserini SimpleImpactSearcher via Pyserini)", "version": version("pyserini"),
            "setting": "SimpleImpactSearcher.batch_search, threads=1, -impact -pretokenized -optimize index",
            "index_s": round(index_s, 2), "queries_per_s": round(len(qids) / secs, 1),
            "recall_vs_exact": recall(rankings, exact),
            "same_top_k": sum(a.doc_ids == b.doc_ids for a, b in zip(rankings, exact, strict=True))}  # fmt: skip
