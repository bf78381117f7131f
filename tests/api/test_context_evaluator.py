"""``/v1/context`` with CRAG's retrieval evaluator, over real HTTP: a tiny cross-encoder grades
the passages, those under the lower threshold are dropped, and the confidence is high, ambiguous
or low as the thresholds say. The expected scores come from transformers directly."""

import httpx
import pytest
from api_helpers import serve
from collection_data import make_docs
from rerank_models import tiny_bert_cross_encoder

from cascade.api.app import create_app
from cascade.api.settings import Settings

QUERY = "stem cell heart w1 w2 w3 w4"


def doc_json(d):
    return {"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("crag")
    model = tiny_bert_cross_encoder(root / "ce", activation="torch.nn.modules.linear.Identity", seed=3)
    settings = Settings(data_dir=root / "data", background_compaction=False,
                        rerankers={"ce": {"family": "cross-encoder", "checkpoint": str(model)}})  # fmt: skip
    # the expected scores are transformers' at fp32: the served model's dtype auto resolves as
    # on a CPU without bf16 instructions, for the whole module (the server outlives one test)
    from cascade.retrieval import models

    with (pytest.MonkeyPatch.context() as mp, serve(create_app(settings)) as url,
          httpx.Client(base_url=url, timeout=120) as client):  # fmt: skip
        mp.setattr(models, "cpu_bf16_flags", lambda: ())
        r = client.post(
            "/v1/collections", json={"name": "kb", "pipeline": "bm25", "chunking": {"max_tokens": 512}}
        )
        assert r.status_code == 201, r.text
        r = client.post(
            "/v1/collections/kb/documents", json={"documents": [doc_json(d) for d in make_docs(30)]}
        )
        assert r.status_code == 200, r.text
        yield client, model


def reference_scores(model, passages) -> dict[str, float]:
    """The cross-encoder's logit for (query, title + text), straight from transformers."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(model)
    net = BertForSequenceClassification.from_pretrained(model).eval()
    texts = [f"{p['title']} {p['text']}" if p["title"] else p["text"] for p in passages]
    batch = tok([QUERY] * len(texts), texts, padding=True, truncation="longest_first", max_length=512,
                return_tensors="pt")  # fmt: skip
    with torch.inference_mode():
        logits = net(**batch).logits[:, 0]
    return {p["id"]: float(s) for p, s in zip(passages, logits, strict=True)}


def context(client, **extra):
    body = {"collection": "kb", "query": QUERY, "k": 10, "max_tokens": 100_000, **extra}
    r = client.post("/v1/context", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_kept_passages_and_confidence(server):
    client, model = server
    plain = context(client)
    assert plain["confidence"] is None and all(p["usefulness"] is None for p in plain["passages"])
    passages = plain["passages"]
    assert len(passages) == 10
    scores = reference_scores(model, passages)
    ranked = sorted(scores.values())
    assert ranked[-1] - ranked[0] > 1e-3  # the tiny model tells the passages apart
    lower = (ranked[3] + ranked[4]) / 2  # keeps the six best
    top = ranked[-1]
    expected = [p["id"] for p in passages if scores[p["id"]] >= lower]  # in search order
    assert len(expected) == 6
    cases = {
        "high": (lower, (ranked[-2] + top) / 2),
        "ambiguous": (lower, top + 1.0),
        "low": (top + 0.5, top + 1.0),
    }
    for confidence, (low, up) in cases.items():
        out = context(client, evaluator={"reranker": "ce", "lower": low, "upper": up})
        assert out["confidence"] == confidence
        kept = [p["id"] for p in out["passages"]]
        assert kept == ([] if confidence == "low" else expected)
        assert out["dropped_not_useful"] == 10 - len(kept)
        assert [p["marker"] for p in out["passages"]] == list(range(1, len(kept) + 1))
        for p in out["passages"]:
            assert p["usefulness"] == pytest.approx(scores[p["id"]], abs=1e-4)
        if confidence == "low":
            assert out["context"] == "" and out["tokens"] == 0


def test_the_pipeline_reranker_is_the_default_evaluator(server):
    client, model = server
    spec = {"retrievers": [{"retriever": "bm25", "depth": 10}], "k": 10,
            "rerankers": [{"reranker": "cross-encoder", "depth": 10, "params": {"model": str(model)}}]}  # fmt: skip
    plain = context(client, pipeline=spec)
    scores = reference_scores(model, plain["passages"])
    best = max(scores.values())
    out = context(client, pipeline=spec, evaluator={"lower": best - 1e-3, "upper": best - 1e-3})
    assert out["confidence"] == "high" and [p["id"] for p in out["passages"]] == [max(scores, key=scores.get)]


@pytest.mark.parametrize(
    ("evaluator", "status", "message"),
    [
        ({"reranker": "ce", "lower": 2.0, "upper": 1.0}, 422, "must not exceed upper"),
        ({"reranker": "ce", "lower": 0.0}, 422, "upper"),
        ({"reranker": "ce", "lower": 0.0, "upper": "high"}, 422, "upper"),
        ({"reranker": "ce", "lower": 0.0, "upper": 1.0, "threshold": 1}, 422, "threshold"),
        ({"reranker": "nope", "lower": 0.0, "upper": 1.0}, 404, "'nope' is not served"),
    ],
)
def test_bad_evaluator(server, evaluator, status, message):
    client, _ = server
    r = client.post("/v1/context", json={"collection": "kb", "query": QUERY, "evaluator": evaluator})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"], r.json()
