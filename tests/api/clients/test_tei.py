"""Text Embeddings Inference's API on ``cascade serve``: ``huggingface_hub.InferenceClient(base_url)``
(feature_extraction, sentence_similarity) and raw HTTP for ``/embed``, ``/embed_sparse`` (the real
SPLADE-tiny checkpoint), ``/rerank`` and ``/info``, checked against the local encoders."""

from pathlib import Path

import httpx
import numpy as np
import pytest
from dense_models import tiny_st_dir
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from live_server import cascade_serve
from rerank_models import tiny_bert_cross_encoder

from cascade.rerank.cross_encoder import CrossEncoderReranker
from cascade.retrieval.encoders.dense import DenseEncoder
from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

SPLADE = Path(__file__).resolve().parents[4] / "shared" / "models" / "splade-tiny"
QUERY = "do stem cells repair neurons"
TEXTS = [
    "Stem cells differentiate into neurons and repair damaged tissue in the brain.",
    "The heart pumps blood through arteries and veins.",
    "Neurons transmit signals; stem cell therapy repairs neurons.",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    if not (SPLADE / "config.json").is_file():
        pytest.skip(f"SPLADE-tiny not found at {SPLADE}")
    return str(tiny_st_dir()), str(tiny_bert_cross_encoder(tmp_path_factory.mktemp("ce")))


@pytest.fixture(scope="module")
def url(tmp_path_factory, models):
    st, ce = models
    with cascade_serve(tmp_path_factory.mktemp("data"), "--embedder", f"tiny={st}", "--sparse-embedder",
                       f"splade={SPLADE}", "--reranker", f"ce=cross-encoder:{ce}") as url:  # fmt: skip
        yield url


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def encoder(models):
    return DenseEncoder(model=models[0], show_progress=False, device="cpu")


def test_inference_client_feature_extraction(url, encoder, models):
    hub = InferenceClient(base_url=url)
    got = hub.feature_extraction(TEXTS[0])
    assert got.shape == (1, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, encoder.encode(TEXTS[:1]), atol=1e-6)
    np.testing.assert_allclose(hub.feature_extraction(TEXTS[1], prompt_name="query"),
                               encoder.encode_queries(TEXTS[1:2]), atol=1e-6)  # fmt: skip
    raw = hub.feature_extraction(TEXTS[0], normalize=False)  # the pooled vector before the model's Normalize
    unnormalized = DenseEncoder(model=models[0], show_progress=False, device="cpu", normalize=False)
    np.testing.assert_allclose(raw, unnormalized.encode(TEXTS[:1]), atol=1e-5)
    assert np.linalg.norm(raw) > 1.5
    np.testing.assert_allclose(hub.feature_extraction(TEXTS[0], dimensions=8), encoder.encode(TEXTS[:1])[:, :8]
                               / np.linalg.norm(encoder.encode(TEXTS[:1])[:, :8]), atol=1e-6)  # fmt: skip


def test_inference_client_sentence_similarity(url, encoder):
    got = InferenceClient(base_url=url).sentence_similarity(QUERY, other_sentences=TEXTS)
    v = encoder.encode([QUERY, *TEXTS])
    np.testing.assert_allclose(got, v[1:] @ v[0], atol=1e-5)


def test_text_classification_is_a_clear_error(url):
    with pytest.raises(HfHubHTTPError) as e:
        InferenceClient(base_url=url).text_classification("stem cells")
    assert (
        e.value.response.status_code == 422 and "text classification is not served" in e.value.response.text
    )


def test_embed_batch_and_errors(http, encoder):
    r = http.post("/embed", json={"inputs": TEXTS})
    np.testing.assert_allclose(r.json(), encoder.encode(TEXTS), atol=1e-6)
    r = http.post("/embed", json={"inputs": "x", "model": "nope"})
    assert r.status_code == 404 and "'nope' is not served" in r.text and "tiny" in r.text
    r = http.post("/embed", json={"inputs": "x", "dimensions": 33})
    assert r.status_code == 422 and "dimensions=33 is above the width of model 'tiny' (32)" in r.text
    r = http.post("/embed", json={"inputs": "word " * 40, "truncate": False})
    assert r.status_code == 422 and "above the model's limit of 24" in r.text
    assert http.post("/embed", json={"inputs": "word " * 40}).status_code == 200  # cut by default


def test_embed_sparse_equals_splade_encoder(http):
    r = http.post("/embed_sparse", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    local = SpladeEncoder(SpladeConfig(model=str(SPLADE), device="cpu")).encode_documents(TEXTS)
    for row, got in zip(local, r.json(), strict=True):
        assert [t["index"] for t in got] == row.indices.tolist() and len(got) > 10
        np.testing.assert_allclose([t["value"] for t in got], row.data, atol=1e-4)
    one = http.post("/embed_sparse", json={"inputs": TEXTS[0], "model": "splade"}).json()
    assert one == r.json()[:1]


def test_rerank_equals_local_cross_encoder(http, models):
    r = http.post("/rerank", json={"query": QUERY, "texts": TEXTS, "return_text": True})
    assert r.status_code == 200, r.text
    scores = CrossEncoderReranker(models[1], device="cpu").score_pairs([QUERY] * 3, TEXTS)
    order = sorted(range(3), key=lambda i: -scores[i])
    assert [x["index"] for x in r.json()] == order
    np.testing.assert_allclose([x["score"] for x in r.json()], scores[order], atol=1e-6)
    assert [x["text"] for x in r.json()] == [TEXTS[i] for i in order]
    assert "text" not in http.post("/rerank", json={"query": QUERY, "texts": TEXTS}).json()[0]


def test_info_describes_the_default_embedder(http, models):
    info = http.get("/info").json()
    assert info["model_id"] == models[0] and info["model_type"] == {"embedding": {"pooling": "cls"}}
    assert info["max_input_length"] == 24


def test_bad_sparse_embedder_flag_is_one_line_exit_2(capsys, tmp_path):
    from cascade.api.cli import main

    assert (
        main(["serve", "--data-dir", str(tmp_path), "--sparse-embedder", f"splade={tmp_path}/missing"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cascade: error: invalid settings: Value error, model alias 'splade': checkpoint "
                   f"'{tmp_path}/missing' is not a directory"]  # fmt: skip
