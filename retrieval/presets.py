"""Named pipelines. Each is a plain spec dict, validated by :class:`PipelineSpec` on use."""

PRESETS: dict[str, dict] = {
    "bm25": {"retrievers": [{"retriever": "bm25", "depth": 1000}], "k": 1000},
    # Learned sparse; the default checkpoints come from the Hugging Face hub (pass a local directory offline).
    "splade": {"retrievers": [{"retriever": "splade", "depth": 1000, "params": {"model": "naver/splade-v3"}}], "k": 1000},  # fmt: skip
    "slim": {"retrievers": [{"retriever": "slim", "depth": 1000, "params": {"model": "naver/splade-v3"}}], "k": 1000},  # fmt: skip
    "bm25-lucene": {"retrievers": [{"retriever": "lucene-bm25", "depth": 1000}], "k": 1000},
}
