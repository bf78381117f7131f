"""``cascade bench bm25``: our BM25 against bm25s (the fast reference) and rank-bm25 (slow).

All single-threaded, same queries (the split's judged queries), same k. Index build and
query throughput are timed separately; query time includes tokenization for every tool,
since a user pays for it. nDCG@10 of each is reported too, so speed is never bought with
a different answer.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from cascade.eval.bench import race
from cascade.eval.datasets import load_dataset
from cascade.eval.metrics import evaluate
from cascade.retrieval.errors import require
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.types import Ranking


def run(dataset_dir: Path, device: str | None = None, k: int = 100, split: str = "test",
        rank_bm25_queries: int = 300, rounds: int = 7, build_rounds: int = 3, **_) -> dict:  # fmt: skip
    from threadpoolctl import threadpool_limits

    bm25s = require("bm25s", "bench")
    rank_bm25 = require("rank_bm25", "bench")
    stemmer_mod = require("Stemmer", "bench")
    ds = load_dataset(dataset_dir, split)
    docs = list(ds.corpus())
    queries = ds.queries
    texts = [d.contents for d in docs]
    doc_ids = np.array([d.id for d in docs], dtype=str)

    def ndcg(rankings):
        return round(evaluate({r.query_id: r for r in rankings}, ds.qrels, ["ndcg@10"])["ndcg@10"], 4)

    with threadpool_limits(1):
        stemmer = stemmer_mod.Stemmer("english")

        def ref_build():
            # bm25s's default numpy backend is the baseline; its numba backend, where numba
            # is installed, is reported beside it
            index = bm25s.BM25(k1=0.9, b=0.4, backend="numpy")
            tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
            index.index(tokens, show_progress=False)
            return index, tokens

        # builds raced too (in turn, fastest of 3): a single first build pays the process's
        # cold start (allocator, caches) for whichever tool goes first
        built = race({"ours": lambda: BM25Retriever.build(docs, show_progress=False), "bm25s": ref_build},
                     rounds=build_rounds)  # fmt: skip
        (ours_build, ours), (ref_build_s, (ref, corpus_tokens)) = built["ours"], built["bm25s"]

        def searcher(index, backend):
            def search():
                toks = bm25s.tokenize([q.text for q in queries], stopwords="en", stemmer=stemmer, show_progress=False)
                return index.retrieve(toks, k=k, n_threads=1, show_progress=False, backend_selection=backend)

            return search

        contenders = {"ours": lambda: ours.search(queries, k=k), "bm25s": searcher(ref, "numpy")}
        if importlib.util.find_spec("numba") is not None:
            ref_numba = bm25s.BM25(k1=0.9, b=0.4, backend="numba")
            ref_numba.index(corpus_tokens, show_progress=False)
            contenders["bm25s-numba"] = searcher(ref_numba, "numba")
            contenders["bm25s-numba"]()  # compile outside the timing
        timed = race(contenders, rounds=rounds)
        ours_s, ours_rankings = timed["ours"]
        ref_s, (idx, scores) = timed["bm25s"]
        ref_rankings = [Ranking.from_scores(q.id, doc_ids[i], s) for q, i, s in zip(queries, idx, scores, strict=True)]

        # rank-bm25 on our tokens, Okapi variant: slow, so a slice of the queries
        analyzer = ours.analyzer
        t = time.perf_counter()
        okapi = rank_bm25.BM25Okapi([analyzer(x) for x in texts])
        okapi_build = time.perf_counter() - t
        sub = queries[:rank_bm25_queries]
        t = time.perf_counter()
        okapi_rankings = []
        for q in sub:
            s = okapi.get_scores(analyzer(q.text))
            top = np.argpartition(-s, k)[:k]
            okapi_rankings.append(Ranking.from_scores(q.id, doc_ids[top], s[top]))
        okapi_s = time.perf_counter() - t

    ours_qps, ref_qps = len(queries) / ours_s, len(queries) / ref_s
    return {
        "benchmark": "bm25",
        "dataset": str(dataset_dir),
        "num_docs": len(docs),
        "num_queries": len(queries),
        "k": k,
        "threads": 1,
        "ours": {"name": "cascade BM25 (lucene variant)", "index_s": round(ours_build, 3),
                 "queries_per_s": round(ours_qps, 1), "ndcg@10": ndcg(ours_rankings)},
        "baseline": {"name": f"bm25s {bm25s.__version__}", "backend": "numpy",
                     "index_s": round(ref_build_s, 3), "queries_per_s": round(ref_qps, 1), "ndcg@10": ndcg(ref_rankings)},
        "slow_reference": {"name": "rank-bm25 BM25Okapi", "index_s": round(okapi_build, 3),
                           "queries": len(sub), "queries_per_s": round(len(sub) / okapi_s, 1)},
        "other_references": {
            "bm25s-numba": {"queries_per_s": round(len(queries) / timed["bm25s-numba"][0], 1),
                            "ratio": round(timed["bm25s-numba"][0] / ours_s, 3)}
        } if "bm25s-numba" in timed else {},
        "ratio": round(ours_qps / ref_qps, 3),
        "index_ratio": round(ref_build_s / ours_build, 3),
    }  # fmt: skip
