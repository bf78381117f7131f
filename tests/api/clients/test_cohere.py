"""The real ``cohere`` clients against ``cascade serve`` on loopback: v1 ``Client.rerank`` and v2
``ClientV2.rerank`` / ``ClientV2.embed``, checked against the local cross-encoder and dense encoder
on the same tiny checkpoints (float, int8 and ubinary computed here from the local vectors)."""

import cohere
import numpy as np
import pytest
from cohere.errors import NotFoundError, UnprocessableEntityError
from dense_models import tiny_st_dir
from live_server import cascade_serve
from rerank_models import tiny_bert_cross_encoder

from cascade.api.cli import main
from cascade.rerank.cross_encoder import CrossEncoderReranker
from cascade.retrieval.encoders.dense import DenseEncoder

QUERY = "do stem cells repair neurons"
DOCS = [
    "Stem cells differentiate into neurons and repair damaged tissue in the brain.",
    "The heart pumps blood through arteries and veins.",
    "Neurons transmit signals; stem cell therapy repairs neurons.",
    "Vitamin D deficiency is associated with fractures in older adults.",
    "Blood carries oxygen.",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return str(tiny_st_dir()), str(tiny_bert_cross_encoder(tmp_path_factory.mktemp("ce")))


@pytest.fixture(scope="module")
def url(tmp_path_factory, models):
    st, ce = models
    with cascade_serve(tmp_path_factory.mktemp("data"), "--embedder", f"tiny={st}",
                       "--reranker", f"ce=cross-encoder:{ce}") as url:  # fmt: skip
        yield url


@pytest.fixture(scope="module")
def v1(url):
    return cohere.Client(api_key="unused", base_url=url, timeout=60)


@pytest.fixture(scope="module")
def v2(url):
    return cohere.ClientV2(api_key="unused", base_url=url, timeout=60)


@pytest.fixture(scope="module")
def reranker(models):
    return CrossEncoderReranker(models[1], device="cpu")


@pytest.fixture(scope="module")
def encoder(models):
    return DenseEncoder(model=models[0], show_progress=False, device="cpu")


def expected_ranking(reranker, docs, top_n=None):
    scores = reranker.score_pairs([QUERY] * len(docs), docs)
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[:top_n]
    return order, scores


def test_v1_rerank_equals_local_cross_encoder(v1, reranker):
    res = v1.rerank(model="ce", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    order, scores = expected_ranking(reranker, DOCS, 3)
    assert [r.index for r in res.results] == order
    np.testing.assert_allclose([r.relevance_score for r in res.results], scores[order], atol=1e-6)
    assert [r.document.text for r in res.results] == [DOCS[i] for i in order]
    # by checkpoint, documents as objects, no documents back
    res = v1.rerank(model=reranker.model_id, query=QUERY, documents=[{"text": d} for d in DOCS])
    assert [r.index for r in res.results] == expected_ranking(reranker, DOCS)[0]
    assert all(r.document is None for r in res.results)


def test_v2_rerank_with_max_tokens_per_doc(v2, reranker):
    res = v2.rerank(model="ce", query=QUERY, documents=DOCS, top_n=4, max_tokens_per_doc=3)
    assert res.meta.api_version.version == "2"
    tok = reranker.tokenizer  # the reranker's own tokens, cut at the third token's end
    cut = [
        d[: tok(d, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"][2][1]]
        for d in DOCS
    ]
    assert cut[0] == "Stem cells differentiate" and cut[4] == "Blood carries oxygen"
    order, scores = expected_ranking(reranker, cut, 4)
    assert [r.index for r in res.results] == order
    np.testing.assert_allclose([r.relevance_score for r in res.results], scores[order], atol=1e-6)
    full = v2.rerank(model="ce", query=QUERY, documents=DOCS)
    np.testing.assert_allclose(sorted(r.relevance_score for r in full.results),
                               sorted(reranker.score_pairs([QUERY] * 5, DOCS)), atol=1e-6)  # fmt: skip


def int8(v):
    return np.rint(v * 127 / np.abs(v).max(axis=1, keepdims=True)).astype(int)


def test_v2_embed_float_int8_ubinary(v2, encoder):
    res = v2.embed(
        model="tiny", texts=DOCS[:3], input_type="search_query", embedding_types=["float", "int8", "ubinary"]
    )
    queries = encoder.encode_queries(DOCS[:3])  # the model's query prompt, "query: "
    np.testing.assert_allclose(res.embeddings.float_, queries, atol=1e-6)
    assert res.embeddings.int8 == int8(queries).tolist()
    assert np.abs(res.embeddings.int8).max() == 127
    assert res.embeddings.ubinary == np.packbits(queries > 0, axis=1).tolist()
    assert len(res.embeddings.ubinary[0]) == 32 // 8 and res.texts == DOCS[:3]
    assert res.meta.billed_units.input_tokens == sum(map(len, encoder.tokenize(DOCS[:3], "query: ")))
    docs = v2.embed(model="tiny", texts=DOCS[:3], input_type="search_document", embedding_types=["float"])
    np.testing.assert_allclose(docs.embeddings.float_, encoder.encode_documents(DOCS[:3]), atol=1e-6)
    assert np.abs(np.array(docs.embeddings.float_) - queries).max() > 1e-4  # another prompt: other vectors
    clustering = v2.embed(model="tiny", texts=DOCS[:1], input_type="clustering", embedding_types=["float"])
    np.testing.assert_allclose(clustering.embeddings.float_, encoder.encode_documents(DOCS[:1]), atol=1e-6)


def test_v2_embed_output_dimension(v2, encoder):
    res = v2.embed(model="tiny", texts=DOCS[:2], input_type="search_document", embedding_types=["float"],
                   output_dimension=16)  # fmt: skip
    full = encoder.encode_documents(DOCS[:2])[:, :16]
    np.testing.assert_allclose(
        res.embeddings.float_, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-6
    )
    with pytest.raises(UnprocessableEntityError) as e:
        v2.embed(
            model="tiny",
            texts=["x"],
            input_type="search_query",
            embedding_types=["float"],
            output_dimension=33,
        )
    assert "dimensions=33 is above the width" in str(e.value.body)


def test_unknown_model_is_404_naming_the_served(v1, v2):
    with pytest.raises(NotFoundError) as e:
        v2.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert "'rerank-v3.5' is not served" in str(e.value.body) and "ce (" in str(e.value.body)
    with pytest.raises(NotFoundError) as e:
        v2.embed(model="embed-v4.0", texts=["x"], input_type="search_query", embedding_types=["float"])
    assert "tiny" in str(e.value.body)
    with pytest.raises(NotFoundError):
        v1.rerank(model="rerank-english-v2.0", query=QUERY, documents=DOCS)


def test_bad_reranker_flag_is_one_line_exit_2(capsys):
    from cascade.rerank.registry import RERANKERS

    assert {"cross-encoder", "monot5", "listwise"} <= set(RERANKERS.names())
    assert main(["serve", "--reranker", "ce=cross-encoder"]) == 2
    assert main(["serve", "--reranker", "ce=nope:/tmp"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "cascade: error: --reranker expects ALIAS=FAMILY:CHECKPOINT (e.g. ce=cross-encoder:/models/ce), "
        "got 'ce=cross-encoder'",
        "cascade: error: --reranker ce=nope:/tmp: unknown reranker family 'nope'; families: "
        + ", ".join(RERANKERS.names()),
    ]
