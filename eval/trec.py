"""TREC run files: ``qid Q0 docid rank score tag``, one line per hit."""

from __future__ import annotations

from pathlib import Path

from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.storage import atomic_file
from cascade.retrieval.types import Ranking, Run


def write_run(run: Run, path: str | Path, tag: str = "cascade") -> None:
    """Write atomically: a killed write leaves the previous file in place."""
    with atomic_file(path) as f:
        for qid, ranking in run.items():
            for rank, (doc_id, score) in enumerate(zip(ranking.doc_ids, ranking.scores, strict=True), start=1):
                f.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"run file {path} does not exist")
    ids: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InvalidInput(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag'")
            try:
                score = float(parts[4])
            except ValueError:
                raise InvalidInput(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
            ids.setdefault(parts[0], []).append(parts[2])
            scores.setdefault(parts[0], []).append(score)
    return {q: Ranking.from_scores(q, ids[q], scores[q]) for q in ids}
