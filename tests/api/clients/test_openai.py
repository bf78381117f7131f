"""The real ``openai`` client against ``cascade serve`` on loopback: embeddings (its default
base64 encoding, float, Matryoshka ``dimensions``, usage in the model's tokens) and the model list,
checked against the local :class:`DenseEncoder` on the same tiny checkpoint."""

import numpy as np
import openai
import pytest
from dense_models import tiny_st_dir
from live_server import cascade_serve
from rerank_models import tiny_bert_cross_encoder

from cascade.retrieval.encoders.dense import DenseEncoder

TEXTS = [
    "Stem cells differentiate into many cell types.",
    "A short one.",
    "The quick brown fox jumps over the lazy dog " * 12,  # over the model's 24 tokens: truncated
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    st = tiny_st_dir()
    ce = tiny_bert_cross_encoder(tmp_path_factory.mktemp("ce"))
    with cascade_serve(tmp_path_factory.mktemp("data"), "--embedder", f"tiny={st}",
                       "--reranker", f"ce=cross-encoder:{ce}") as url:  # fmt: skip
        yield url, str(st), str(ce)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def local():
    return DenseEncoder(model=str(tiny_st_dir()), show_progress=False, device="cpu")


def test_embeddings_default_base64_equal_local_encoder(client, local):
    raw = client.embeddings.with_raw_response.create(model="tiny", input=TEXTS)
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)  # the client asked for base64
    out = raw.parse()
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    np.testing.assert_allclose(got, local.encode(TEXTS), atol=1e-6)
    assert [d.index for d in out.data] == [0, 1, 2] and out.model == "tiny"
    tokens = sum(len(ids) for ids in local.tokenize(TEXTS))  # special tokens in, truncated to 24
    assert out.usage.prompt_tokens == out.usage.total_tokens == tokens
    assert tokens < sum(len(t.split()) for t in TEXTS)  # model tokens, not words: the long text is cut


def test_embeddings_float_and_by_checkpoint(client, local, server):
    out = client.embeddings.create(model=server[1], input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(out.data[0].embedding, local.encode(TEXTS[:1])[0], atol=1e-6)
    assert out.usage.prompt_tokens == len(local.tokenize(TEXTS[:1])[0])


def test_dimensions_truncates_and_renormalizes(client, local):
    out = client.embeddings.create(model="tiny", input=TEXTS, dimensions=16)
    got = np.array([d.embedding for d in out.data])
    full = local.encode(TEXTS)[:, :16]
    assert got.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-6)


def test_dimensions_above_width_is_a_clear_4xx(client):
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.embeddings.create(model="tiny", input="x", dimensions=64)
    assert "dimensions=64 is above the width of model 'tiny' (32)" in e.value.message


def test_unknown_model_is_404_naming_the_served(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert "'text-embedding-3-small' is not served" in e.value.message and "tiny" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_models_list_and_retrieve(client, server):
    models = {m.id: m for m in client.models.list()}
    assert {"tiny", "ce"} <= set(models)
    assert models["tiny"].object == "model" and models["tiny"].owned_by == "cascade"
    assert (
        models["tiny"].model_extra["type"] == "embedding" and models["tiny"].model_extra["root"] == server[1]
    )
    assert (
        models["ce"].model_extra["type"] == "reranking"
        and models["ce"].model_extra["family"] == "cross-encoder"
    )
    assert client.models.retrieve("ce").id == "ce"
