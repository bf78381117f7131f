"""The dense encoder: parity with sentence-transformers, pooling, batching, chunking."""

from __future__ import annotations

import functools

import numpy as np
import pytest

# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from dense_models import MINILM, TEXTS, tiny_bert_dir, tiny_st_dir  # noqa: E402

from cascade.retrieval.encoders.dense import DenseEncoder, EncoderConfig  # noqa: E402
from cascade.retrieval.encoders.late_chunking import ChunkSpec, chunk_embeddings, token_spans  # noqa: E402
from cascade.retrieval.errors import InvalidInput, NotFound  # noqa: E402
from cascade.retrieval.models import resolve_model_path  # noqa: E402

torch.set_num_threads(2)


@functools.cache
def _hf(model_dir):
    return transformers.AutoTokenizer.from_pretrained(model_dir), transformers.AutoModel.from_pretrained(
        model_dir
    ).eval()


def _reference(model_dir, texts, pooling, prompt="", max_length=128, layers=None):
    """Each text alone through the HF model (no padding), pooled by hand."""
    tok, model = _hf(model_dir)
    out = []
    for text in texts:
        enc = tok(prompt + text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            res = model(**enc, output_hidden_states=True)
        h = (res.hidden_states[layers] if layers else res.last_hidden_state)[0].numpy()
        out.append({"cls": h[0], "mean": h.mean(0), "max": h.max(0), "lasttoken": h[-1]}[pooling])
    return np.stack(out)


def _normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- parity -----------------------------------------------------------------------------


@pytest.mark.slow  # the real MiniLM, through both encoders
def test_minilm_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    texts = [t for t in TEXTS if t] * 2 + ["word " * 300]  # the last is truncated at 256 tokens
    ours = DenseEncoder(MINILM, device="cpu", show_progress=False, max_tokens=1024)
    assert ours.config.pooling == "mean" and ours.config.normalize and ours.max_length == 256
    ref = st.SentenceTransformer(resolve_model_path(MINILM), device="cpu")
    a = ours.encode_documents(texts)
    b = ref.encode(texts, batch_size=7, convert_to_numpy=True)
    assert a.shape == (len(texts), 384)
    assert np.abs(a - b).max() <= 1e-5


def test_st_dir_settings_and_prompts_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    path = str(tiny_st_dir())
    cfg = EncoderConfig.resolve(path)
    assert (cfg.pooling, cfg.normalize, cfg.max_length) == ("cls", True, 24)
    assert (cfg.query_prompt, cfg.document_prompt) == ("query: ", "passage: ")
    ours = DenseEncoder(path, device="cpu", show_progress=False, max_tokens=64)
    ref = st.SentenceTransformer(path, device="cpu")
    np.testing.assert_allclose(ours.encode_queries(TEXTS), ref.encode_query(TEXTS), atol=1e-5)
    # sentence-transformers 6 adds an empty "document" prompt that shadows "passage" in its
    # encode_document; we keep the model's declared document prompt, as ST 5 did
    np.testing.assert_allclose(
        ours.encode_documents(TEXTS), ref.encode(TEXTS, prompt_name="passage"), atol=1e-5
    )


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "lasttoken"])
def test_pooling_with_padding_equals_each_text_alone(pooling):
    path = str(tiny_bert_dir())
    enc = DenseEncoder(
        path, device="cpu", pooling=pooling, normalize=False, show_progress=False, max_tokens=40
    )
    got = enc.encode(TEXTS, prompt="passage: ")
    np.testing.assert_allclose(got, _reference(path, TEXTS, pooling, "passage: "), atol=1e-5)


def test_matryoshka_dim_and_layers():
    path = str(tiny_bert_dir())
    full = DenseEncoder(path, device="cpu", normalize=False, show_progress=False).encode(TEXTS)
    short = DenseEncoder(path, device="cpu", dim=8, show_progress=False).encode(TEXTS)
    np.testing.assert_allclose(short, _normalized(full[:, :8]), atol=1e-6)
    one_layer = DenseEncoder(path, device="cpu", layers=1, normalize=False, show_progress=False).encode(TEXTS)
    np.testing.assert_allclose(one_layer, _reference(path, TEXTS, "mean", layers=1), atol=1e-5)
    with pytest.raises(InvalidInput, match="layers"):
        DenseEncoder(path, device="cpu", layers=5)
    with pytest.raises(InvalidInput, match="hidden size"):
        DenseEncoder(path, device="cpu", dim=64)


def test_bad_settings_and_unknown_model(monkeypatch):
    with pytest.raises(InvalidInput, match="pooling"):
        EncoderConfig.resolve(str(tiny_bert_dir()), pooling="median")
    with pytest.raises(InvalidInput, match="prompt preset"):
        EncoderConfig.resolve(str(tiny_bert_dir()), prompts="nope")
    with pytest.raises(InvalidInput, match="list of strings"):
        DenseEncoder(str(tiny_bert_dir()), device="cpu").encode("one string")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no 80 s of retries
    with pytest.raises(NotFound, match="no-such-org/no-such-model"):
        DenseEncoder("no-such-org/no-such-model", device="cpu")


# --- chunking ---------------------------------------------------------------------------


def test_token_spans():
    assert token_spans(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert token_spans(3, 4, 1) == [(0, 3)]
    assert token_spans(0, 4, 0) == [(0, 0)]
    with pytest.raises(InvalidInput):
        ChunkSpec.parse({"method": "late", "max_tokens": 4, "overlap": 4})


def test_late_chunking_pools_token_states_of_the_whole_document():
    path = str(tiny_bert_dir())
    enc = DenseEncoder(path, device="cpu", show_progress=False, document_prompt="passage: ")
    text = TEXTS[2]
    vectors, counts = chunk_embeddings(
        enc, [text, TEXTS[1]], ChunkSpec(method="late", max_tokens=8, overlap=2)
    )
    # reference: one pass over [CLS] prompt text [SEP], mean over each window of text tokens
    tok = enc.tokenizer
    p_ids = tok("passage: ", add_special_tokens=False)["input_ids"]
    t_ids = tok(text, add_special_tokens=False)["input_ids"]
    states = enc.token_states([[101, *p_ids, *t_ids, 102]])[0][1 + len(p_ids) : -1]
    spans = token_spans(len(t_ids), 8, 2)
    assert counts.tolist() == [len(spans), 1]
    expected = _normalized(np.stack([states[a:b].mean(0) for a, b in spans]))
    np.testing.assert_allclose(vectors[: len(spans)], expected, atol=1e-5)


def test_late_chunking_of_documents_longer_than_the_model():
    path = str(tiny_bert_dir())
    enc = DenseEncoder(path, device="cpu", show_progress=False, max_length=16)
    long_text = " ".join(f"word{i}" for i in range(60))
    vectors, counts = chunk_embeddings(
        enc, [long_text, ""], ChunkSpec(method="late", max_tokens=10, overlap=0)
    )
    n_tokens = len(enc.tokenizer(long_text, add_special_tokens=False)["input_ids"])
    assert counts.tolist() == [len(token_spans(n_tokens, 10, 0)), 1]
    assert vectors.shape == (counts.sum(), 32) and np.all(np.isfinite(vectors))


def test_naive_chunking_encodes_each_window_alone():
    path = str(tiny_bert_dir())
    enc = DenseEncoder(path, device="cpu", show_progress=False)
    text = "alpha beta gamma delta epsilon zeta eta theta"
    vectors, counts = chunk_embeddings(enc, [text], ChunkSpec(method="naive", max_tokens=3, overlap=0))
    # each word is one token in the MiniLM vocab: windows of three words
    expected = enc.encode_documents(["alpha beta gamma", "delta epsilon zeta", "eta theta"])
    assert counts.tolist() == [3]
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
