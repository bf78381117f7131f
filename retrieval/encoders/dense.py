"""The dense text encoder: one class for documents (indexing) and queries (search).

It runs a transformers ``AutoModel`` directly rather than through sentence-transformers so
that batching is ours: the whole input is tokenized in one fast-tokenizer call, sequences
are sorted by length and grouped under a padded-token budget
(:func:`.batching.token_budget_batches`), and each batch is padded only to its
own longest row. A sentence-transformers model directory supplies its own pooling,
normalization, maximum length and prompts (:mod:`.st_config`), so embeddings match
``SentenceTransformer.encode`` on the same model.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.models import (
    DEFAULT_DENSE_MODEL,
    load_error,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    to_device,
)
from cascade.retrieval.progress import progress

from .batching import pad_batch, token_budget_batches
from .decoder import apply_rope_scaling, check_rope_scaling, is_decoder_only
from .st_config import sentence_transformers_settings

log = logging.getLogger(__name__)

#: Prompt pairs (query, document) of well-known model families, chosen by name, never guessed.
PROMPT_PRESETS: dict[str, tuple[str, str]] = {
    "e5": ("query: ", "passage: "),
    "bge": ("Represent this sentence for searching relevant passages: ", ""),
    # E5-Mistral / NV-Embed: a task instruction before queries only
    "instruct": ("Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: ", ""),
    "none": ("", ""),
}

#: Poolings that need a model head and an encoder class of their own (:mod:`.backends` picks it).
HEAD_POOLINGS = ("aggretriever",)


# --- pooling: small pure functions over (hidden [B, T, H], mask [B, T]), padded either side --


def _mean(h, mask):
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1, dtype=_acc(h)) / m.sum(1, dtype=_acc(h)).clamp(min=1e-9)


def _mean_sqrt_len(h, mask):
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1, dtype=_acc(h)) / m.sum(1, dtype=_acc(h)).clamp(min=1e-9).sqrt()


def _weighted_mean(h, mask):
    # position weights 1, 2, ... counted from each row's first real token, as sentence-transformers
    w = mask.to(_acc(h)) * mask.cumsum(1).to(_acc(h))
    return (h.to(_acc(h)) * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-9)


def _cls(h, mask):
    torch = require("torch", "models")
    first = mask.argmax(1)  # the first real token: column 0 unless the batch is left-padded
    return h[torch.arange(h.shape[0], device=h.device), first]


def _max(h, mask):
    return h.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(1).values


def _last_token(h, mask):
    torch = require("torch", "models")
    last = h.shape[1] - 1 - mask.flip(1).argmax(1)  # the last real token, whichever side is padded
    return h[torch.arange(h.shape[0], device=h.device), last]


def _acc(h):
    """Accumulate half-precision sums in fp32, as sentence-transformers does."""
    torch = require("torch", "models")
    return torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype


POOLINGS: dict[str, Callable] = {
    "mean": _mean, "cls": _cls, "max": _max, "lasttoken": _last_token,
    "mean_sqrt_len_tokens": _mean_sqrt_len, "weightedmean": _weighted_mean,
}  # fmt: skip


@dataclass(frozen=True)
class EncoderConfig:
    """Everything that decides the vectors a model produces; saved in an index's manifest.

    Attributes:
        model: hub id or local directory (as the user named it; resolved when loading).
        pooling: one of :data:`POOLINGS`.
        normalize: L2-normalize the output (after any Matryoshka truncation).
        max_length: tokens per sequence, special tokens included.
        query_prompt, document_prompt: text prepended to queries / documents.
        do_lower_case: lowercase the input first (some sentence-transformers models ask for it).
        layers: use only the first N transformer layers (2D Matryoshka / Starbucks models).
        dim: keep the first ``dim`` coordinates (Matryoshka truncation).
        subfolder: where the transformer lives inside a sentence-transformers directory.
        padding_side: ``"left"`` or ``"right"``; ``None``: the tokenizer's own (as
            sentence-transformers does). Decoder LLMs pad left.
        append_eos: end every sequence with the EOS token; ``None``: yes for a decoder-only
            model whose tokenizer does not add it itself (E5-Mistral, NV-Embed and gte-Qwen2
            pool the EOS state), no for sentence-transformers directories, which declare
            their own tokenization.
        rope_scaling: ``{"rope_type": "linear" | "ntk", "factor": F}``: LongEmbed-style
            context extension of RoPE models (:mod:`.decoder`); the maximum length grows F-fold.
        agg_dim: the size of agg* for ``pooling="aggretriever"`` (:mod:`.aggretriever`).
    """

    model: str = DEFAULT_DENSE_MODEL
    pooling: str = "mean"
    normalize: bool = True
    max_length: int | None = None
    query_prompt: str = ""
    document_prompt: str = ""
    do_lower_case: bool = False
    layers: int | None = None
    dim: int | None = None
    subfolder: str = ""
    padding_side: str | None = None
    append_eos: bool | None = None
    rope_scaling: dict | None = None
    agg_dim: int | None = None

    def __post_init__(self):
        if self.pooling not in POOLINGS and self.pooling not in HEAD_POOLINGS:
            raise InvalidInput(f"unknown pooling {self.pooling!r}; valid: {', '.join([*POOLINGS, *HEAD_POOLINGS])}")
        if self.padding_side not in (None, "left", "right"):
            raise InvalidInput(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        object.__setattr__(self, "rope_scaling", check_rope_scaling(self.rope_scaling))
        for name in ("max_length", "layers", "dim", "agg_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def resolve(cls, model: str = DEFAULT_DENSE_MODEL, prompts: str | None = None, **overrides) -> EncoderConfig:
        """The model's own sentence-transformers settings, then a prompt preset, then explicit values.

        Args:
            model: hub id or directory.
            prompts: a :data:`PROMPT_PRESETS` name (``"e5"``, ``"bge"``).
            **overrides: any :class:`EncoderConfig` field; ``None`` keeps the model's value.

        Raises:
            InvalidInput: unknown field, preset or pooling; NotFound: unreachable model.
        """
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInput(f"unknown encoder settings {sorted(unknown)}")
        if overrides.get("pooling") in HEAD_POOLINGS:  # a recipe of its own: no sentence-transformers pipeline
            settings: dict[str, Any] = {"normalize": False}
        else:
            settings = sentence_transformers_settings(resolve_model_path(model))
            if settings:  # a sentence-transformers directory: its tokenizer decides about EOS
                settings["append_eos"] = False
        if prompts is not None:
            if prompts not in PROMPT_PRESETS:
                raise InvalidInput(f"unknown prompt preset {prompts!r}; valid: {', '.join(PROMPT_PRESETS)}")
            settings["query_prompt"], settings["document_prompt"] = PROMPT_PRESETS[prompts]
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, **settings)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EncoderConfig:
        # manifests written before these settings existed padded right and appended nothing
        return cls(**{"padding_side": "right", "append_eos": False, **data})


class DenseEncoder:
    """Encode texts into one vector each, with length-sorted token-budget batches.

    Args:
        model: hub id or local directory (default all-MiniLM-L6-v2, packaged offline).
        device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``. Plain ``"cuda"`` with
            several GPUs spreads batches over all of them.
        dtype: ``None``/``"auto"`` (bf16 on GPUs and on CPUs with bf16 matrix instructions, else
            fp32: :func:`cascade.retrieval.models.resolve_dtype`), ``"float32"``, ``"bfloat16"``,
            ``"float16"``. Pooling, normalization and the output stay fp32.
        batch_size: most rows in one batch.
        max_tokens: padded tokens per batch (rows x longest); default 8192 on CPU, 65536 on GPU.
        show_progress: a progress bar (docs/s) over long inputs.
        prompts: a :data:`PROMPT_PRESETS` name.
        **settings: :class:`EncoderConfig` fields (pooling, normalize, max_length, query_prompt,
            document_prompt, layers, dim...), overriding what the model directory declares.

    Raises:
        NotFound: the model cannot be loaded (no network and not local); InvalidInput: bad settings.

    Example:
        >>> enc = DenseEncoder()  # doctest: +SKIP
        >>> enc.encode_queries(["what is a stem cell?"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(
        self,
        model: str = DEFAULT_DENSE_MODEL,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 256,
        max_tokens: int | None = None,
        show_progress: bool = True,
        prompts: str | None = None,
        config: EncoderConfig | None = None,
        **settings,
    ):
        self.config = config or EncoderConfig.resolve(model, prompts=prompts, **settings)
        if self.config.pooling not in self.poolings:
            raise InvalidInput(
                f"pooling {self.config.pooling!r} needs its own encoder class: build encoders through "
                "cascade.retrieval.encoders.backends.dense_encoder"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.max_tokens = max_tokens or (65536 if self.device.type == "cuda" else 8192)
        self.show_progress = show_progress
        self.tokenizer, models = self._load()
        self._replicas: queue.Queue = queue.Queue()
        for m in models:
            self._replicas.put(m)
        self._n_replicas = len(models)
        hidden = models[0].config.hidden_size
        if self.config.dim is not None and self.config.dim > hidden:
            raise InvalidInput(f"dim={self.config.dim} exceeds the model's hidden size {hidden}")
        self.dim = self.config.dim or hidden
        tok_max = self.tokenizer.model_max_length if self.tokenizer.model_max_length < 1e9 else None
        pos_max = getattr(models[0].config, "max_position_embeddings", None)
        if self.config.rope_scaling and pos_max:  # the tokenizer's limit is the unscaled model's
            tok_max, pos_max = None, int(pos_max * self.config.rope_scaling["factor"])
        limits = [x for x in (tok_max, pos_max) if x]
        self.max_length = self.config.max_length or (min(limits) if limits else 512)
        self.model = models[0]
        self.pad_id = next(i for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0) if i is not None)
        self.prefix_ids, self.suffix_ids = self._special_tokens()
        self.config = self._resolve_tokenization(self.config, models[0].config)
        self.left_pad = self.config.padding_side == "left"

    #: the poolings this class computes (subclasses with a model head of their own override it)
    poolings: tuple[str, ...] = tuple(POOLINGS)
    #: the transformers auto class that loads the checkpoint
    auto_class = "AutoModel"

    @classmethod
    def from_config(cls, config: EncoderConfig, **runtime) -> DenseEncoder:
        """Rebuild the encoder an index was built with (``runtime``: device, dtype, batch sizes)."""
        return cls(config=config, **runtime)

    # -- loading ---------------------------------------------------------------------------

    def _load(self):
        torch = require("torch", "models")
        transformers = require("transformers", "models")
        cfg = self.config
        path = resolve_model_path(cfg.model)
        sub = {"subfolder": cfg.subfolder} if cfg.subfolder else {}
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, **sub)
            extra = {}
            if cfg.rope_scaling:
                extra["config"] = transformers.AutoConfig.from_pretrained(path, **sub)
                apply_rope_scaling(extra["config"], cfg.rope_scaling)
            auto = getattr(transformers, self.auto_class)
            model = auto.from_pretrained(path, dtype=self.dtype, **sub, **extra)
        except InvalidInput:
            raise
        except (OSError, ValueError) as e:
            raise load_error(cfg.model, e) from None
        if not tokenizer.is_fast:
            log.warning("%s has no fast tokenizer: tokenization will be slow", cfg.model)
        if model.config.is_encoder_decoder:  # T5-style encoders (GTR, Sentence-T5): the encoder half
            model = model.get_encoder()
        if cfg.layers is not None:
            _keep_layers(model, cfg.layers)
        model.eval()
        devices = [self.device]
        if self.device.type == "cuda" and self.device.index is None and torch.cuda.device_count() > 1:
            devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        models = [model.to(devices[0])] + [_copy(model).to(d) for d in devices[1:]]
        return tokenizer, models

    def _resolve_tokenization(self, cfg: EncoderConfig, model_config) -> EncoderConfig:
        """Settle ``padding_side`` and ``append_eos`` for this model, so the manifest records
        what the documents were encoded with and queries are encoded the same way."""
        eos = self.tokenizer.eos_token_id
        append = cfg.append_eos
        if append is None:
            append = is_decoder_only(model_config) and eos is not None and eos not in self.suffix_ids
        if append and eos is None:
            raise InvalidInput(f"append_eos is set but the tokenizer of {cfg.model!r} has no EOS token")
        side = cfg.padding_side or ("left" if self.tokenizer.padding_side == "left" else "right")
        return dataclasses.replace(cfg, padding_side=side, append_eos=bool(append))

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a single sequence ([CLS] ... [SEP], <s> ...)."""
        bare = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("x", add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(bare) + 1):
            if full[i : i + len(bare)] == bare:
                return full[:i], full[i + len(bare) :]
        return [], []

    # -- text -> ids -----------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str], prompt: str = "") -> list[list[int]]:
        """Token ids with special tokens, truncated to ``max_length``, in one fast batch call."""
        if isinstance(texts, str):
            raise InvalidInput("texts must be a list of strings, not one string")
        texts = [prompt + t for t in texts]
        if self.config.do_lower_case:
            texts = [t.lower() for t in texts]
        append = self.config.append_eos
        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_length - 1 if append else self.max_length,
            return_attention_mask=False, return_token_type_ids=False,
        )  # fmt: skip
        if not append:
            return enc["input_ids"]
        eos = self.tokenizer.eos_token_id
        return [ids if ids and ids[-1] == eos else [*ids, eos] for ids in enc["input_ids"]]

    # -- encoding --------------------------------------------------------------------------

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Queries, with the model's query prompt; float32 array (len(texts), dim)."""
        return self.encode(texts, self.config.query_prompt)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Documents, with the model's document prompt; float32 array (len(texts), dim)."""
        return self.encode(texts, self.config.document_prompt)

    def encode(self, texts: Sequence[str], prompt: str = "") -> np.ndarray:
        return self.embed_ids(self.tokenize(texts, prompt))

    def embed_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled, truncated and normalized vectors for sequences of token ids."""
        pool = POOLINGS[self.config.pooling]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for rows, hidden, mask in self._run(ids):
            # pooling (and normalization after it) in fp32 whatever the model's dtype
            out[rows] = self.postprocess(pool(hidden.float(), mask).cpu().numpy())
        return out

    def token_states(self, ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """The last layer's state of every token (float32, one (len, hidden) array per sequence)."""
        out: list[np.ndarray] = [np.empty(0)] * len(ids)
        for rows, hidden, mask in self._run(ids):
            states, real = hidden.float().cpu().numpy(), mask.bool().cpu().numpy()
            for j, row in enumerate(rows):
                out[row] = states[j, real[j]]
        return out

    def postprocess(self, vectors: np.ndarray) -> np.ndarray:
        """Matryoshka truncation to ``dim``, then L2 normalization when the config asks for it."""
        return truncate_and_normalize(vectors, self.dim, self.config.normalize)

    def _run(self, ids: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """Yield ``(row indices, hidden states, attention mask)`` per batch, on the model's device.

        With several replicas (GPUs) batches run in threads, one replica each; the torch
        kernels release the GIL, so the GPUs overlap.
        """
        batches = token_budget_batches([len(s) for s in ids], self.max_tokens, self.batch_size)
        bar = progress(desc="encode", unit="doc", total=len(ids), enabled=self.show_progress and len(ids) >= 1000)
        with bar:
            if self._n_replicas == 1:
                for rows in batches:
                    yield rows, *self._forward(ids, rows)
                    bar.update(len(rows))
                return
            with ThreadPoolExecutor(self._n_replicas) as pool:
                # results come back in submission order; each is already on its GPU
                for rows, result in zip(batches, pool.map(lambda r: self._forward(ids, r), batches), strict=True):
                    yield rows, *result
                    bar.update(len(rows))

    def _forward(self, ids: Sequence[Sequence[int]], rows: np.ndarray):
        torch = require("torch", "models")
        model = self._replicas.get()
        try:
            device = model.device
            input_ids, mask = pad_batch([ids[i] for i in rows], self.pad_id, left=self.left_pad)
            input_ids, mask = to_device(input_ids, device), to_device(mask, device)
            with torch.inference_mode():
                hidden = self._model_output(model, input_ids, mask)
            return hidden, mask
        finally:
            self._replicas.put(model)

    def _model_output(self, model, input_ids, mask):
        """What a batch's forward pass hands to pooling: the last hidden states."""
        return model(input_ids=input_ids, attention_mask=mask).last_hidden_state


def truncate_and_normalize(vectors: np.ndarray, dim: int | None, normalize: bool) -> np.ndarray:
    """Keep the first ``dim`` coordinates (Matryoshka), then L2-normalize when asked; float32."""
    vectors = np.ascontiguousarray(vectors[:, :dim], dtype=np.float32)
    if normalize:
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def _copy(model):
    import copy

    return copy.deepcopy(model)


def _keep_layers(model, n: int) -> None:
    """Cut the transformer to its first ``n`` layers (2D Matryoshka / Starbucks).

    The layer stack is the ``ModuleList`` holding ``config.num_hidden_layers`` blocks
    (``encoder.layer`` in BERT, ``layers`` in Llama/Qwen, ``block`` in T5).
    """
    torch = require("torch", "models")
    total = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "num_layers", None)
    if n > (total or 0):
        raise InvalidInput(f"layers={n} but the model has {total} layers")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == total:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, torch.nn.ModuleList(list(module)[:n]))
            model.config.num_hidden_layers = n
            return
    raise InvalidInput(f"cannot find the layer stack of {type(model).__name__} to keep {n} layers")
