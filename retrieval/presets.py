"""Named pipelines. Each is a plain spec dict, validated by :class:`PipelineSpec` on use."""

PRESETS: dict[str, dict] = {
    "bm25": {"retrievers": [{"retriever": "bm25", "depth": 1000}], "k": 1000},
    "dense": {"retrievers": [{"retriever": "dense", "depth": 1000}], "k": 1000},
    "hybrid": {"retrievers": [{"retriever": "bm25", "depth": 100}, {"retriever": "dense", "depth": 100}], "fusion": {"method": "minmax"}, "k": 100},
    "colbert": {"retrievers": [{"retriever": "colbert", "depth": 100, "params": {"nbits": 2}}], "k": 100},
    "bm25+ce": {"retrievers": [{"retriever": "bm25", "depth": 100}], "rerankers": [{"reranker": "cross-encoder", "depth": 100, "params": {"model": "cross-encoder/ms-marco-MiniLM-L6-v2"}}], "k": 100},
    "bm25+monot5": {"retrievers": [{"retriever": "bm25", "depth": 100}], "rerankers": [{"reranker": "monot5", "depth": 100, "params": {"model": "castorini/monot5-base-msmarco"}}], "k": 100},
    "bm25+listwise": {"retrievers": [{"retriever": "bm25", "depth": 100}], "rerankers": [{"reranker": "listwise", "depth": 100, "params": {"model": "castorini/rank_zephyr_7b_v1_full", "backend": "openai", "base_url": "http://localhost:8000/v1", "prompt": "rankzephyr"}}], "k": 100},
    "bm25+first": {"retrievers": [{"retriever": "bm25", "depth": 100}], "rerankers": [{"reranker": "first", "depth": 100, "params": {"model": "rryisthebest/First_Model"}}], "k": 100},
    # Learned sparse; the default checkpoints come from the Hugging Face hub (pass a local directory offline).
    "splade": {"retrievers": [{"retriever": "splade", "depth": 1000, "params": {"model": "naver/splade-v3"}}], "k": 1000},  # fmt: skip
    "slim": {"retrievers": [{"retriever": "slim", "depth": 1000, "params": {"model": "naver/splade-v3"}}], "k": 1000},  # fmt: skip
    "bm25-lucene": {"retrievers": [{"retriever": "lucene-bm25", "depth": 1000}], "k": 1000},
}
