"""A tiny BEIR dataset for the benchmark tests: distinct random texts over a small vocabulary."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import write_beir

WORDS = ("stem cell bone marrow protein gene virus infection immune response tumor growth insulin "
         "vitamin fracture neuron blood oxygen heart artery vaccine diabetes cancer therapy").split()  # fmt: skip


def tiny_beir(root: Path, num_docs: int = 60, num_queries: int = 8, seed: int = 0) -> Path:
    """``num_docs`` documents of 6-14 words (all texts distinct), queries of 2-4 words, one
    judged document per query."""
    rng = random.Random(seed)
    texts: set[str] = set()
    while len(texts) < num_docs:
        texts.add(" ".join(rng.choices(WORDS, k=rng.randint(6, 14))))
    docs = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(sorted(texts))]
    queries = [
        {"_id": f"q{i}", "text": " ".join(rng.sample(WORDS, rng.randint(2, 4)))} for i in range(num_queries)
    ]
    qrels = [(f"q{i}", f"d{rng.randrange(num_docs)}", 1) for i in range(num_queries)]
    return write_beir(root, docs, queries, qrels)
