"""Cross-encoder reranker: parity with sentence-transformers' CrossEncoder.predict."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

import torch  # noqa: E402
from rerank_models import minilm_cross_encoder, tiny_bert_cross_encoder, tiny_llama  # noqa: E402

from cascade.rerank.cross_encoder import CrossEncoderReranker, saved_activation  # noqa: E402
from cascade.rerank.registry import RERANKERS, build_rerankers  # noqa: E402
from cascade.retrieval.errors import InvalidInput, NotFound  # noqa: E402
from cascade.retrieval.types import Document, Query  # noqa: E402

torch.set_num_threads(2)
# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")

IDENTITY = "torch.nn.modules.linear.Identity"


def _pairs(n: int = 40) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    words = "cell protein gene cancer the of patients risk increased tumor mice expression".split()
    queries = [" ".join(rng.choice(words, size=rng.integers(1, 12))) for _ in range(n)]
    docs = [" ".join(rng.choice(words, size=rng.integers(0, 300))) for _ in range(n)]
    return queries, docs


@pytest.fixture(scope="module")
def tiny_identity(tmp_path_factory):
    return tiny_bert_cross_encoder(tmp_path_factory.mktemp("ce_id"), activation=IDENTITY)


@pytest.fixture(scope="module")
def tiny_default(tmp_path_factory):
    return tiny_bert_cross_encoder(tmp_path_factory.mktemp("ce_default"), seed=1)


@pytest.mark.parametrize("max_length", [64, None])
def test_parity_with_sentence_transformers_tiny(tiny_identity, max_length):
    from sentence_transformers import CrossEncoder

    queries, docs = _pairs()
    ours = CrossEncoderReranker(str(tiny_identity), device="cpu", batch_size=8, max_length=max_length,
                                token_budget=None if max_length is None else 200)  # fmt: skip
    assert ours.activation == "identity"
    ref = CrossEncoder(str(tiny_identity), device="cpu", max_length=max_length).predict(
        list(zip(queries, docs, strict=True))
    )
    got = ours.score_pairs(queries, docs)
    assert got.shape == (40,)
    assert np.abs(got - ref).max() <= 1e-4
    assert np.std(ref) > 1e-2  # the scores spread, so the comparison can fail


def test_default_activation_is_st_sigmoid(tiny_default):
    from sentence_transformers import CrossEncoder

    queries, docs = _pairs(12)
    ours = CrossEncoderReranker(str(tiny_default), device="cpu")
    assert ours.activation == "sigmoid"
    ref = CrossEncoder(str(tiny_default), device="cpu").predict(list(zip(queries, docs, strict=True)))
    assert np.abs(ours.score_pairs(queries, docs) - ref).max() <= 1e-4
    raw = CrossEncoderReranker(str(tiny_default), device="cpu", activation="identity").score_pairs(
        queries, docs
    )
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), ref, atol=1e-5)


def test_saved_activation_rules():
    class Cfg:
        pass

    cfg = Cfg()
    assert saved_activation(cfg, 1) == "sigmoid" and saved_activation(cfg, 3) == "identity"
    cfg.sentence_transformers = {"activation_fn": IDENTITY}
    assert saved_activation(cfg, 1) == "identity"
    cfg.sentence_transformers = {"activation_fn": "evil.module.Act"}  # untrusted: ignored, as ST does
    assert saved_activation(cfg, 1) == "sigmoid"
    old = Cfg()
    old.sbert_ce_default_activation_function = IDENTITY
    assert saved_activation(old, 1) == "identity"


SCIENCE_QUERIES = [
    "0-dimensional biomaterials show inductive properties.",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
]
SCIENCE_DOCS = [
    "Microstructural development of human newborn cerebral white matter assessed in vivo by diffusion tensor "
    "magnetic resonance imaging. Alterations of the architecture of cerebral white matter in the developing "
    "human brain can affect cortical development and result in functional disabilities. " * 6,  # > 256 tokens
    "Induction of myelodysplasia by myeloid-derived suppressor cells.",
    "ALDH1 is a marker of normal and malignant human mammary stem cells and a predictor of poor clinical outcome.",
    "",
]


@pytest.mark.slow  # the real MiniLM encoder, through both rerankers
def test_parity_with_sentence_transformers_minilm(tmp_path_factory):
    """The real MiniLM-L6 encoder with a seeded 1-label head: ms-marco-MiniLM-L6 sized."""
    from sentence_transformers import CrossEncoder

    path = minilm_cross_encoder(tmp_path_factory.mktemp("minilm_ce"))
    firsts = [q for q in SCIENCE_QUERIES for _ in SCIENCE_DOCS]
    seconds = [d for _ in SCIENCE_QUERIES for d in SCIENCE_DOCS]
    ours = CrossEncoderReranker(str(path), device="cpu", max_length=256, batch_size=16)
    ref = CrossEncoder(str(path), device="cpu", max_length=256).predict(
        list(zip(firsts, seconds, strict=True))
    )
    assert np.abs(ours.score_pairs(firsts, seconds) - ref).max() <= 1e-4
    assert np.ptp(ref) > 1e-3


def test_scores_do_not_depend_on_batching(tiny_identity):
    queries, docs = _pairs(12)
    one = CrossEncoderReranker(str(tiny_identity), device="cpu", batch_size=1).score_pairs(queries, docs)
    big = CrossEncoderReranker(str(tiny_identity), device="cpu", batch_size=24).score_pairs(queries, docs)
    np.testing.assert_allclose(one, big, atol=1e-5)
    # chunks tokenized ahead on worker threads (the GPU path) come back in input order
    chunked = CrossEncoderReranker(str(tiny_identity), device="cpu", batch_size=2, chunk_size=5)
    np.testing.assert_allclose(chunked.score_pairs(queries, docs), big, atol=1e-5)
    with pytest.raises(InvalidInput, match="chunk_size"):
        CrossEncoderReranker(str(tiny_identity), device="cpu", chunk_size=0)


def test_rerank_sorts_cuts_and_handles_empty(tiny_identity):
    rr = RERANKERS.get("cross-encoder")(model=str(tiny_identity), device="cpu")
    docs = [Document(f"d{i}", "gene expression " * i, title=f"t{i}") for i in range(6)]
    scores = rr.score("gene", docs)
    ranking = rr.rerank(Query("q", "gene"), docs, top_k=3)
    assert list(ranking.doc_ids) == [docs[i].id for i in np.argsort(-scores, kind="stable")[:3]]
    assert list(ranking.scores) == sorted(ranking.scores, reverse=True)
    empty, full = rr.rerank_batch([Query("a", "x"), Query("b", "gene")], [[], docs])
    assert len(empty) == 0 and len(full) == 6
    assert len(rr.score("x", [])) == 0


def test_bad_models_raise_project_errors(tmp_path, tiny_identity):
    with pytest.raises(NotFound, match="cannot load model"):
        CrossEncoderReranker(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(InvalidInput, match="causal LM"):
        CrossEncoderReranker(str(tiny_llama(tmp_path / "llm")), device="cpu")
    with pytest.raises(InvalidInput, match="3 labels"):
        CrossEncoderReranker(str(tiny_bert_cross_encoder(tmp_path / "nli", num_labels=3)), device="cpu")
    with pytest.raises(InvalidInput, match="activation"):
        CrossEncoderReranker(str(tiny_identity), device="cpu", activation="tanh")


def test_cross_encoder_as_a_pipeline_stage(tiny_identity):
    from cascade.retrieval.pipeline import Pipeline, PipelineSpec
    from cascade.retrieval.sparse.bm25 import BM25Retriever

    docs = [Document(f"d{i}", f"gene {'expression ' * (i % 4)}cell number {i}") for i in range(12)]
    by_id = {d.id: d for d in docs}

    class Store:
        def get_many(self, ids):
            return [by_id[i] for i in ids]

    spec = PipelineSpec.parse({
        "retrievers": [{"retriever": "bm25", "depth": 10}],
        "rerankers": [{"reranker": "cross-encoder", "depth": 4, "params": {"model": str(tiny_identity), "device": "cpu"}}],
        "k": 10,
    })  # fmt: skip
    bm25 = BM25Retriever.build(docs)
    query = Query("q", "gene expression")
    first = bm25.search([query], k=10)[0]
    (out,) = Pipeline(spec, [bm25], build_rerankers(spec), docs=Store()).search([query]).rankings
    head = [by_id[i] for i in first.doc_ids[:4]]
    scores = CrossEncoderReranker(str(tiny_identity), device="cpu").score(query.text, head)
    assert list(out.doc_ids[:4]) == [head[i].id for i in np.argsort(-scores, kind="stable")]
    assert out.doc_ids[4:] == first.doc_ids[4:10]  # below the stage's depth: BM25 order kept
