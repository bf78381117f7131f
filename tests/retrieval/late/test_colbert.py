"""ColBERT on a tiny random BERT: encoder layouts, markers, [MASK] expansion, punctuation;
the PLAID index and the MaxSim reranker driven from text."""

import json
import logging
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizer

from cascade.eval.presets import resolve_pipeline
from cascade.rerank.colbert import ColBERTReranker
from cascade.rerank.registry import RERANKERS
from cascade.retrieval.encoders.colbert import ColBERTEncoder, detect_format, random_orthonormal
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.late.maxsim import MaxSim
from cascade.retrieval.late.plaid import PLAIDIndex, SearchParams
from cascade.retrieval.types import Document, Query

# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")

WORDS = "the a stem cell cells grow in bone marrow protein gene virus hello world quick brown fox".split()
VOCAB = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,;:!?()-'\"", *WORDS]
QLEN, DLEN, DIM = 8, 12, 16


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizer.from_pretrained(str(root))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    bert = BertModel(cfg).eval()
    w = torch.randn(DIM, 32)
    b = torch.randn(DIM)
    return root, tok, bert, cfg, w, b


def _colbert_dir(parts):
    root, tok, bert, cfg, w, _ = parts
    d = root / "colbert"
    d.mkdir(exist_ok=True)
    cfg.architectures = ["HF_ColBERT"]
    cfg.save_pretrained(d)
    tok.save_pretrained(d)
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    save_file({**state, "linear.weight": w.contiguous()}, str(d / "model.safetensors"))
    (d / "artifact.metadata").write_text(json.dumps({
        "query_maxlen": QLEN, "doc_maxlen": DLEN, "mask_punctuation": True, "attend_to_mask_tokens": False,
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "dim": DIM,
    }))  # fmt: skip
    return d


def _pylate_dir(parts):
    root, tok, bert, _, w, b = parts
    d = root / "pylate"
    bert.save_pretrained(d)
    tok.save_pretrained(d)
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]))  # fmt: skip
    (d / "1_Dense").mkdir(exist_ok=True)
    (d / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": DIM, "bias": True, "activation_function": "torch.nn.modules.activation.Tanh"}
    ))  # fmt: skip
    save_file(
        {"linear.weight": w.contiguous(), "linear.bias": b.contiguous()},
        str(d / "1_Dense" / "model.safetensors"),
    )
    (d / "config_sentence_transformers.json").write_text(json.dumps({
        "query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": QLEN,
        "document_length": DLEN, "attend_to_expansion_tokens": True, "do_query_expansion": True,
        "skiplist_words": [",", "."],
    }))  # fmt: skip
    return d


def _tokens_dir(parts):
    root, tok, bert, *_ = parts
    d = root / "tokens"
    bert.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _reference(bert, ids, attention, layers):
    """The checkpoint's math done by hand: BERT, projection(s), L2 normalization."""
    with torch.no_grad():
        h = bert(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])).last_hidden_state[0]
        for w, b, act in layers:
            h = torch.nn.functional.linear(h, w, b)
            h = torch.tanh(h) if act == "tanh" else h
        return torch.nn.functional.normalize(h, dim=-1).numpy()


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_formats_are_detected(parts):
    assert detect_format(_colbert_dir(parts)) == "colbert"
    assert detect_format(_pylate_dir(parts)) == "pylate"
    assert detect_format(_tokens_dir(parts)) == "tokens"


def test_colbert_query_has_marker_and_mask_expansion(parts):
    _, tok, bert, _, w, _ = parts
    enc = ColBERTEncoder(str(_colbert_dir(parts)), device="cpu")
    assert (enc.format, enc.dim, enc.config.query_maxlen) == ("colbert", DIM, QLEN)
    got = enc.encode_queries(["stem cell"])[0]
    ids = [4, 1, *_ids(tok, "stem cell"), 5]
    ids = ids + [6] * (QLEN - len(ids))  # [MASK] pads, not attended to
    attention = [1] * 5 + [0] * (QLEN - 5)
    np.testing.assert_allclose(got, _reference(bert, ids, attention, [(w, None, None)]), atol=1e-5)


def test_colbert_document_skips_punctuation(parts):
    _, tok, bert, _, w, _ = parts
    enc = ColBERTEncoder(str(_colbert_dir(parts)), device="cpu")
    got = enc.encode_documents(["hello , world ."])[0]
    ids = [4, 2, *_ids(tok, "hello , world ."), 5]
    ref = _reference(bert, ids, [1] * len(ids), [(w, None, None)])
    keep = [i for i, t in enumerate(ids) if t not in tok.convert_tokens_to_ids([",", "."])]
    assert got.shape == (5, DIM)
    np.testing.assert_allclose(got, ref[keep], atol=1e-5)


def test_long_query_truncated_with_warning(parts, caplog):
    enc = ColBERTEncoder(str(_colbert_dir(parts)), device="cpu")
    with caplog.at_level(logging.WARNING):
        q = enc.encode_queries([" ".join(WORDS)])
    assert "truncated" in caplog.text
    assert len(q[0]) == QLEN


def test_documents_cut_at_doc_maxlen_and_batches_restore_order(parts):
    enc = ColBERTEncoder(str(_tokens_dir(parts)), device="cpu", doc_maxlen=DLEN, batch_size=2)
    texts = ["the fox", " ".join(WORDS), "bone marrow cells grow", "a", "quick brown fox in the gene"]
    together = enc.encode_documents(texts)
    assert together.lengths.tolist() == [4, DLEN, 6, 3, 8]
    for i, t in enumerate(texts):  # length-sorted batches give the same vectors, in input order
        np.testing.assert_allclose(together[i], enc.encode_documents([t])[0], atol=1e-5)


def test_pylate_dense_bias_activation_and_attended_expansion(parts):
    _, tok, bert, _, w, b = parts
    enc = ColBERTEncoder(str(_pylate_dir(parts)), device="cpu")
    assert enc.format == "pylate" and enc.config.attend_to_expansion
    got = enc.encode_queries(["bone marrow"])[0]
    ids = [4, 1, *_ids(tok, "bone marrow"), 5]
    ids = ids + [6] * (QLEN - len(ids))
    np.testing.assert_allclose(got, _reference(bert, ids, [1] * QLEN, [(w, b, "tanh")]), atol=1e-5)
    doc = enc.encode_documents(["hello ; world ."])[0]  # skiplist is [",", "."]: ";" stays
    assert len(doc) == 6


def test_tokens_format_with_seeded_projection(parts):
    _, tok, bert, *_ = parts
    enc = ColBERTEncoder(str(_tokens_dir(parts)), device="cpu", projection_dim=8, projection_seed=3)
    got = enc.encode_queries(["stem cell"])[0]
    proj = torch.from_numpy(random_orthonormal(32, 8, 3))
    ids = [4, *_ids(tok, "stem cell"), 5]
    np.testing.assert_allclose(got, _reference(bert, ids, [1] * 4, [(proj, None, None)]), atol=1e-5)
    p = random_orthonormal(32, 8, 3)
    np.testing.assert_allclose(p @ p.T, np.eye(8), atol=1e-5)
    assert not np.allclose(p, random_orthonormal(32, 8, 4))


def test_bad_settings(parts):
    with pytest.raises(InvalidInput, match="projection_dim"):
        ColBERTEncoder(str(_colbert_dir(parts)), device="cpu", projection_dim=8)
    with pytest.raises(InvalidInput, match="marker"):
        ColBERTEncoder(str(_tokens_dir(parts)), device="cpu", query_marker="[Q]")


# -- the index and the reranker from text, through the encoder ------------------------------

DOCS = [
    Document("a", "stem cells grow in bone marrow", "stem"),
    Document("b", "the quick brown fox"),
    Document("c", "a virus protein gene"),
    Document("d", "hello world , hello fox"),
    Document("e", "bone marrow protein"),
    Document("f", "cells grow quick"),
]
EXHAUSTIVE = asdict(SearchParams.exhaustive())


def test_index_from_text_search_update_save_load(parts, tmp_path):
    index = PLAIDIndex.build(DOCS, model=str(_tokens_dir(parts)), nbits=4, num_centroids=16, device="cpu",
                             show_progress=False)  # fmt: skip
    queries = [Query("q1", "bone marrow"), Query("q2", "quick brown fox")]
    got = index.search(queries, k=3, **EXHAUSTIVE)
    ref_s, ref_i = MaxSim(index.decompressed()).search(
        index.encoder.encode_queries([q.text for q in queries]), 3
    )
    for r, s, i in zip(got, ref_s, ref_i, strict=True):
        assert list(r.doc_ids) == list(index.doc_ids[i])
        np.testing.assert_allclose(r.scores, s, atol=1e-4)
    index.add([Document("g", "gene virus virus gene")])
    assert index.search([Query("q", "gene virus virus gene")], k=1, **EXHAUSTIVE)[0].doc_ids == ("g",)
    index.delete(["b"])
    assert "b" not in index.search(queries, k=5, **EXHAUSTIVE)[1].doc_ids
    index.save(tmp_path / "colbert")
    loaded = PLAIDIndex.load(tmp_path / "colbert", device="cpu")
    assert loaded.search(queries, k=5, **EXHAUSTIVE) == index.search(queries, k=5, **EXHAUSTIVE)


def test_reranker_scores_are_exact_maxsim(parts):
    rr = ColBERTReranker(str(_colbert_dir(parts)), device="cpu")
    scores = rr.score("bone marrow cells", DOCS[:3])
    q = rr.encoder.encode_queries(["bone marrow cells"])[0]
    d = rr.encoder.encode_documents([x.contents for x in DOCS[:3]])
    np.testing.assert_allclose(scores, [(q @ d[i].T).max(axis=1).sum() for i in range(3)], rtol=1e-5)
    ranked = rr.rerank(Query("q", "bone marrow cells"), DOCS[:3])
    assert list(ranked.doc_ids) == [DOCS[i].id for i in np.argsort(-scores)]


def test_reranker_document_cache(parts):
    plain = ColBERTReranker(str(_colbert_dir(parts)), device="cpu")
    cached = ColBERTReranker(str(_colbert_dir(parts)), device="cpu", doc_cache=3)
    queries = ["bone marrow cells", "quick brown fox"]
    groups = [DOCS[:3], [DOCS[2], DOCS[0], DOCS[3]]]
    want = plain.score_many(queries, groups)
    for got, expected in zip(cached.score_many(queries, groups), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert [k[0] for k in cached._cache] == ["b", "c", "d"]  # four seen, the least recent dropped
    encoded = []
    real = cached.encoder.encode_documents
    cached.encoder.encode_documents = lambda texts: encoded.extend(texts) or real(texts)
    again = cached.score_many(queries[:1], [[DOCS[2], DOCS[1]]])  # both still cached: nothing encoded
    np.testing.assert_allclose(again[0], want[0][[2, 1]], rtol=1e-5)
    assert encoded == []
    cached.score_many(queries[:1], [[DOCS[4], DOCS[2]]])  # one new document, encoded alone
    assert encoded == [DOCS[4].contents] and len(cached._cache) == 3
    with pytest.raises(InvalidInput, match="doc_cache"):
        ColBERTReranker(str(_colbert_dir(parts)), device="cpu", doc_cache=-1)


def test_reranker_scores_in_bounded_passes(parts, monkeypatch):
    import cascade.rerank.colbert as colbert

    rr = ColBERTReranker(str(_colbert_dir(parts)), device="cpu")
    queries, groups = ["bone marrow cells", "quick brown fox", "virus"], [DOCS[:3], DOCS[3:], DOCS[1:2]]
    whole = rr.score_many(queries, groups)
    monkeypatch.setattr(colbert, "MAX_DOCS_PER_PASS", 2)  # passes: [q0], [q1], [q2]
    for got, want in zip(rr.score_many(queries, groups), whole, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_colbert_preset_is_valid():
    spec = resolve_pipeline("colbert")
    assert spec.retrievers[0].retriever == "colbert"
    assert RERANKERS.get("colbert") is ColBERTReranker
