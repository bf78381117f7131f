"""The `splade` family on a real checkpoint equals sentence-transformers' SparseEncoder."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
SPLADE_TINY = SHARED / "models" / "splade-tiny"
SCIFACT = SHARED / "datasets" / "scifact"


def _texts(n_docs: int, n_queries: int) -> tuple[list[str], list[str]]:
    with open(SCIFACT / "corpus.jsonl") as f:
        rows = [json.loads(line) for _, line in zip(range(400), f, strict=False)]
    with open(SCIFACT / "queries.jsonl") as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(n_queries), f, strict=False)]
    # the longest documents first: truncation at the model's limit is part of what is checked
    docs = sorted(((r["title"] + " " + r["text"]).strip() for r in rows), key=len, reverse=True)
    return docs[:n_docs], queries


def _csr(tensor) -> sp.csr_matrix:
    t = tensor.coalesce()
    idx, val = t.indices().numpy(), t.values().float().numpy()
    return sp.csr_matrix((val, (idx[0], idx[1])), shape=tuple(t.shape), dtype=np.float32)


@pytest.mark.slow
@pytest.mark.skipif(
    not SPLADE_TINY.is_dir() or not SCIFACT.is_dir(), reason="../shared splade-tiny / SciFact missing"
)
def test_documents_and_queries_equal_sparse_encoder():
    st = pytest.importorskip("sentence_transformers")
    docs, queries = _texts(48, 32)
    ref = st.SparseEncoder(str(SPLADE_TINY), device="cpu")
    ref_docs = _csr(ref.encode_document(docs, batch_size=16, convert_to_sparse_tensor=True))
    ref_queries = _csr(ref.encode_query(queries, batch_size=16, convert_to_sparse_tensor=True))

    enc = SpladeEncoder(SpladeConfig(model=str(SPLADE_TINY), dtype="float32"))
    ours_docs, ours_queries = enc.encode_documents(docs), enc.encode_queries(queries)
    assert max(len(d.split()) for d in docs) > 300, "some documents must exceed 256 tokens"
    for ours, ref_m in ((ours_docs, ref_docs), (ours_queries, ref_queries)):
        ref_m = ref_m.copy()
        ref_m.eliminate_zeros()
        ref_m.sort_indices()
        assert ours.shape == ref_m.shape
        for i in range(ours.shape[0]):  # the same terms, row by row
            assert np.array_equal(ours[i].indices, ref_m[i].indices), i
        assert np.abs(ours.data - ref_m.data).max() < 1e-4
