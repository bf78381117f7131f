"""Named pipelines. Each is a plain spec dict, validated by :class:`PipelineSpec` on use."""

PRESETS: dict[str, dict] = {
    "bm25": {"retrievers": [{"retriever": "bm25", "depth": 1000}], "k": 1000},
    "colbert": {"retrievers": [{"retriever": "colbert", "depth": 100, "params": {"nbits": 2}}], "k": 100},
    "bm25-lucene": {"retrievers": [{"retriever": "lucene-bm25", "depth": 1000}], "k": 1000},
}
