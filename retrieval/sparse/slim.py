"""SLIM: sparsified late interaction (Li et al., 2023) over SPLADE-style token vectors.

Each token of a text gets a sparse vector over the MLM vocabulary (its top terms of
``log(1 + ReLU(logits))``). Candidates come from an inverted impact index over the fused
document vectors (the max-pool of the token vectors, quantized); they are then rescored by
sparsified late interaction: ``sum over query tokens of max over document tokens of the
sparse dot product``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from cascade.retrieval.base import Retriever
from cascade.retrieval.errors import IndexMismatch, InvalidInput
from cascade.retrieval.models import dtype_name
from cascade.retrieval.storage import read_index, write_index
from cascade.retrieval.types import Document, Query, Ranking

from .impact import ImpactRetriever
from .vectors import check_vocab, quantize, vocab_hash

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FUSED = "fused_"


def fuse_tokens(matrix: sp.csr_matrix, offsets: np.ndarray) -> sp.csr_matrix:
    """Max-pool token rows into one row per text (rows offsets[i]:offsets[i+1] -> row i)."""
    coo = sp.coo_matrix(matrix)
    text = np.searchsorted(offsets, coo.row, side="right") - 1
    fused = sp.coo_matrix((coo.data, (text, coo.col)), shape=(len(offsets) - 1, matrix.shape[1]))
    # max instead of sum over duplicates: sort by (text, col, value) and keep each group's last
    order = np.lexsort((coo.data, coo.col, text))
    t, c, v = text[order], coo.col[order], coo.data[order]
    last = np.r_[(t[1:] != t[:-1]) | (c[1:] != c[:-1]), True] if len(t) else np.zeros(0, bool)
    return sp.csr_matrix((v[last], (t[last], c[last])), shape=fused.shape)


def late_interaction(q_tokens: sp.csr_matrix, d_tokens: sp.csr_matrix, d_offsets: np.ndarray) -> np.ndarray:
    """``sum_i max_j q_i . d_j`` for one query against documents whose tokens are d_offsets-delimited."""
    n_docs = len(d_offsets) - 1
    if q_tokens.shape[0] == 0 or n_docs == 0:
        return np.zeros(n_docs)
    sims = (q_tokens @ d_tokens.T).toarray()  # (query tokens x document tokens)
    out = np.zeros(n_docs)
    nonempty = np.diff(d_offsets) > 0
    if nonempty.any():
        maxes = np.maximum.reduceat(sims, d_offsets[:-1][nonempty], axis=1)
        out[nonempty] = maxes.sum(axis=0)
    return out


class SlimRetriever(Retriever):
    """SLIM: impact-index candidates over fused vectors, rescored by sparse late interaction.

    Example:
        >>> slim = SlimRetriever.build(docs, model="naver/splade-v3", token_top_k=20)  # doctest: +SKIP
        >>> slim.search([Query("1", "stem cells")], k=10, candidates=200)  # doctest: +SKIP
    """

    kind = "slim"

    def __init__(self, index: ImpactRetriever, tokens: sp.csr_matrix, offsets: np.ndarray, params: Mapping):
        self.index, self.tokens, self.offsets = index, tokens, np.asarray(offsets)
        self.params = dict(params)
        self._encoder = None
        self._position: dict[str, int] | None = None

    @classmethod
    def from_token_vectors(
        cls, doc_ids: Sequence[str], tokens: sp.spmatrix, offsets: np.ndarray, vocab: Sequence[str],
        scale: float = 100.0, encoder: Mapping[str, Any] | None = None,
    ) -> Self:  # fmt: skip
        """Index per-token sparse vectors (float), rows offsets[i]:offsets[i+1] belonging to doc i."""
        tokens = sp.csr_matrix(tokens, dtype=np.float32)
        if len(offsets) != len(doc_ids) + 1 or offsets[-1] != tokens.shape[0]:
            raise InvalidInput("token offsets must hold len(doc_ids) + 1 entries ending at the token count")
        fused = quantize(fuse_tokens(tokens, np.asarray(offsets)), scale)
        index = ImpactRetriever.from_vectors(doc_ids, fused, vocab, scale, approx=None, encoder=encoder)
        return cls(index, tokens, offsets, {"scale": float(scale), "encoder": dict(encoder or {}) or None})

    @classmethod
    def build(cls, docs: Iterable[Document], model: str = "naver/splade-v3", query_model: str | None = None,
              scale: float = 100.0, **encoder_params: Any) -> Self:  # fmt: skip
        """Encode documents token by token with a SPLADE model and index them."""
        from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

        docs = list(docs)
        config = SpladeConfig(model=model, query_model=query_model, **encoder_params)
        encoder = SpladeEncoder(config)
        tv = encoder.encode_tokens([d.contents for d in docs], "doc")
        slim = cls.from_token_vectors([d.id for d in docs], tv.matrix, tv.offsets, encoder.vocab, scale,
                                      config.to_manifest())  # fmt: skip
        slim.params["encode_dtype"] = dtype_name(encoder.dtype)  # recorded, not a setting: the machine picks
        slim._encoder = encoder
        return slim

    @property
    def num_docs(self) -> int:
        return self.index.num_docs

    def search(self, queries: Sequence[Query], k: int = 10, candidates: int = 100) -> list[Ranking]:
        """Encode queries token by token with the index's encoder, then :meth:`search_token_vectors`."""
        if not queries:
            return []
        if self._encoder is None:
            if not self.params.get("encoder"):
                raise InvalidInput("this SLIM index has no query encoder: use search_token_vectors()")
            from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

            self._encoder = SpladeEncoder(SpladeConfig.from_manifest(self.params["encoder"]))
        p = self.index.params
        check_vocab(p["vocab_size"], p["vocab_hash"], len(self._encoder.vocab), vocab_hash(self._encoder.vocab),
                    "the query encoder")  # fmt: skip
        tv = self._encoder.encode_tokens([q.text for q in queries], "query")
        return self.search_token_vectors(tv.matrix, tv.offsets, k, [q.id for q in queries], candidates)

    def search_token_vectors(
        self, tokens: sp.spmatrix, offsets: np.ndarray, k: int = 10, query_ids: Sequence[str] | None = None,
        candidates: int = 100,
    ) -> list[Ranking]:  # fmt: skip
        """Rank documents for queries given as per-token sparse vectors (float weights).

        Args:
            tokens, offsets: query token rows; query i owns rows offsets[i]:offsets[i+1].
            k: hits per query; candidates: first-stage depth (at least k).

        Raises:
            IndexMismatch: token vectors of another width than the index vocabulary.
        """
        if k < 1 or candidates < 1:
            raise InvalidInput("k and candidates must be >= 1")
        tokens = sp.csr_matrix(tokens, dtype=np.float32)
        offsets = np.asarray(offsets)
        if tokens.shape[1] != len(self.index.vocab):
            raise IndexMismatch(f"token vectors have {tokens.shape[1]} dimensions; the index has "
                                f"{len(self.index.vocab)} terms")  # fmt: skip
        ids = [str(i) for i in range(len(offsets) - 1)] if query_ids is None else list(query_ids)
        fused = fuse_tokens(tokens, offsets)
        first = self.index.search_vectors(fused, max(k, candidates), ids)
        out = []
        for i, ranking in enumerate(first):
            cand = self._doc_index(ranking.doc_ids)
            starts, ends = self.offsets[cand], self.offsets[cand + 1]
            rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)]) if len(cand) \
                else np.zeros(0, np.int64)  # fmt: skip
            d_off = np.r_[0, np.cumsum(ends - starts)]
            scores = late_interaction(tokens[offsets[i] : offsets[i + 1]], self.tokens[rows], d_off)
            out.append(
                Ranking.from_scores(ranking.query_id, np.asarray(ranking.doc_ids, dtype=str), scores, k)
            )
        return out

    def _doc_index(self, doc_ids: Sequence[str]) -> np.ndarray:
        if self._position is None:
            self._position = {d: i for i, d in enumerate(self.index.doc_ids.tolist())}
        return np.array([self._position[d] for d in doc_ids], dtype=np.int64)

    def save(self, path: str | Path) -> None:
        arrays = {_FUSED + name: arr for name, arr in self.index._arrays().items()}
        arrays.update(tok_indptr=self.tokens.indptr, tok_indices=self.tokens.indices, tok_data=self.tokens.data,
                      tok_offsets=self.offsets)  # fmt: skip
        params = {**self.params, "index": self.index.params}
        write_index(path, self.kind, FORMAT_VERSION, params, self.num_docs, arrays,
                    json_files={"vocab": self.index.vocab})  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Self:
        manifest, arrays, jsons = read_index(path, cls.kind, (FORMAT_VERSION,))
        p = manifest.params
        index = ImpactRetriever({n[len(_FUSED) :]: a for n, a in arrays.items() if n.startswith(_FUSED)},
                                jsons["vocab"], p["index"])  # fmt: skip
        tokens = sp.csr_matrix((arrays["tok_data"], arrays["tok_indices"], arrays["tok_indptr"]),
                               shape=(int(arrays["tok_offsets"][-1]), len(jsons["vocab"])))  # fmt: skip
        return cls(index, tokens, arrays["tok_offsets"], {k: v for k, v in p.items() if k != "index"})
