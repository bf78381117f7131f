"""``cascade bench bm25``: our BM25 against bm25s (the fast reference) and rank-bm25 (slow).

All single-threaded, same queries (the split's judged queries), same BM25 parameters
(Anserini's k1=0.9, b=0.4, Lucene's idf), same stemmer and stopwords. bm25s runs at its
fastest installed backend (numba, with ``n_threads=1``, when numba is installed), the
headline ratio; its numpy backend is reported beside it. Index build and query throughput
are timed separately; query time includes tokenization for every tool, since a user pays
for it. Queries are timed at each k of ``ks``; nDCG@10 of each tool is reported too, so
speed is never bought with a different answer.

``plot=FILE.png``: queries/s of each tool against k.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from cascade.eval.bench import race, version, versions
from cascade.eval.datasets import load_dataset
from cascade.eval.metrics import evaluate
from cascade.retrieval.errors import require
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.types import Ranking


def run(dataset_dir: Path, device: str | None = None, k: int | None = None, ks: list[int] | tuple[int, ...] = (10, 100, 1000),
        split: str = "test", rank_bm25_queries: int = 300, rounds: int = 7, build_rounds: int = 3,
        backends: list[str] | None = None, plot: Path | None = None, **_) -> dict:  # fmt: skip
    """bm25s and rank-bm25 against ours; ``k`` alone means ``ks=[k]``; ``backends``: bm25s's
    backends, the first the headline (default :func:`bm25s_backends`)."""
    from threadpoolctl import threadpool_limits

    bm25s = require("bm25s", "bench")
    rank_bm25 = require("rank_bm25", "bench")
    stemmer_mod = require("Stemmer", "bench")
    ks = [int(k)] if k is not None else [int(x) for x in ks]
    ds = load_dataset(dataset_dir, split)
    docs = list(ds.corpus())
    queries = ds.queries
    texts = [d.contents for d in docs]
    doc_ids = np.array([d.id for d in docs], dtype=str)
    backends = list(backends or bm25s_backends())
    arrays = importlib.util.find_spec("numba") is not None  # our arrays form runs the compiled kernel

    def ndcg(rankings):
        return round(evaluate({r.query_id: r for r in rankings}, ds.qrels, ["ndcg@10"])["ndcg@10"], 4)

    def to_rankings(result):
        idx, scores = result
        return [
            Ranking.from_scores(q.id, doc_ids[i], s) for q, i, s in zip(queries, idx, scores, strict=True)
        ]

    with threadpool_limits(1):
        stemmer = stemmer_mod.Stemmer("english")

        def ref_build(backend):
            def build():
                index = bm25s.BM25(k1=0.9, b=0.4, backend=backend)
                tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
                index.index(tokens, show_progress=False)
                return index

            return build

        # builds raced too (in turn, fastest of 3): a single first build pays the process's
        # cold start (allocator, caches) for whichever tool goes first
        built = race({"ours": lambda: BM25Retriever.build(docs, show_progress=False),
                      **{f"bm25s-{b}": ref_build(b) for b in backends}}, rounds=build_rounds)  # fmt: skip
        ours = built["ours"][1]

        def searcher(index, backend, kk):
            def search():
                toks = bm25s.tokenize(
                    [q.text for q in queries], stopwords="en", stemmer=stemmer, show_progress=False
                )
                return index.retrieve(toks, k=kk, n_threads=1, show_progress=False, backend_selection=backend)

            return search

        by_k = []
        for kk in ks:
            contenders = {"ours": lambda kk=kk: ours.search(queries, k=kk),
                          **({"ours-arrays": lambda kk=kk: ours.search_arrays(queries, k=kk)} if arrays else {}),
                          **{f"bm25s-{b}": searcher(built[f"bm25s-{b}"][1], b, kk) for b in backends}}  # fmt: skip
            for fn in contenders.values():
                fn()  # compile (numba) and warm outside the timing
            timed = race(contenders, rounds=rounds)
            qps = {name: round(len(queries) / s, 1) for name, (s, _) in timed.items()}
            fastest = min(backends, key=lambda b: timed[f"bm25s-{b}"][0])
            row = {"k": kk, "queries_per_s": qps, "bm25s_fastest": fastest,
                   "ratio": round(timed[f"bm25s-{fastest}"][0] / timed["ours"][0], 3),
                   **{f"ratio_vs_bm25s_{b}": round(timed[f"bm25s-{b}"][0] / timed["ours"][0], 3) for b in backends}}  # fmt: skip
            if arrays:
                row["ratio_arrays"] = round(timed[f"bm25s-{fastest}"][0] / timed["ours-arrays"][0], 3)
            ref = to_rankings(timed[f"bm25s-{fastest}"][1])
            row["parity"] = _parity(timed["ours"][1], ref, fastest)
            if kk >= 10:
                row["ndcg@10"] = {"ours": ndcg(timed["ours"][1]),
                                  **{f"bm25s-{b}": ndcg(to_rankings(timed[f"bm25s-{b}"][1])) for b in backends}}  # fmt: skip
            by_k.append(row)

        # rank-bm25 on our tokens, Okapi variant: slow, so a slice of the queries, at the first k
        analyzer, k0 = ours.analyzer, ks[0]
        t = time.perf_counter()
        okapi = rank_bm25.BM25Okapi([analyzer(x) for x in texts])
        okapi_build = time.perf_counter() - t
        sub = queries[:rank_bm25_queries]
        t = time.perf_counter()
        for q in sub:
            s = okapi.get_scores(analyzer(q.text))
            np.argpartition(-s, min(k0, len(s) - 1))[:k0]
        okapi_s = time.perf_counter() - t

    worst = min(by_k, key=lambda r: r["ratio"])
    fastest_at = ", ".join(f"{r['bm25s_fastest']} at k={r['k']}" for r in by_k)
    out = {
        "benchmark": "bm25", "dataset": str(dataset_dir), "num_docs": len(docs), "num_queries": len(queries),
        "ks": ks, "threads": 1,
        "timing": f"fastest of {rounds} rounds per k, contenders in turn after an untimed warm-up call; "
                  "query time includes tokenization",
        "versions": versions("bm25s", "numba", "numpy", "scipy", "rank-bm25"),
        "ours": {"name": "cascade BM25 (lucene variant), search() -> list[Ranking]", "version": version("cascade-search"),
                 "index_s": round(built["ours"][0], 3), "queries_per_s": worst["queries_per_s"]["ours"],
                 "ndcg@10": next((r["ndcg@10"]["ours"] for r in by_k if "ndcg@10" in r), None)},
        "baseline": {"name": "bm25s, its fastest installed backend at each k", "version": version("bm25s"),
                     "setting": f"BM25(k1=0.9, b=0.4, method='lucene', backend=B), retrieve(n_threads=1, "
                                f"backend_selection=B), its own tokenizer (English stopwords, Snowball stemmer), "
                                f"B of {backends}, the fastest per k: {fastest_at}",
                     "index_s": {b: round(built[f"bm25s-{b}"][0], 3) for b in backends},
                     "queries_per_s": worst["queries_per_s"][f"bm25s-{worst['bm25s_fastest']}"],
                     "ndcg@10": next((r["ndcg@10"][f"bm25s-{r['bm25s_fastest']}"] for r in by_k if "ndcg@10" in r), None)},
        "slow_reference": {"name": "rank-bm25 BM25Okapi", "version": version("rank-bm25"), "k": k0,
                           "index_s": round(okapi_build, 3), "queries": len(sub),
                           "queries_per_s": round(len(sub) / okapi_s, 1)},
        "by_k": by_k,
        "ratio": worst["ratio"], "ratio_at_k": worst["k"],
        "ratio_note": f"the smallest ratio over k in {ks}, ours (rankings) against bm25s's fastest backend at that k; "
                      "ratio_arrays per k: ours returning arrays, as bm25s does",
        "index_ratio": round(min(built[f"bm25s-{b}"][0] for b in backends) / built["ours"][0], 3),
    }  # fmt: skip
    if plot is not None:
        from cascade.eval.plots import line_chart

        names = [
            n
            for n in ("ours", "ours-arrays", *(f"bm25s-{b}" for b in backends))
            if n in by_k[0]["queries_per_s"]
        ]
        series = {n: [(r["k"], r["queries_per_s"][n]) for r in by_k] for n in names}
        out["plots"] = [str(line_chart(plot, series, "k", "queries/s", f"BM25, {len(docs):,} docs, 1 thread",
                                       logx=True, logy=True))]  # fmt: skip
    return out


def bm25s_backends() -> list[str]:
    """bm25s's backends to time, fastest first: numba (where installed), then numpy."""
    return ["numba", "numpy"] if importlib.util.find_spec("numba") is not None else ["numpy"]


def _parity(ours: list[Ranking], ref: list[Ranking], backend: str) -> dict:
    """How far our rankings are from bm25s's: queries whose top-k holds the same ids, and the
    largest score difference rank by rank (bm25s scores in float32)."""
    same = sum(set(a.doc_ids) == set(b.doc_ids) for a, b in zip(ours, ref, strict=True))
    # a different id at the cut is no difference when both rank lists hold the same scores and
    # every id that differs carries the last (k-th) score: a tie, broken differently
    tied = sum(set(a.doc_ids) != set(b.doc_ids) and np.allclose(a.scores, b.scores, atol=1e-4)
               and all(np.isclose(s, a.scores[-1], atol=1e-4) for d, s in zip(a.doc_ids, a.scores, strict=True)
                       if d not in set(b.doc_ids))
               for a, b in zip(ours, ref, strict=True) if len(a.scores) == len(b.scores) and len(a.scores))  # fmt: skip
    diff = max((float(np.max(np.abs(np.subtract(a.scores, b.scores)))) for a, b in zip(ours, ref, strict=True)
                if len(a.scores) == len(b.scores) and len(a.scores)), default=0.0)  # fmt: skip
    lengths = sum(len(a.scores) != len(b.scores) for a, b in zip(ours, ref, strict=True))
    return {"against": f"bm25s-{backend}", "same_top_k_ids": same, "tie_at_cut": tied, "max_abs_score_diff": round(diff, 6),
            "different_lengths": lengths}  # fmt: skip
