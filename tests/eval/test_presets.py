"""Presets are data, and one resolver answers every surface the same way."""

import json

import pytest
from fastapi.testclient import TestClient

from cascade.api.app import create_app
from cascade.api.settings import Settings
from cascade.eval.presets import PRESET_DIR, preset_names, presets, resolve_pipeline
from cascade.indexing.index_set import IndexSet
from cascade.rerank.registry import RERANKERS, build_rerankers
from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.pipeline import Pipeline, PipelineSpec
from cascade.retrieval.registry import RETRIEVERS
from cascade.retrieval.types import Document, Query


def test_every_preset_file_is_a_valid_spec_of_registered_families():
    assert set(preset_names()) == {p.stem for p in PRESET_DIR.glob("*.yaml")}
    assert {"bm25", "dense", "splade", "slim", "colbert", "hybrid"} <= set(preset_names())
    for name in preset_names():
        spec = resolve_pipeline(name)
        assert spec.name == name
        assert all(s.retriever in RETRIEVERS for s in spec.retrievers)
        assert all(s.reranker in RERANKERS for s in spec.rerankers)
    hybrid = resolve_pipeline("hybrid")
    assert [s.retriever for s in hybrid.retrievers] == ["bm25", "dense"] and hybrid.fusion.method == "minmax"


def test_files_mappings_and_specs_resolve_alike(tmp_path):
    data = {"retrievers": [{"retriever": "bm25", "depth": 50}], "k": 20}
    (tmp_path / "p.json").write_text(json.dumps(data))
    (tmp_path / "p.yaml").write_text("retrievers:\n  - {retriever: bm25, depth: 50}\nk: 20\n")
    from_json, from_yaml = resolve_pipeline(str(tmp_path / "p.json")), resolve_pipeline(str(tmp_path / "p.yaml"))
    from_map = resolve_pipeline(data)
    assert from_json == from_yaml and from_json.name == "p" and from_map.name == "custom"
    assert from_json.model_dump(exclude={"name"}) == from_map.model_dump(exclude={"name"})
    assert resolve_pipeline(None, default=from_map) is from_map
    with pytest.raises(NotFound, match="unknown pipeline preset 'p.yaml'"):  # the API never reads server files
        resolve_pipeline(str(tmp_path / "p.yaml").replace(str(tmp_path) + "/", ""), allow_files=False)


def test_bad_values_get_one_error_each():
    with pytest.raises(NotFound, match=r"unknown pipeline preset 'bm99'; valid: .*bm25"):
        resolve_pipeline("bm99")
    with pytest.raises(InvalidInput, match="unknown reranker 'nope'; valid: .*cross-encoder"):
        resolve_pipeline({"retrievers": [{"retriever": "bm25"}], "rerankers": [{"reranker": "nope"}]})
    with pytest.raises(InvalidInput, match="unknown retriever 'nope'"):
        resolve_pipeline({"retrievers": [{"retriever": "nope"}]})
    with pytest.raises(InvalidInput, match="pipeline file .* does not exist"):
        resolve_pipeline("missing.yaml")
    with pytest.raises(InvalidInput, match="must be a preset name or a spec object"):
        resolve_pipeline(3)


def test_the_api_answers_an_unknown_preset_as_the_resolver_does(tmp_path):
    with pytest.raises(NotFound) as raised:
        resolve_pipeline("bm99", allow_files=False)
    with TestClient(create_app(Settings(data_dir=tmp_path, background_compaction=False))) as client:
        r = client.post("/v1/collections", json={"name": "c", "pipeline": "bm99"})
        assert r.status_code == 404
        assert r.json()["error"] == {"type": "NotFound", "message": str(raised.value)}


def test_a_pipeline_needs_one_reranker_per_stage(tmp_path):
    spec = PipelineSpec.parse({"retrievers": [{"retriever": "bm25"}], "rerankers": [{"reranker": "colbert"}]})
    docs = [Document("a", "stem cells"), Document("b", "cell biology")]
    index_set = IndexSet(tmp_path / "idx", lambda: iter(docs))
    with pytest.raises(InvalidInput, match="1 reranker stages but 0 rerankers"):
        index_set.pipeline(spec)
    assert len(build_rerankers(spec, lambda name, params: (name, params))) == 1
    assert presets()["bm25"]["retrievers"][0]["retriever"] == "bm25"
    plain = index_set.pipeline(resolve_pipeline("bm25"))
    assert isinstance(plain, Pipeline) and plain.rerankers == []
    (ranking,) = plain.search([Query("q", "stem")]).rankings
    assert ranking.doc_ids == ("a",)
