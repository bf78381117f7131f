"""Aggretriever pooling checked by hand on the real SPLADE-tiny MLM head, and through a pipeline."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cascade.retrieval.encoders.aggretriever import AggretrieverEncoder  # noqa: E402
from cascade.retrieval.encoders.backends import dense_encoder  # noqa: E402
from cascade.retrieval.errors import InvalidInput  # noqa: E402

torch.set_num_threads(2)

SPLADE = Path(__file__).resolve().parents[4] / "shared" / "models" / "splade-tiny"
# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = [
    pytest.mark.skipif(not SPLADE.is_dir(), reason="the offline splade-tiny checkpoint is not here"),
    pytest.mark.usefixtures("fp32_auto"),
]

TEXTS = ["stem cells differentiate into neurons", "vitamin d and bone fractures in older adults"]


@functools.cache
def _masked_lm(model_dir):
    return transformers.AutoTokenizer.from_pretrained(
        model_dir
    ), transformers.AutoModelForMaskedLM.from_pretrained(model_dir).eval()


def _by_hand(model_dir, text, agg_dim, term=None, pooler=None):
    """Section 3 of the paper, one text, in plain torch: max over tokens (not [CLS]) of the
    softmaxed MLM distribution (times the term weight), folded column by column, then CLS."""
    tok, mlm = _masked_lm(model_dir)
    with torch.inference_mode():
        out = mlm(**tok(text, return_tensors="pt"), output_hidden_states=True)
        hidden, logits = out.hidden_states[-1][0], out.logits[0]
        dist = torch.softmax(logits[1:], dim=-1)
        if term is not None:
            dist = dist * (hidden[1:] @ term[0].T + term[1])
        lexical = dist.max(0).values.numpy()
        cls = hidden[0] if pooler is None else hidden[0] @ pooler[0].T + pooler[1]
    vocab, width = len(lexical), 2 * agg_dim
    drop = vocab % width
    if drop > 1000:  # BERT: 30522 % 1280 = 1082, so 198 zeros are appended instead
        lexical = np.concatenate([lexical, np.zeros(width - drop, dtype=lexical.dtype)])
    else:
        lexical = lexical[drop:]
    columns = np.array([lexical[j::width].max() for j in range(width)])
    agg = [
        columns[2 * i] if columns[2 * i] > columns[2 * i + 1] else -columns[2 * i + 1] for i in range(agg_dim)
    ]
    return np.concatenate([np.array(agg, dtype=np.float32), cls.numpy()])


@pytest.mark.parametrize("agg_dim", [640, 128])  # 640: the paper's, pads the vocabulary; 128 drops 58 ids
def test_matches_the_representation_computed_by_hand(agg_dim):
    enc = dense_encoder(
        str(SPLADE), pooling="aggretriever", agg_dim=agg_dim, device="cpu", show_progress=False
    )
    assert isinstance(enc, AggretrieverEncoder) and enc.dim == agg_dim + 128
    assert enc.config.normalize is False  # scored by raw inner product, as in the paper
    got = enc.encode_documents(TEXTS)  # both texts in one padded batch
    expected = np.stack([_by_hand(str(SPLADE), t, agg_dim) for t in TEXTS])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(enc.encode_queries(TEXTS), expected, atol=1e-5)  # no heads: sides agree
    assert (got[:, :agg_dim] != 0).all() and np.abs(got[:, :agg_dim]).max() <= 1.0


def test_checkpoint_heads_project_cls_and_weight_terms(tmp_path):
    model_dir = tmp_path / "agg"
    shutil.copytree(SPLADE, model_dir)
    gen = torch.Generator().manual_seed(0)
    term = (torch.randn(1, 128, generator=gen) * 0.1, torch.tensor([1.0]))
    pool_q = (torch.randn(32, 128, generator=gen) * 0.1, torch.randn(32, generator=gen))
    pool_p = (torch.randn(32, 128, generator=gen) * 0.1, torch.randn(32, generator=gen))
    # tevatron's LinearPooler state dicts: tied term weights, untied CLS projections
    torch.save({"linear_q.weight": term[0], "linear_q.bias": term[1]}, model_dir / "term_weight_trans.pt")
    torch.save({"linear_q.weight": pool_q[0], "linear_q.bias": pool_q[1],
                "linear_p.weight": pool_p[0], "linear_p.bias": pool_p[1]}, model_dir / "pooler.pt")  # fmt: skip
    enc = AggretrieverEncoder(str(model_dir), agg_dim=64, device="cpu", show_progress=False)
    assert enc.dim == 64 + 32
    q = np.stack([_by_hand(str(model_dir), t, 64, term, pool_q) for t in TEXTS])
    p = np.stack([_by_hand(str(model_dir), t, 64, term, pool_p) for t in TEXTS])
    np.testing.assert_allclose(enc.encode_queries(TEXTS), q, atol=1e-5)
    np.testing.assert_allclose(enc.encode_documents(TEXTS), p, atol=1e-5)


def test_settings_are_checked():
    with pytest.raises(InvalidInput, match="truncated"):
        dense_encoder(str(SPLADE), pooling="aggretriever", dim=64, device="cpu")
    with pytest.raises(InvalidInput, match="vocabulary"):
        dense_encoder(str(SPLADE), pooling="aggretriever", agg_dim=20000, device="cpu")
    from cascade.retrieval.encoders.dense import DenseEncoder

    with pytest.raises(InvalidInput, match="its own encoder class"):
        DenseEncoder(str(SPLADE), pooling="aggretriever", device="cpu")


def test_a_pipeline_yaml_builds_and_searches_an_aggretriever_index(tmp_path):
    from cascade.eval.presets import resolve_pipeline
    from cascade.indexing.index_set import IndexSet
    from cascade.retrieval.types import Document, Query

    spec_file = tmp_path / "agg.yaml"
    spec_file.write_text(
        "retrievers:\n"
        "  - retriever: dense\n"
        "    depth: 10\n"
        f"    params: {{model: {SPLADE}, encoder_settings: {{pooling: aggretriever, agg_dim: 128}}}}\n"
        "k: 3\n"
    )
    docs = [
        Document("a", TEXTS[0]),
        Document("b", TEXTS[1]),
        Document("c", "protein folding and hydrogen bonds"),
    ]
    pipeline = IndexSet(tmp_path / "idx", corpus=lambda: iter(docs)).pipeline(
        resolve_pipeline(str(spec_file))
    )
    query = "neurons from stem cells"
    hits = pipeline.search([Query("q", query)]).rankings[0]
    enc = AggretrieverEncoder(str(SPLADE), agg_dim=128, device="cpu", show_progress=False)
    scores = enc.encode_documents([d.contents for d in docs]) @ enc.encode_queries([query])[0]
    assert list(hits.doc_ids) == [docs[i].id for i in np.argsort(-scores)]
    np.testing.assert_allclose(hits.scores, np.sort(scores)[::-1], rtol=1e-5)
