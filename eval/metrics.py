"""Metrics by name, computed with ir_measures (pytrec_eval underneath).

Names are lowercase and short: ``ndcg@10``, ``recall@100``, ``mrr@10``, ``map``,
``map@1000``, ``p@10``. Binary metrics use the dataset's relevance cut-off (2 for TREC DL
passages); nDCG uses the graded judgments as gains.

Runs are scored in the order Cascade ranked them (scores become ranks), so ties are
evaluated exactly as returned, never re-broken by trec_eval's docno order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.types import Qrels, Run

_NAMES = {"ndcg": "nDCG", "recall": "R", "mrr": "RR", "map": "AP", "p": "P", "precision": "P"}
_BINARY = {"R", "RR", "AP", "P"}
_METRIC = re.compile(r"^(?P<name>[a-z]+)(?:@(?P<k>\d+))?$")

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def parse_metrics(spec: str | Sequence[str]) -> list[str]:
    """``"ndcg@10,recall@100"`` -> validated names; an unknown one names the valid forms."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise InvalidInput("no metrics given")
    for n in names:
        m = _METRIC.match(n)
        if not m or m["name"] not in _NAMES or (m["k"] is not None and int(m["k"]) < 1):
            raise InvalidInput(
                f"unknown metric {n!r}; valid: {', '.join(sorted(_NAMES))}, each optionally @k (e.g. ndcg@10)"
            )
    return names


def _measure(name: str, relevance_level: int):
    import ir_measures

    m = _METRIC.match(name)
    base = _NAMES[m["name"]]
    rel = f"(rel={relevance_level})" if base in _BINARY and relevance_level != 1 else ""
    cut = f"@{m['k']}" if m["k"] else ""
    return ir_measures.parse_measure(f"{base}{rel}{cut}")


def per_query(run: Run, qrels: Qrels, metrics: Sequence[str], relevance_level: int = 1) -> dict[str, dict[str, float]]:
    """metric -> query id -> value, for every judged query (0 where the run has no hits)."""
    import ir_measures

    metrics = parse_metrics(metrics)
    measures = {str(_measure(n, relevance_level)): n for n in metrics}
    scored = {
        qid: {d: float(len(r) - i) for i, d in enumerate(r.doc_ids)} for qid, r in run.items() if qid in qrels
    }
    out: dict[str, dict[str, float]] = {n: dict.fromkeys(qrels, 0.0) for n in metrics}
    for m in ir_measures.iter_calc([_measure(n, relevance_level) for n in metrics], qrels, scored):
        out[measures[str(m.measure)]][m.query_id] = float(m.value)
    return out


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str], relevance_level: int = 1) -> dict[str, float]:
    """Mean of each metric over all judged queries (a query missing from the run counts 0)."""
    pq = per_query(run, qrels, metrics, relevance_level)
    return {n: float(np.mean(list(v.values()))) if v else 0.0 for n, v in pq.items()}
