"""One collection-name rule and one chunking config, whichever path a value comes in by."""

import re

import pytest
from pydantic import ValidationError

from cascade.api.schemas import CreateCollection, SearchIn
from cascade.api.service.collection import SegmentedCollection
from cascade.api.service.config import CollectionConfig, check_name
from cascade.api.service.engine import Engine
from cascade.eval.presets import resolve_pipeline
from cascade.retrieval.chunking import ChunkConfig
from cascade.retrieval.errors import InvalidInput

GOOD = ["kb", "a", "Scifact-v2.1_test", "0", "x" * 64]
BAD = ["", "../etc", ".hidden", "_x", "-x", "a/b", "a b", "kb\n", "x" * 65, "naïve", 5, None]


def _message(name) -> str:
    return f"invalid collection name {name!r}: letters, digits, '_', '.', '-', up to 64"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(tmp_path_factory.mktemp("data"), background_compaction=False)


def test_valid_names_pass_every_path(engine, tmp_path):
    for name in GOOD:
        assert check_name(name) == name
        assert CreateCollection(name=name).name == name
        assert CollectionConfig(name=name, pipeline=resolve_pipeline("bm25")).name == name
    engine.create_collection("Scifact-v2.1_test")
    engine.attach("x" * 64, object())
    assert engine.collection_names() == ["Scifact-v2.1_test", "x" * 64]


@pytest.mark.parametrize("name", BAD, ids=repr)
def test_invalid_names_are_refused_with_one_message(engine, tmp_path, name):
    message = _message(name)
    with pytest.raises(InvalidInput) as e:
        check_name(name)
    assert str(e.value) == message
    for path in (lambda: engine.create_collection(name), lambda: engine.attach(name, object())):
        with pytest.raises(InvalidInput) as e:
            path()
        assert str(e.value) == message
    if isinstance(name, str):  # the stored-config schema and the collection itself give the same message
        with pytest.raises(ValidationError) as e:
            CollectionConfig(name=name, pipeline=resolve_pipeline("bm25"))
        assert message in str(e.value)
        config = CollectionConfig.model_construct(name=name, pipeline=resolve_pipeline("bm25"))
        with pytest.raises(InvalidInput) as e:
            SegmentedCollection.create(tmp_path / "c", config)
        assert str(e.value) == message
        assert not (tmp_path / "c").exists()
        # the request schemas use the same pattern (pydantic words the refusal itself)
        for schema, body in ((CreateCollection, {}), (SearchIn, {"query": "q"})):
            with pytest.raises(ValidationError, match="String should match pattern"):
                schema.model_validate({**body, **({"collection": name} if schema is SearchIn else {"name": name})})
    assert engine.collection_names() == ["Scifact-v2.1_test", "x" * 64]


def test_one_chunking_config_with_its_limits(engine):
    assert ChunkConfig() == ChunkConfig(max_tokens=256, overlap=32)
    for bad, problem in [
        ({"max_tokens": 4, "overlap": 4}, "overlap (4) must be below max_tokens (4)"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": 10_000}, "max_tokens: Input should be less than or equal to 8192"),
        ({"overlap": -1}, "overlap: Input should be greater than or equal to 0"),
        ({"size": 8}, "size: Extra inputs are not permitted"),
    ]:
        with pytest.raises(InvalidInput, match=f"^invalid chunking: {re.escape(problem)}$"):
            ChunkConfig.parse(bad)
        with pytest.raises(ValidationError, match=re.escape(problem.rpartition(": ")[2])):
            ChunkConfig(**bad)
    # a collection: the same config and limits, at least 8 words a chunk
    with pytest.raises(ValidationError, match="max_tokens must be at least 8 for a collection"):
        CollectionConfig(name="c", pipeline=resolve_pipeline("bm25"), chunking={"max_tokens": 7, "overlap": 0})
    with pytest.raises(ValidationError, match="max_tokens must be at least 8 for a collection"):
        CreateCollection(name="c", chunking={"max_tokens": 7, "overlap": 0})
    with pytest.raises(ValidationError, match=r"chunking\.max_tokens\n.*less than or equal to 8192"):
        CreateCollection(name="c", chunking={"max_tokens": 8193})
    # the request leaves the overlap rule to the engine, which refuses it for REST and CLI alike
    body = CreateCollection(name="c", chunking={"max_tokens": 16, "overlap": 16})
    assert isinstance(body.chunking, ChunkConfig)
    with pytest.raises(InvalidInput, match=r"overlap \(16\) must be below max_tokens \(16\)"):
        engine.create_collection("c", "bm25", body.chunking.model_dump())


def test_stored_configs_still_load():
    stored = {
        "name": "notes",
        "pipeline": resolve_pipeline("bm25").model_dump(mode="json"),
        "chunking": {"max_tokens": 64, "overlap": 8},
        "compaction": {"max_segments": 8, "min_live_ratio": 0.5, "background": True},
    }
    config = CollectionConfig.model_validate(stored)
    assert config.chunking == ChunkConfig(max_tokens=64, overlap=8)
    assert config.model_dump(mode="json")["chunking"] == {"max_tokens": 64, "overlap": 8}
    assert CollectionConfig.model_validate(config.model_dump(mode="json")) == config
