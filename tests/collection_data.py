"""Deterministic synthetic documents for the collection and API tests."""

import random

from cascade.retrieval.types import Document

WORDS = [f"w{i}" for i in range(300)] + [
    "stem",
    "cell",
    "heart",
    "blood",
    "neuron",
    "gene",
    "protein",
    "virus",
]


def make_docs(n: int, seed: int = 0, start: int = 0, prefix: str = "d") -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for i in range(start, start + n):
        words = rng.choices(WORDS, k=rng.randint(15, 60))
        # a token unique to the document, so a search can find exactly it
        text = " ".join(words) + f" uniq{prefix}{i}"
        docs.append(Document(f"{prefix}{i}", text, f"title {rng.choice(WORDS)}", {"n": i, "group": i % 5}))
    return docs


def make_queries(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, 5))) for _ in range(n)]
