"""The ``cascade`` command: thin wrappers over library functions, run in-process.

Errors the user can fix (the project's :class:`CascadeError` tree) print one line on
stderr and exit 2; anything else is a bug, printed as one line too (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cascade.api.stdout import json_only_stdout, print_json
from cascade.eval.presets import resolve_pipeline
from cascade.retrieval.errors import CascadeError, InvalidInput

log = logging.getLogger("cascade")


def _kv(pairs: Sequence[str]) -> dict:
    """``key=value`` options; values parsed as JSON when they can be (numbers, booleans)."""
    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise InvalidInput(f"expected key=value, got {p!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _set_threads(args) -> int:
    """``--threads N`` (default: the cores this process may use) for torch, numba and faiss,
    each set as it loads (:func:`cascade.retrieval.threads.set_threads`); the count."""
    from cascade.retrieval.threads import resolve_threads, set_threads

    n = resolve_threads(args.threads)
    set_threads(n)
    return n


def _threads_report(n: int) -> tuple[int, dict[str, int]]:
    """The count, and what each library this run loaded ran on, read back at the end."""
    from cascade.retrieval.threads import library_threads

    return n, library_threads()


def _add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", metavar="N",
                        help="CPU threads for torch, numba and faiss (default: all cores this process may use)")  # fmt: skip


# -- eval ------------------------------------------------------------------------------------


def cmd_eval(args) -> int:
    from cascade.eval.datasets import load_dataset
    from cascade.eval.evaluate import evaluate_pipeline, score_run
    from cascade.eval.metrics import parse_metrics
    from cascade.eval.trec import read_run

    threads = _set_threads(args)
    if args.rerank_depths is not None or args.plot is not None or args.warm:
        return _eval_depth_sweep(args, threads)
    metrics = parse_metrics(args.metrics)
    dataset = load_dataset(args.dataset, args.split)
    if args.run:
        run = read_run(args.run)
        agg, pq = score_run(dataset, run, metrics, args.per_query or bool(args.compare or args.report))
        report = {
            "dataset": dataset.name, "split": dataset.split, "pipeline": f"run:{args.run}",
            "num_queries": len(dataset.queries), "metrics": agg, "timings_s": {},
        }  # fmt: skip
    else:
        if not args.pipeline:
            raise InvalidInput("give --pipeline NAME_OR_FILE or --run FILE")
        spec = resolve_pipeline(args.pipeline)
        with_pq = args.per_query or bool(args.compare or args.report)
        rep, run = evaluate_pipeline(dataset, spec, metrics, args.run_out, with_pq)
        report, pq = rep.to_json(), rep.per_query
        report.pop("per_query", None)
    if args.compare:
        from cascade.eval.significance import paired_t_test, randomization_test

        base_run = read_run(args.compare)
        other, base_pq = score_run(dataset, base_run, metrics, True)
        report["significance"] = {
            m: {
                "baseline": str(args.compare),
                "baseline_mean": round(other[m], 6),
                "t_test_p": paired_t_test(pq[m], base_pq[m]),
                "randomization_p": randomization_test(pq[m], base_pq[m]),
            }
            for m in metrics
        }
    if args.report:
        from cascade.eval.run_report import Scored, write_eval_report

        system = Scored(report["pipeline"], report["metrics"], pq, run)
        base = Scored(f"run:{args.compare.name}", other, base_pq, base_run) if args.compare else None
        report["report"] = str(write_eval_report(args.report, dataset, report, system, base))
    report["threads"], report["library_threads"] = _threads_report(threads)
    if args.per_query:
        report["per_query"] = pq
    if args.json:
        print_json(report)
    else:
        print(f"{report['dataset']} [{report['split']}] {report['pipeline']}: {report['num_queries']} queries")
        for m, v in report["metrics"].items():
            sig = report.get("significance", {}).get(m)
            extra = f"   (baseline {sig['baseline_mean']:.4f}, p={sig['randomization_p']:.4f})" if sig else ""
            print(f"  {m:<12} {v:.4f}{extra}")
        for t, v in report["timings_s"].items():
            print(f"  {t:<28} {v:.3f}")
        if "report" in report:
            print(f"  report: {report['report']}")
    return 0


def _eval_depth_sweep(args, threads: int) -> int:
    """``cascade eval --rerank-depths``: the last reranker at each depth over one first-stage run."""
    from cascade.eval.datasets import load_dataset
    from cascade.eval.depth_sweep import parse_depths, plot_sweep, sweep_rerank_depths
    from cascade.eval.metrics import parse_metrics

    if args.rerank_depths is None:
        raise InvalidInput("--plot and --warm go with a depth sweep: give --rerank-depths too")
    clash = [flag for flag, v in (("--run", args.run), ("--compare", args.compare), ("--run-out", args.run_out),
                                  ("--per-query", args.per_query), ("--report", args.report)) if v]  # fmt: skip
    if clash:
        raise InvalidInput(f"--rerank-depths does not combine with {', '.join(clash)}")
    if not args.pipeline:
        raise InvalidInput("--rerank-depths needs --pipeline NAME_OR_FILE (a pipeline with a reranker)")
    depths = parse_depths(args.rerank_depths)
    metrics = parse_metrics(args.metrics)
    spec = resolve_pipeline(args.pipeline)
    dataset = load_dataset(args.dataset, args.split)
    report = sweep_rerank_depths(dataset, spec, depths, metrics, warm=args.warm)
    out = report.to_json()
    out["threads"], out["library_threads"] = _threads_report(threads)
    if args.plot is not None:
        out["plot"] = str(plot_sweep(report, args.plot))
    if args.json:
        print_json(out)
        return 0
    print(f"{out['dataset']} [{out['split']}] {out['pipeline']}: {out['num_queries']} queries, "
          f"reranker {out['reranker']} at each depth over one first-stage run")  # fmt: skip
    print(f"  {'depth':>7}  " + "  ".join(f"{m:>12}" for m in metrics) + f"  {'ms/query':>9}  p({metrics[0]})")
    print(f"  {'first':>7}  " + "  ".join(f"{out['first_stage']['metrics'][m]:>12.4f}" for m in metrics))
    for d in out["depths"]:
        p = d["significance"][metrics[0]]["randomization_p"]
        cells = "  ".join(f"{d['metrics'][m]:>12.4f}" for m in metrics)
        print(f"  {d['depth']:>7}  {cells}  {d['rerank_ms_per_query']:>9.1f}  {p:.4f}")
    if "plot" in out:
        print(f"  plot: {out['plot']}")
    return 0


# -- bench -----------------------------------------------------------------------------------


def cmd_bench(args) -> int:
    from cascade.eval.bench import run_benchmark

    opts = _kv(args.opt)
    # the scale benchmark's own flags (as --opt family=... / sizes=...)
    opts.update({k: v for k, v in (("family", args.family), ("sizes", args.sizes)) if v is not None})
    result = run_benchmark(args.name, args.dataset, device=args.device, plot=args.plot, **opts)
    if args.report:
        from cascade.eval.report import result_report

        images = [args.plot] if args.plot is not None and Path(args.plot).is_file() else []
        result["report"] = str(result_report(args.report, f"Benchmark: {args.name}", result, images))
    if args.json:
        print_json(result)
    else:
        print(json.dumps(result, indent=2))
    return 0


# -- reproduce -------------------------------------------------------------------------------


def cmd_reproduce(args) -> int:
    from cascade.eval.reproduce import load_matrix, markdown_table, run_rows, select, shared_dir, text_table

    matrix = load_matrix(args.matrix) if args.matrix else load_matrix()
    if args.table:
        print(markdown_table(matrix))
        return 0
    only = [n.strip() for n in (args.only or "").split(",") if n.strip()]
    rows = select(matrix, only, ci=args.ci)
    if not rows:
        raise InvalidInput("no rows selected")
    results = run_rows(matrix, rows, shared_dir(args.shared))
    passed = all(r["pass"] for r in results)
    if args.report:
        from cascade.eval.reproduce import write_matrix_report

        write_matrix_report(args.report, results)
    if args.json:
        print_json({"matrix": str(args.matrix or "builtin"), "rows": results, "pass": passed})
    else:
        print(text_table(results))
    return 0 if passed else 1


# -- index / search ----------------------------------------------------------------------------


def cmd_index(args) -> int:
    from cascade.indexing.corpus import read_corpus
    from cascade.indexing.index_set import IndexSet

    threads = _set_threads(args)
    spec = resolve_pipeline(args.pipeline)
    fields = {k: v for k, v in (("id_field", args.id_field), ("text_field", args.text_field),
                                ("title_field", args.title_field)) if v is not None}  # fmt: skip
    corpus = Path(args.corpus)
    if not corpus.exists():
        raise InvalidInput(f"corpus {corpus} does not exist")
    source = None
    if args.ray_workers:
        from cascade.indexing.ray_build import CorpusSource

        source = CorpusSource(str(corpus.resolve()), args.format, fields)
    index_set = IndexSet(args.out, lambda: read_corpus(corpus, args.format, **fields), shards=args.shards,
                         ray_workers=args.ray_workers, source=source)  # fmt: skip
    index_set.build(spec)
    n = len(index_set.docstore())
    result = {"index": str(args.out), "pipeline": spec.name, "num_docs": n, "threads": threads}
    print_json(result) if args.json else print(f"indexed {n} documents into {args.out} for {spec.name}")
    return 0


def cmd_search(args) -> int:
    from cascade.indexing.index_set import IndexSet
    from cascade.rerank.registry import build_rerankers
    from cascade.retrieval.types import Query

    if not Path(args.index).is_dir():
        raise InvalidInput(f"index directory {args.index} does not exist (build it with `cascade index`)")
    spec = resolve_pipeline(args.pipeline)
    index_set = IndexSet(args.index)
    pipeline = index_set.pipeline(spec, build_rerankers(spec))
    texts = list(args.query or [])
    if args.queries:
        texts += [line.rstrip("\n") for line in open(args.queries, encoding="utf-8") if line.strip()]
    if not texts or not all(t.strip() for t in texts):
        raise InvalidInput("give at least one non-empty --query (or --queries FILE)")
    queries = [Query(str(i), t) for i, t in enumerate(texts)]
    out = pipeline.search(queries, k=args.k)
    store = index_set.docstore()
    results = []
    for q, ranking in zip(queries, out.rankings, strict=True):
        docs = store.get_many(list(ranking.doc_ids), missing_ok=True)
        by_id = {d.id: d for d in docs}
        hits = [{"id": h.doc_id, "score": h.score, "title": by_id[h.doc_id].title if h.doc_id in by_id else "",
                 "text": by_id[h.doc_id].text[:300] if h.doc_id in by_id else ""} for h in ranking]  # fmt: skip
        results.append({"query": q.text, "hits": hits})
    if args.json:
        print_json({"pipeline": spec.name, "results": results, "timings_s": out.timings_s})
    else:
        for r in results:
            print(f"query: {r['query']}")
            for rank, h in enumerate(r["hits"], start=1):
                print(f"  {rank:>3}. {h['id']:<20} {h['score']:.4f}  {(h['title'] or h['text'])[:80]}")
    return 0


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cascade", description="Retrieval and reranking: index, search, evaluate.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="evaluate a pipeline (or a run file) on a BEIR / MS MARCO dataset")
    e.add_argument("--dataset", required=True, help="dataset directory or BEIR name")
    e.add_argument("--pipeline", help="preset name or YAML/JSON spec file")
    e.add_argument("--split", default="test")
    e.add_argument("--metrics", default="ndcg@10,recall@100,mrr@10")
    e.add_argument("--run-out", type=Path, help="write the run as a TREC file")
    e.add_argument("--run", type=Path, help="evaluate this TREC run file instead of running a pipeline")
    e.add_argument("--compare", type=Path, help="a baseline TREC run: add paired significance tests")
    e.add_argument("--per-query", action="store_true", help="include per-query values")
    e.add_argument("--report", type=Path, metavar="DIR", help="write an HTML report with plots (index.html + PNGs)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--rerank-depths", metavar="D1,D2,...",
                   help="sweep the pipeline's last reranker over these depths, on one first-stage run")
    e.add_argument("--plot", type=Path, metavar="FILE.png", help="with --rerank-depths: metric and cost vs depth")
    e.add_argument("--warm", action="store_true",
                   help="with --rerank-depths: one untimed run at the deepest depth first (fills a reranker's cache)")
    _add_threads_flag(e)
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="benchmark against a reference tool in the same process")
    b.add_argument("name")
    b.add_argument("--dataset", help="a BEIR folder or name (every benchmark but scale, which generates its data)")
    b.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the benchmark's choice)")
    b.add_argument("--family", help="scale: the index family (bm25, impact, dense, plaid)")
    b.add_argument("--sizes", metavar="N1,N2,...", help="scale: corpus sizes in documents (100000 or 100k,1M,8.8M)")
    b.add_argument("--opt", action="append", metavar="KEY=VALUE", help="benchmark option (repeatable)")
    b.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the benchmark's figure (matplotlib)")
    b.add_argument("--report", type=Path, metavar="DIR", help="write the result (and --plot's figure) as an HTML report")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("reproduce", help="run the reproduction matrix: expected vs measured figures")
    r.add_argument("--only", help="comma-separated condition names (default: all)")
    r.add_argument("--ci", action="store_true", help="only the conditions marked fast enough for CI")
    r.add_argument("--matrix", type=Path, help="a matrix YAML file (default: the one shipped)")
    r.add_argument("--shared", help="the folder {shared} stands for (default: $CASCADE_SHARED or ../shared)")
    r.add_argument("--table", action="store_true", help="print the matrix as the README's Markdown table")
    r.add_argument("--report", type=Path, help="also write an HTML report with a plot to this directory")
    r.add_argument("--json", action="store_true", help="print one JSON object with one entry per row")
    r.set_defaults(func=cmd_reproduce)

    i = sub.add_parser("index", help="build the indexes a pipeline needs, plus a docstore")
    i.add_argument("--corpus", required=True, help="BEIR dir, MS MARCO dir, .jsonl/.csv/.tsv file or folder")
    i.add_argument("--out", required=True, type=Path, help="index directory to create or extend")
    i.add_argument("--pipeline", default="bm25")
    i.add_argument("--format", default="auto", choices=["auto", "beir", "jsonl", "csv", "tsv", "msmarco", "folder"])
    i.add_argument("--id-field")
    i.add_argument("--text-field")
    i.add_argument("--title-field")
    i.add_argument("--shards", type=int, default=0, help="split each index into N shards")
    i.add_argument("--ray-workers", type=int, default=0, help="build the shards on Ray with N workers")
    _add_threads_flag(i)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="search an index directory built by `cascade index`")
    s.add_argument("--index", required=True, type=Path)
    s.add_argument("--pipeline", default="bm25")
    s.add_argument("--query", "-q", action="append", help="query text (repeatable)")
    s.add_argument("--queries", type=Path, help="file with one query per line")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_search)

    _add_serve(sub)
    return p


def _add_serve(sub) -> None:
    """``cascade serve`` lives with the API app; it is only registered when that module exists."""
    try:
        from .server import add_collection_parser, add_serve_parser
    except ImportError:
        return
    add_serve_parser(sub)
    add_collection_parser(sub)
    from .mcp import add_mcp_parser  # the `mcp` package itself is imported only when the command runs

    add_mcp_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if getattr(args, "json", False):
            with json_only_stdout():
                return args.func(args)
        return args.func(args)
    except CascadeError as e:
        if args.debug:
            raise
        print(f"cascade: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cascade: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if args.debug:
            raise
        print(f"cascade: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
