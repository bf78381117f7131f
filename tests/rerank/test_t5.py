"""monoT5 and RankT5: scores against a direct computation with the model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402
from rerank_models import tiny_t5  # noqa: E402

from cascade.rerank.registry import RERANKERS  # noqa: E402
from cascade.rerank.t5 import RANK_HEAD_FILE, MonoT5Reranker, RankT5Reranker  # noqa: E402
from cascade.retrieval.errors import InvalidInput, NotFound  # noqa: E402
from cascade.retrieval.types import Document, Query  # noqa: E402

torch.set_num_threads(2)

QUERIES = ["does aspirin prevent heart attacks", "gene expression in mice", "x"]
DOCS = ["aspirin lowers the risk of a heart attack in adults", "mice models of tumor growth " * 3, ""]


# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return tiny_t5(tmp_path_factory.mktemp("t5"))


def _direct_first_step(path, text: str) -> torch.Tensor:
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(path)
    model = T5ForConditionalGeneration.from_pretrained(path).eval()
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, decoder_input_ids=torch.tensor([[model.config.decoder_start_token_id]])).logits[0, 0]


def test_monot5_is_p_true_of_first_decoder_step(t5_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(t5_dir)
    t, f = tok.encode("true", add_special_tokens=False)[0], tok.encode("false", add_special_tokens=False)[0]
    rr = MonoT5Reranker(str(t5_dir), device="cpu", batch_size=2)
    got = rr.score_pairs(QUERIES, DOCS)
    for q, d, s in zip(QUERIES, DOCS, got, strict=True):
        logits = _direct_first_step(t5_dir, f"Query: {q} Document: {d} Relevant:")
        expected = torch.exp(logits[t]) / (torch.exp(logits[t]) + torch.exp(logits[f]))
        assert abs(float(expected) - s) <= 1e-5
    assert 0 < got.min() and got.max() < 1 and np.ptp(got) > 0


def test_monot5_cuts_the_document_and_keeps_the_suffix(t5_dir):
    rr = MonoT5Reranker(str(t5_dir), device="cpu", max_length=32)
    long_doc = " ".join(f"word{i}" for i in range(200))
    full = rr.tokenizer(f"Query: short q Document: {long_doc} Relevant:")["input_ids"]
    (cut,) = rr.encode(["short q"], [long_doc])
    suffix = rr.tokenizer.encode(" Relevant:", add_special_tokens=False) + [rr.tokenizer.sep_token_id]
    assert len(cut) == 32
    assert cut[-len(suffix) :] == suffix  # "Relevant:" and the end token survive
    assert cut[: 32 - len(suffix)] == full[: 32 - len(suffix)]  # the head is the untruncated head
    (short,) = rr.encode(["q"], ["a short doc"])
    assert short == rr.tokenizer("Query: q Document: a short doc Relevant:")["input_ids"]


def test_rankt5_encoder_decoder_is_the_rank_token_logit(t5_dir):
    rr = RankT5Reranker(str(t5_dir), device="cpu", rank_token="relevant")
    tid = rr.tokenizer.encode("relevant", add_special_tokens=False)[0]
    got = rr.score_pairs(QUERIES, DOCS)
    for q, d, s in zip(QUERIES, DOCS, got, strict=True):
        assert abs(float(_direct_first_step(t5_dir, f"Query: {q} Document: {d}")[tid]) - s) <= 1e-4


def test_rankt5_encoder_only_projects_the_first_vector(tmp_path, t5_dir):
    from transformers import AutoTokenizer, T5EncoderModel

    enc = T5EncoderModel.from_pretrained(t5_dir).eval()
    enc.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(t5_dir).save_pretrained(tmp_path)
    with pytest.raises(NotFound, match="dense head"):
        RankT5Reranker(str(tmp_path), device="cpu", variant="encoder")
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(1, 32)).astype(np.float32), np.array([0.5], dtype=np.float32)
    np.savez(tmp_path / RANK_HEAD_FILE, weight=w, bias=b)
    rr = RankT5Reranker(str(tmp_path), device="cpu", variant="encoder", batch_size=2)
    got = rr.score_pairs(QUERIES, DOCS)
    tok = rr.tokenizer
    for q, d, s in zip(QUERIES, DOCS, got, strict=True):
        ids = tok(f"Query: {q} Document: {d}", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            first = enc(input_ids=ids).last_hidden_state[0, 0].numpy()
        assert abs(float(first @ w[0] + b[0]) - s) <= 1e-4


def test_t5_rerank_through_registry_and_errors(t5_dir):
    rr = RERANKERS.get("monot5")(model=str(t5_dir), device="cpu")
    docs = [Document(str(i), d) for i, d in enumerate(DOCS)]
    ranking = rr.rerank(Query("q", QUERIES[0]), docs)
    scores = rr.score(QUERIES[0], docs)
    assert list(ranking.doc_ids) == [str(i) for i in np.argsort(-scores, kind="stable")]
    assert len(rr.rerank(Query("q", "x"), [])) == 0
    with pytest.raises(InvalidInput, match="single token"):
        MonoT5Reranker(str(t5_dir), device="cpu", true_token="very true")
    with pytest.raises(InvalidInput, match="template"):
        MonoT5Reranker(str(t5_dir), device="cpu", template="no placeholders")
    with pytest.raises(InvalidInput, match="variant"):
        RankT5Reranker(str(t5_dir), device="cpu", variant="decoder")
