"""Does a reranker at lower precision rank as it does at fp32? The quality guard of ``dtype``.

A reranker's ``auto`` precision (bf16 on bf16-capable CPUs and GPUs) is accepted when, over
the same candidates, its top 10 overlaps the fp32 top 10 and its scores stay close to the
fp32 scores (:func:`rerank_agreement`). Retrievers are guarded by the reproduction matrix
instead (``eval/matrix.yaml``: the same nDCG@10 at fp32 and at ``auto``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cascade.eval.datasets import load_dataset
from cascade.retrieval.base import Reranker
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.types import Document, Query


def bm25_candidates(dataset_dir: str | Path, num_queries: int, depth: int = 100,
                    split: str = "test") -> tuple[list[Query], list[list[Document]]]:  # fmt: skip
    """The first ``num_queries`` queries of a dataset and their BM25 top ``depth`` documents."""
    ds = load_dataset(dataset_dir, split)
    docs = list(ds.corpus())
    by_id = {d.id: d for d in docs}
    queries = ds.queries[:num_queries]
    rankings = BM25Retriever.build(docs, show_progress=False).search(queries, k=depth)
    return queries, [[by_id[i] for i in r.doc_ids] for r in rankings]


def rerank_agreement(reference: Reranker, other: Reranker, queries: Sequence[Query],
                     candidates: Sequence[Sequence[Document]], k: int = 10) -> dict:  # fmt: skip
    """How ``other`` ranks the candidates against ``reference``: the mean top-``k`` overlap
    (1.0: the same k documents), the largest score difference over all candidates, and the
    queries whose top ``k`` differ."""
    ref = reference.rerank_batch(list(queries), [list(c) for c in candidates])
    got = other.rerank_batch(list(queries), [list(c) for c in candidates])
    overlaps, diffs, differ = [], [], []
    for q, a, b in zip(queries, ref, got, strict=True):
        overlap = len(set(a.doc_ids[:k]) & set(b.doc_ids[:k])) / max(1, min(k, len(a.doc_ids)))
        overlaps.append(overlap)
        if overlap < 1:
            differ.append(q.id)
        score_a = dict(zip(a.doc_ids, a.scores, strict=True))
        diffs.extend(abs(score_a[d] - s) for d, s in zip(b.doc_ids, b.scores, strict=True))
    return {"queries": len(queries), "candidates": sum(len(c) for c in candidates), f"top{k}_overlap":
            round(float(np.mean(overlaps)), 4), "max_abs_score_diff": float(max(diffs, default=0.0)),
            "queries_with_other_top": differ}  # fmt: skip
