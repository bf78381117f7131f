"""Late-interaction encoders: one class turns queries and documents into token vectors.

Three checkpoint layouts are read, picked from the files in the model directory:

- ``colbert``: the original ColBERT format (colbert-ir/colbertv2.0): a BERT checkpoint whose
  state dict also holds ``linear.weight`` (hidden -> 128), settings in ``artifact.metadata``.
  Queries get the ``[Q]`` marker (``[unused0]``) after ``[CLS]`` and are padded with
  ``[MASK]`` to 32 tokens (query augmentation); documents get ``[D]`` (``[unused1]``) and
  their punctuation tokens are dropped.
- ``pylate``: a sentence-transformers / PyLate ColBERT model: ``modules.json`` with a
  Transformer followed by one or more Dense modules (weights and activation read from each
  module's folder), prefixes, lengths and skip-list from ``config_sentence_transformers.json``.
- ``tokens``: any plain encoder (e.g. all-MiniLM-L6-v2) used as a multi-vector model: its
  last hidden states, no pooling, optionally through a fixed seeded random orthonormal
  projection (``projection_dim``).

Every token vector is L2-normalized. Inputs are sorted by length so batches carry little
padding, and outputs come back in input order as a :class:`MultiVectors` (ragged rows).
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.models import load_error, resolve_device, resolve_dtype, resolve_model_path
from cascade.retrieval.progress import progress

from .batching import pad_batch, restore_order, token_budget_batches

log = logging.getLogger(__name__)

Format = Literal["auto", "colbert", "pylate", "tokens"]


@dataclass(frozen=True)
class LateInteractionConfig:
    """How text becomes token vectors; read from the checkpoint, overridable by the caller."""

    query_maxlen: int = 32
    doc_maxlen: int = 256
    query_marker: str | None = None  # token inserted after [CLS] in queries, e.g. "[unused0]"
    doc_marker: str | None = None
    query_expansion: bool = False  # pad queries with [MASK] up to query_maxlen
    attend_to_expansion: bool = False  # let the [MASK] pads take part in attention
    skip_punctuation: bool = False  # drop punctuation tokens from documents
    skiplist: tuple[str, ...] = tuple(string.punctuation)


@dataclass(frozen=True)
class MultiVectors:
    """Ragged token vectors: row ``i`` is ``vectors[offsets[i]:offsets[i + 1]]``."""

    vectors: np.ndarray  # (total tokens, dim)
    offsets: np.ndarray  # (n + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.vectors[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_list(cls, rows: Sequence[np.ndarray], dim: int | None = None) -> MultiVectors:
        if not rows:
            return cls(np.zeros((0, dim or 0), np.float32), np.zeros(1, np.int64))
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        return cls(np.concatenate(rows), offsets)

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """(n, max_len, dim) zero-padded vectors and the (n, max_len) bool mask of real tokens."""
        lens = self.lengths
        width = int(lens.max()) if len(lens) else 0
        mask = np.arange(width)[None, :] < lens[:, None]
        out = np.zeros((len(self), width, self.vectors.shape[1]), self.vectors.dtype)
        out[mask] = self.vectors
        return out, mask


def detect_format(path: Path) -> Format:
    """``pylate`` if modules.json lists a Dense module, ``colbert`` if the state dict holds
    a ``linear`` projection or there is an ``artifact.metadata``, else ``tokens``."""
    modules = path / "modules.json"
    if modules.is_file() and any("Dense" in m.get("type", "") for m in json.loads(modules.read_text())):
        return "pylate"
    if (path / "artifact.metadata").is_file() or "linear.weight" in _state_dict_keys(path):
        return "colbert"
    return "tokens"


def _state_dict_keys(path: Path) -> set[str]:
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), "np") as f:
            return set(f.keys())
    return set()


def _load_state_dict(folder: Path) -> dict:
    torch = require("torch", "models")
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise InvalidInput(f"{folder} holds no model.safetensors or pytorch_model.bin")


_ACTIVATIONS = {"Identity": None, "Tanh": "tanh", "ReLU": "relu", "GELU": "gelu", "Sigmoid": "sigmoid"}


def _read_pylate(path: Path) -> tuple[list[tuple], LateInteractionConfig]:
    """Dense layers (weight, bias, activation) and the config of a PyLate model directory."""
    layers = []
    for module in json.loads((path / "modules.json").read_text()):
        if "Dense" not in module.get("type", ""):
            continue
        folder = path / module["path"]
        cfg = json.loads((folder / "config.json").read_text())
        state = _load_state_dict(folder)
        act_name = cfg.get("activation_function", "Identity").rsplit(".", 1)[-1]
        if act_name not in _ACTIVATIONS:
            raise InvalidInput(f"{folder}: unsupported activation {act_name!r}")
        layers.append((state["linear.weight"], state.get("linear.bias"), _ACTIVATIONS[act_name]))
    st = path / "config_sentence_transformers.json"
    c = json.loads(st.read_text()) if st.is_file() else {}
    skip = c.get("skiplist_words")
    config = LateInteractionConfig(
        query_maxlen=int(c.get("query_length", 32)),
        doc_maxlen=int(c.get("document_length", 180)),
        query_marker=(c.get("query_prefix") or "").strip() or None,
        doc_marker=(c.get("document_prefix") or "").strip() or None,
        query_expansion=bool(c.get("do_query_expansion", True)),
        attend_to_expansion=bool(c.get("attend_to_expansion_tokens", False)),
        skip_punctuation=True,
        skiplist=tuple(skip) if skip is not None else tuple(string.punctuation),
    )
    return layers, config


def _read_colbert(path: Path) -> tuple[list[tuple], LateInteractionConfig]:
    meta_file = path / "artifact.metadata"
    m = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    state = _load_state_dict(path)
    config = LateInteractionConfig(
        query_maxlen=int(m.get("query_maxlen", 32)),
        doc_maxlen=int(m.get("doc_maxlen", 180)),
        query_marker=m.get("query_token_id", "[unused0]"),
        doc_marker=m.get("doc_token_id", "[unused1]"),
        query_expansion=True,
        attend_to_expansion=bool(m.get("attend_to_mask_tokens", False)),
        skip_punctuation=bool(m.get("mask_punctuation", True)),
    )
    return [(state["linear.weight"], None, None)], config


def random_orthonormal(in_dim: int, out_dim: int, seed: int = 0) -> np.ndarray:
    """A fixed (out_dim, in_dim) matrix with orthonormal rows, from numpy's seeded generator."""
    if not 0 < out_dim <= in_dim:
        raise InvalidInput(f"projection_dim must be in 1..{in_dim}, got {out_dim}")
    g = np.random.default_rng(seed).standard_normal((in_dim, out_dim))
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))).T.astype(np.float32)  # sign fix: unique for a given seed


class ColBERTEncoder:
    """Token-vector encoder for queries and documents (ColBERT, PyLate or a plain encoder).

    Args:
        model: a model directory, a packaged model id, or a hub id.
        format: the checkpoint layout; ``auto`` reads it from the files (see module doc).
        device: ``None``/``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        dtype: ``None``/``"auto"`` (:func:`cascade.retrieval.models.resolve_dtype`: bf16 on GPUs
            and bf16-capable CPUs, else fp32), ``float32``, ``bfloat16``, ``float16``.
        batch_size: texts per forward pass (after sorting by length).
        projection_dim: ``tokens`` format only: project to this many dims (seeded, orthonormal).
        projection_seed: the projection's seed.
        **overrides: any :class:`LateInteractionConfig` field (e.g. ``doc_maxlen=180``).

    Raises:
        NotFound: the model cannot be loaded. InvalidInput: a bad setting.

    Example:
        >>> enc = ColBERTEncoder("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> enc.encode_queries(["what is a stem cell"])[0].shape            # doctest: +SKIP
        (9, 384)
    """

    def __init__(
        self,
        model: str,
        format: Format = "auto",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        projection_dim: int | None = None,
        projection_seed: int = 0,
        show_progress: bool = False,
        **overrides,
    ):
        torch = require("torch", "models")
        transformers = require("transformers", "models")
        self.model_id = str(model)
        path = Path(resolve_model_path(model))
        if format == "auto":
            format = detect_format(path) if path.is_dir() else "tokens"
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
            transformer = transformers.AutoModel.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise load_error(self.model_id, e) from e
        if format == "colbert":
            layers, config = _read_colbert(path)
        elif format == "pylate":
            layers, config = _read_pylate(path)
        elif format == "tokens":
            layers, config = [], LateInteractionConfig()
        else:
            raise InvalidInput(f"unknown format {format!r}; valid: auto, colbert, pylate, tokens")
        if projection_dim is not None:
            if format != "tokens":
                raise InvalidInput("projection_dim applies to the 'tokens' format only")
            w = random_orthonormal(transformer.config.hidden_size, projection_dim, projection_seed)
            layers = [(torch.from_numpy(w), None, None)]
        self.format = format
        self.projection_dim, self.projection_seed = projection_dim, projection_seed
        self._setup(transformer, tokenizer, layers, replace(config, **overrides), device, dtype)
        self.batch_size, self.show_progress = batch_size, show_progress

    @classmethod
    def from_components(
        cls, transformer, tokenizer, layers=(), config: LateInteractionConfig | None = None,
        device: str | None = None, dtype: str | None = None, batch_size: int = 32,
    ) -> ColBERTEncoder:  # fmt: skip
        """An encoder over an already-built model (tests, custom training loops)."""
        self = cls.__new__(cls)
        self.model_id, self.format, self.projection_dim, self.projection_seed = "custom", "custom", None, 0
        self._setup(transformer, tokenizer, list(layers), config or LateInteractionConfig(), device, dtype)
        self.batch_size, self.show_progress = batch_size, False
        return self

    def _setup(self, transformer, tokenizer, layers, config, device, dtype) -> None:
        torch = require("torch", "models")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.config, self.tokenizer = config, tokenizer
        self.transformer = transformer.to(self.device, self.dtype).eval()
        self.layers = [
            (w.to(self.device, self.dtype), None if b is None else b.to(self.device, self.dtype), act)
            for w, b, act in layers
        ]
        self.dim = int(self.layers[-1][0].shape[0]) if self.layers else int(transformer.config.hidden_size)
        self.markers = {
            "query": self._token_id(config.query_marker), "doc": self._token_id(config.doc_marker)
        }
        skip = set()
        if config.skip_punctuation:
            for word in config.skiplist:
                ids = tokenizer.encode(word, add_special_tokens=False)
                if ids:
                    skip.add(ids[0])
        self._skip = torch.tensor(sorted(skip), dtype=torch.long, device=self.device)

    def _token_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise InvalidInput(f"marker token {token!r} is not in the tokenizer's vocabulary")
        return int(tid)

    # -- public API ------------------------------------------------------------------------

    def encode_queries(self, texts: Sequence[str]) -> MultiVectors:
        """Token vectors of each query; those over ``query_maxlen`` tokens are cut with a warning."""
        return self._encode(list(texts), "query")

    def encode_documents(self, texts: Sequence[str]) -> MultiVectors:
        """Token vectors of each document (cut at ``doc_maxlen``; punctuation dropped if set)."""
        return self._encode(list(texts), "doc")

    # -- internals -------------------------------------------------------------------------

    def _tokenize(self, texts: list[str], side: str) -> list[list[int]]:
        cfg = self.config
        maxlen = cfg.query_maxlen if side == "query" else cfg.doc_maxlen
        marker = self.markers[side]
        budget = maxlen - (marker is not None)  # the marker takes one of the maxlen slots
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        if side == "query":
            long = [i for i, x in enumerate(ids) if len(x) > budget]
            if long:
                log.warning(
                    "%d queries exceed query_maxlen=%d tokens and are truncated (first: %r)",
                    len(long), maxlen, texts[long[0]][:80],
                )  # fmt: skip
        # keep the closing special token ([SEP]) when cutting
        ids = [x if len(x) <= budget else x[: budget - 1] + x[-1:] for x in ids]
        if marker is not None:
            ids = [x[:1] + [marker] + x[1:] for x in ids]
        return ids

    def _encode(self, texts: list[str], side: str) -> MultiVectors:
        torch = require("torch", "models")
        if not texts:
            return MultiVectors.from_list([], self.dim)
        if any(not isinstance(t, str) for t in texts):
            raise InvalidInput("texts must be strings")
        ids = self._tokenize(texts, side)
        # unlike the other encoders, no token budget: a batch is batch_size rows of the
        # length-sorted order (doc_maxlen / query_maxlen already bound its padded size)
        batches = token_budget_batches([len(x) for x in ids], max_tokens=None, max_batch_size=self.batch_size)
        rows: list[np.ndarray] = []
        bar = progress(desc=f"encode {side}s", unit=side, total=len(texts), enabled=self.show_progress)
        with torch.inference_mode(), bar:
            for idx in batches:
                vecs, keep = self._forward([ids[i] for i in idx], side)
                vecs, keep = vecs.float().cpu().numpy(), keep.cpu().numpy()
                rows.extend(v[k] for v, k in zip(vecs, keep, strict=True))
                bar.update(len(idx))
        return MultiVectors.from_list(restore_order(batches, rows), self.dim)

    def _forward(self, batch: list[list[int]], side: str):
        """Pad one batch, run the model and projection; returns (vectors, keep-mask)."""
        torch = require("torch", "models")
        cfg, tok = self.config, self.tokenizer
        expand = side == "query" and cfg.query_expansion
        width = cfg.query_maxlen if expand else None  # query augmentation pads to a fixed length
        pad_id = tok.mask_token_id if expand else tok.pad_token_id
        input_ids, attention = (torch.from_numpy(a) for a in pad_batch(batch, pad_id, width=width))
        # ColBERT keeps the [MASK] pads' vectors as query augmentation, attended to or not
        keep = torch.ones_like(attention, dtype=torch.bool) if expand else attention.bool()
        if expand and cfg.attend_to_expansion:
            attention[:] = 1
        input_ids, attention, keep = (t.to(self.device) for t in (input_ids, attention, keep))
        h = self.transformer(input_ids=input_ids, attention_mask=attention).last_hidden_state
        for w, b, act in self.layers:
            h = torch.nn.functional.linear(h, w, b)
            if act is not None:
                h = getattr(torch, act)(h) if act in ("tanh", "relu", "sigmoid") else torch.nn.functional.gelu(h)
        if side == "doc" and len(self._skip):
            keep &= ~torch.isin(input_ids, self._skip)
        return torch.nn.functional.normalize(h.float(), dim=-1), keep
