"""Named pipelines. Each is a plain spec dict, validated by :class:`PipelineSpec` on use."""

PRESETS: dict[str, dict] = {
    "bm25": {"retrievers": [{"retriever": "bm25", "depth": 1000}], "k": 1000},
    "dense": {"retrievers": [{"retriever": "dense", "depth": 1000}], "k": 1000},
    "hybrid": {"retrievers": [{"retriever": "bm25", "depth": 100}, {"retriever": "dense", "depth": 100}], "fusion": {"method": "minmax"}, "k": 100},
    "bm25-lucene": {"retrievers": [{"retriever": "lucene-bm25", "depth": 1000}], "k": 1000},
}
