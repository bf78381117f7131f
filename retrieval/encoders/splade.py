"""SPLADE encoding: sparse lexical vectors from any Hugging Face masked-LM checkpoint.

A text's vector is ``max over tokens of log(1 + ReLU(logits))`` over the MLM head's
vocabulary, padding masked out (Formal et al., SPLADE v2 / SPLADE++ / SPLADE-v3). Queries
and documents may use two different checkpoints over the same vocabulary (the SPLADE
efficiency study pairs a small query encoder with a large document encoder), and each
side is pruned to its top-k terms. The same forward pass also yields SLIM's per-token
sparse vectors (top terms of each token, before the max-pool).

Texts are sorted by length and cut into batches under a token budget, so the (tokens x
vocabulary) logits of one batch stay bounded; results come back in input order. Runs on a
GPU (fp16/bf16) when there is one, on the CPU otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import scipy.sparse as sp

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.models import load_error, resolve_device, resolve_dtype, resolve_model_path
from cascade.retrieval.progress import progress
from cascade.retrieval.sparse.vectors import prune_rows, quantize

from .batching import restore_order, token_budget_batches

__all__ = ["SpladeConfig", "SpladeEncoder", "TokenVectors", "quantize", "splade_activation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpladeConfig:
    """What a SPLADE encoder is: models, lengths, pruning and batching.

    Args:
        model: document encoder (HF id or local directory of a masked-LM checkpoint).
        query_model: query encoder over the same vocabulary (default: ``model``).
        max_length / query_max_length: token limits for documents / queries; None (the
            default): the model's own limit, as sentence-transformers' SparseEncoder uses, so
            an index of a checkpoint scores as its reference implementation does.
        doc_top_k / query_top_k: keep each vector's k heaviest terms (None: all).
        token_top_k: SLIM: terms kept per token vector.
        batch_size: most texts per batch; token_budget: most (padded) tokens per batch.
        device, dtype: as :func:`retrieval.models.resolve_device` / ``resolve_dtype``.
    """

    model: str = "naver/splade-v3"
    query_model: str | None = None
    max_length: int | None = None
    query_max_length: int | None = None
    doc_top_k: int | None = None
    query_top_k: int | None = None
    token_top_k: int = 20
    batch_size: int = 32
    token_budget: int = 4096
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self):
        for name in ("token_top_k", "batch_size", "token_budget"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"SpladeConfig.{name} must be >= 1")
        for name in ("max_length", "query_max_length", "doc_top_k", "query_top_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidInput(f"SpladeConfig.{name} must be >= 1 or None")

    @property
    def query_model_id(self) -> str:
        return self.query_model or self.model

    def to_manifest(self) -> dict[str, Any]:
        """The fields an index keeps (device and dtype belong to the machine, not the index)."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "dtype")}

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any], **overrides: Any) -> SpladeConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in {**data, **overrides}.items() if k in known})


def splade_activation(logits, attention_mask):
    """``max_t log(1 + relu(logits[:, t]))`` over unmasked tokens: (B, L, V) -> (B, V)."""
    import torch

    act = torch.log1p(torch.relu(logits.float())) * attention_mask.unsqueeze(-1).to(torch.float32)
    return act.max(dim=1).values


def vocabulary_projection(model):
    """The MLM head's last layer (hidden -> vocabulary logits) as (parent module, attribute
    name, the Linear), or None when the head does not end in one plain Linear."""
    import torch

    out = model.get_output_embeddings()
    if type(out) is not torch.nn.Linear:
        return None
    for name, module in model.named_modules():
        if module is out and name:
            parent, _, attr = name.rpartition(".")
            return model.get_submodule(parent), attr, out
    return None


#: vocabulary columns per step of the max-pooled projection: the (tokens x chunk) logits of a
#: batch under the token budget are a few MB, reused from one buffer, instead of (tokens x 30k)
_VOCAB_CHUNK = 2048


def max_pooled_activation(model, head, enc, chunk: int = _VOCAB_CHUNK):
    """``splade_activation`` without the (batch x tokens x vocabulary) logits tensor.

    log(1 + relu(x)) is monotonic, so the max over tokens can be taken on the raw logits and
    the activation applied to (batch x vocabulary) only; and the projection runs in vocabulary
    chunks, each one fused matmul-plus-bias into one reused buffer, with only the padding rows
    overwritten by -inf before the max (length-sorted batches have few). The same values as
    the full head at fp32, a fraction of the memory traffic (the full tensor is 4 bytes x
    tokens x 30,522 per batch), and a few large operations per chunk rather than many small
    ones, which is what keeps a CPU's threads busy.
    """
    import torch

    parent, attr, linear = head
    setattr(parent, attr, torch.nn.Identity())  # the model now returns the head's hidden states
    try:
        hidden = model(**enc).logits
    finally:
        setattr(parent, attr, linear)
    rows, length, width = hidden.shape
    flat = hidden.reshape(rows * length, width)
    pads = (~enc["attention_mask"].bool()).reshape(-1).nonzero().squeeze(1)
    weight, bias = linear.weight, linear.bias
    vocab = weight.shape[0]
    pooled = torch.empty((rows, vocab), dtype=torch.float32, device=hidden.device)
    buf = torch.empty((rows * length, min(chunk, vocab)), dtype=hidden.dtype, device=hidden.device)
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        out = buf if stop - start == buf.shape[1] else buf.new_empty((rows * length, stop - start))
        if bias is None:
            torch.mm(flat, weight[start:stop].t(), out=out)
        else:
            torch.addmm(bias[start:stop], flat, weight[start:stop].t(), out=out)
        if len(pads):
            out.index_fill_(0, pads, float("-inf"))
        pooled[:, start:stop] = out.view(rows, length, -1).amax(dim=1)
    return torch.log1p(torch.relu(pooled))


def model_max_length(tokenizer, model) -> int:
    """The longest input a checkpoint takes: its tokenizer's limit, capped by its positions."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(n) for n in limits if n and n < 1_000_000]  # tokenizers without a limit say 1e30
    return min(limits) if limits else 512


@dataclass(frozen=True)
class TokenVectors:
    """SLIM's per-token sparse vectors: rows of ``matrix`` for text i are offsets[i]:offsets[i+1]."""

    matrix: sp.csr_matrix
    offsets: np.ndarray


class SpladeEncoder:
    """Encodes queries and documents into sparse vectors over the MLM vocabulary.

    Example:
        >>> enc = SpladeEncoder(SpladeConfig(model="naver/splade-v3", doc_top_k=256))  # doctest: +SKIP
        >>> docs = enc.encode_documents(["stem cells ..."])  # (n x vocab) float CSR  # doctest: +SKIP

    Raises:
        NotFound: a model that cannot be loaded (no network, bad id).
        IndexMismatch: query and document models with different vocabularies.
    """

    def __init__(self, config: SpladeConfig = SpladeConfig(), models: Mapping[str, Any] | None = None):
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self._models: dict[str, tuple[Any, Any]] = dict(models or {})
        self.vocab = self._vocab(self._load(config.model)[0])
        if config.query_model_id != config.model:
            from cascade.retrieval.sparse.vectors import check_vocab, vocab_hash

            qvocab = self._vocab(self._load(config.query_model_id)[0])
            check_vocab(len(self.vocab), vocab_hash(self.vocab), len(qvocab), vocab_hash(qvocab),
                        f"query model {config.query_model_id!r}")  # fmt: skip

    @staticmethod
    def _vocab(tokenizer) -> list[str]:
        by_id = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        return [t for t, _ in by_id]

    def _load(self, model_id: str):
        """(tokenizer, model) for an id, loaded once; tests may inject prebuilt pairs."""
        if model_id not in self._models:
            from cascade.retrieval.errors import require

            transformers = require("transformers", "models")
            path = resolve_model_path(model_id)
            try:
                tok = transformers.AutoTokenizer.from_pretrained(path)
                model = transformers.AutoModelForMaskedLM.from_pretrained(path, dtype=self.dtype)
            except (OSError, ValueError) as e:
                raise load_error(model_id, e) from e
            self._models[model_id] = (tok, model)
        tok, model = self._models[model_id]
        model.to(self.device).eval()
        return tok, model

    # -- batching ------------------------------------------------------------------------

    def _batches(self, tok, texts: Sequence[str], max_length: int) -> Iterator[tuple[np.ndarray, dict]]:
        """Length-sorted batches under the token budget: (original indexes, tokenized batch)."""
        lengths = [len(ids) for ids in tok(list(texts), truncation=True, max_length=max_length,
                                           add_special_tokens=True)["input_ids"]]  # fmt: skip
        for idx in token_budget_batches(lengths, self.config.token_budget, self.config.batch_size):
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")  # fmt: skip
            yield idx, enc

    def _run(self, texts: Sequence[str], side: str, per_token: bool):
        import torch

        model_id = self.config.model if side == "doc" else self.config.query_model_id
        max_length = self.config.max_length if side == "doc" else self.config.query_max_length
        tok, model = self._load(model_id)
        max_length = max_length or model_max_length(tok, model)
        bar = progress(desc=f"splade {side}", unit=side, total=len(texts), enabled=len(texts) >= 256)
        head = None if per_token else vocabulary_projection(model)
        with torch.inference_mode(), bar:
            for idx, enc in self._batches(tok, texts, max_length):
                enc = {k: v.to(self.device) for k, v in enc.items()}
                if per_token:
                    yield idx, self._token_rows(model(**enc).logits, enc["attention_mask"])
                elif head is None:
                    yield idx, splade_activation(model(**enc).logits, enc["attention_mask"])
                else:
                    yield idx, max_pooled_activation(model, head, enc)
                bar.update(len(idx))

    def _token_rows(self, logits, mask) -> list[sp.csr_matrix]:
        """Per text: (tokens x vocab) rows, each keeping its ``token_top_k`` heaviest terms."""
        import torch

        act = torch.log1p(torch.relu(logits.float()))
        k = min(self.config.token_top_k, act.shape[-1])
        values, cols = act.topk(k, dim=-1)
        values, cols, mask = values.cpu().numpy(), cols.cpu().numpy(), mask.bool().cpu().numpy()
        out = []
        for v, c, m in zip(values, cols, mask, strict=True):
            v, c = v[m], c[m]
            rows = np.repeat(np.arange(len(v)), k)
            mat = sp.csr_matrix((v.ravel(), (rows, c.ravel())), shape=(len(v), act.shape[-1]))
            mat.eliminate_zeros()
            mat.sort_indices()
            out.append(mat)
        return out

    # -- public --------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str], side: str, top_k: int | None) -> sp.csr_matrix:
        if isinstance(texts, str):
            raise InvalidInput("pass a list of texts, not one string")
        batches, blocks = [], []
        for idx, vecs in self._run(texts, side, per_token=False):
            if top_k is not None and top_k < vecs.shape[1]:
                # top-k on the device: only k values per text cross to the host
                values, cols = vecs.topk(top_k, dim=1)
                values, cols = values.cpu().numpy(), cols.cpu().numpy()
                block = sp.csr_matrix((values.ravel(), (np.repeat(np.arange(len(idx)), top_k), cols.ravel())),
                                      shape=vecs.shape)  # fmt: skip
            else:
                block = sp.csr_matrix(vecs.cpu().numpy())
            block.eliminate_zeros()
            batches.append(idx)
            blocks.append(block)
        if not texts:
            return sp.csr_matrix((0, len(self.vocab)), dtype=np.float32)
        out = restore_order(batches, sp.vstack(blocks, format="csr")).astype(np.float32)
        out.sort_indices()
        return prune_rows(out, top_k)

    def encode_documents(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Document vectors (texts x vocab, float32 CSR), pruned to ``doc_top_k`` terms."""
        return self._encode(texts, "doc", self.config.doc_top_k)

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Query vectors with the query model, pruned to ``query_top_k`` terms."""
        return self._encode(texts, "query", self.config.query_top_k)

    def encode_tokens(self, texts: Sequence[str], side: str = "doc") -> TokenVectors:
        """SLIM: one sparse vector per (unmasked) token, each pruned to ``token_top_k`` terms."""
        if side not in ("doc", "query"):
            raise InvalidInput(f"side must be 'doc' or 'query', got {side!r}")
        batches, mats = [], []
        for idx, batch_mats in self._run(texts, side, per_token=True):
            batches.append(idx)
            mats.extend(batch_mats)
        per_text = restore_order(batches, mats)
        lengths = np.array([m.shape[0] for m in per_text], dtype=np.int64)
        offsets = np.r_[0, np.cumsum(lengths)]
        matrix = sp.vstack(per_text, format="csr") if per_text else sp.csr_matrix((0, len(self.vocab)))
        return TokenVectors(matrix.astype(np.float32), offsets)
