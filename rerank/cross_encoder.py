"""Cross-encoder reranking: a sequence-classification transformer reads (query, document).

Loads sentence-transformers CrossEncoder checkpoints and plain Hugging Face
sequence-classification checkpoints (``cross-encoder/ms-marco-MiniLM-L6-v2``,
``BAAI/bge-reranker-*``). Scores match ``sentence_transformers.CrossEncoder.predict`` on the
same checkpoint: same truncation (longest first, to the same max length), same activation
read from the saved config; the batching differs (token budget over length-sorted pairs,
across queries), which changes speed, not scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np

from cascade.retrieval.encoders.batching import BatchPolicy, restore_order
from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.models import load_error, resolve_device, resolve_dtype, resolve_model_path, to_device
from cascade.retrieval.progress import progress

from .base import PairwiseReranker
from .pair_encoding import PairEncoder

log = logging.getLogger(__name__)

Activation = Literal["auto", "identity", "sigmoid"]

#: Activation paths sentence-transformers trusts without trust_remote_code: torch's own modules.
_TRUSTED_PREFIX = "torch."


def saved_activation(config, num_labels: int) -> str:
    """The activation sentence-transformers (6.x) applies in ``predict`` for a saved checkpoint.

    Read the way ``CrossEncoder.get_default_activation_fn`` does: the ``activation_fn`` path
    under the config's ``sentence_transformers`` key (written by ST >= 4 on save), else the
    pre-4.0 ``sbert_ce_default_activation_function``; an untrusted (non-``torch.``) path is
    ignored; with nothing saved, a 1-label head gets a sigmoid and a multi-label head none.

    Returns:
        ``"identity"``, ``"sigmoid"`` or another dotted ``torch.`` path.
    """
    path = None
    st = getattr(config, "sentence_transformers", None)
    if isinstance(st, dict) and st.get("activation_fn"):
        path = st["activation_fn"]
    elif getattr(config, "sbert_ce_default_activation_function", None):
        path = config.sbert_ce_default_activation_function
    if path and not path.startswith(_TRUSTED_PREFIX):
        log.warning("ignoring untrusted activation %r saved with the model (sentence-transformers does too)", path)
        path = None
    if path is None:
        return "sigmoid" if num_labels == 1 else "identity"
    short = {"torch.nn.modules.linear.Identity": "identity", "torch.nn.modules.activation.Sigmoid": "sigmoid"}
    return short.get(path, path)


def _activation_fn(name: str) -> Callable:
    torch = require("torch", "models")
    if name == "identity":
        return lambda x: x
    if name == "sigmoid":
        return torch.sigmoid
    module, _, attr = name.rpartition(".")
    import importlib

    try:
        return getattr(importlib.import_module(module), attr)()
    except (ImportError, AttributeError, TypeError) as e:
        raise InvalidInput(f"cannot build activation {name!r}: {e}") from None


class CrossEncoderReranker(PairwiseReranker):
    """Scores each (query, document) pair with a sequence-classification model.

    Args:
        model: hub id or local directory of a 1-label sequence-classification checkpoint.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when present.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``; ``None``/``"auto"``: bf16 on GPUs and on
            bf16-capable CPUs, else fp32 (:func:`cascade.retrieval.models.resolve_dtype`). Scores
            come out in fp32.
        batch_size: most pairs per forward pass.
        max_length: tokens per pair (query and document truncated longest-first); ``None``
            uses the tokenizer's limit capped at the model's position embeddings, as
            sentence-transformers does.
        token_budget: most padded tokens per forward pass (default ``batch_size * max_length``).
        activation: ``"auto"`` (what the checkpoint's saved config says, as in
            sentence-transformers), ``"identity"`` (raw logits) or ``"sigmoid"``.
        show_progress: a progress bar over pairs; ``None`` shows it above 2,000 pairs.
        chunk_size: pairs tokenized at a time, overlapping the model's work on the previous
            chunk; ``None``: ``max(1024, batch_size)`` on a GPU, all pairs at once on a CPU.

    Raises:
        NotFound: the model cannot be loaded (no network and not a local directory).
        InvalidInput: bad arguments, or a checkpoint with more than one label.

    Example:
        >>> ce = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L6-v2", device="cpu")
        >>> ranking = ce.rerank(Query("q1", "what is bm25"), docs, top_k=10)
    """

    name = "cross-encoder"

    def __init__(
        self,
        model: str = "cross-encoder/ms-marco-MiniLM-L6-v2",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        token_budget: int | None = None,
        activation: Activation = "auto",
        show_progress: bool | None = None,
        chunk_size: int | None = None,
    ):
        torch = require("torch", "models")
        transformers = require("transformers", "models")
        if activation not in ("auto", "identity", "sigmoid"):
            raise InvalidInput(f"activation must be auto, identity or sigmoid, got {activation!r}")
        self.model_id = model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        path = resolve_model_path(model)
        try:
            config = transformers.AutoConfig.from_pretrained(path)
            if (config.architectures or [""])[0].endswith("ForCausalLM"):
                raise InvalidInput(
                    f"{model!r} is a causal LM; use the 'listwise' or 'first' rerankers for LLMs"
                )
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.model = transformers.AutoModelForSequenceClassification.from_pretrained(path, dtype=self.dtype)
        except (OSError, ValueError, KeyError) as e:
            if isinstance(e, InvalidInput):
                raise
            raise load_error(model, e) from e
        if self.model.config.num_labels != 1:
            raise InvalidInput(
                f"{model!r} has {self.model.config.num_labels} labels; a reranking cross-encoder has 1"
            )
        self.model.to(self.device).eval()
        if max_length is None:
            max_length = int(self.tokenizer.model_max_length)
            positions = getattr(config, "max_position_embeddings", -1)
            if positions and positions > 0:
                max_length = min(max_length, positions)
        self.policy = BatchPolicy(batch_size=batch_size, token_budget=token_budget, max_length=max_length)
        self.activation = saved_activation(config, 1) if activation == "auto" else activation
        self._activation_fn = _activation_fn(self.activation)
        self.pairs = PairEncoder(
            self.tokenizer, max_length, with_types="token_type_ids" in self.tokenizer.model_input_names
        )
        self.show_progress = show_progress
        if chunk_size is not None and chunk_size < 1:
            raise InvalidInput(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._torch = torch

    def score_pairs(self, firsts: Sequence[str], seconds: Sequence[str]) -> np.ndarray:
        """Scores of (text, text) pairs in input order, float32 after the activation."""
        torch = self._torch
        n = len(firsts)
        if not n:
            return np.zeros(0, dtype=np.float32)
        # On a GPU, pairs go in chunks: worker threads tokenize the next chunks (numba and
        # Rust tokenizing run without the GIL) while this thread batches and launches the
        # current one, whose kernels run without being waited for. Chunks bound the memory of
        # long inputs. Default GPU chunks hold at least 1,024 pairs: a small chunk sorts fewer
        # pairs by length, so its batches may carry more padding. On a CPU one chunk sorts all
        # pairs by length, which is what saves padding there.
        size = self.chunk_size or (max(1024, self.policy.batch_size) if self.device.type == "cuda" else n)
        chunks = [slice(start, min(start + size, n)) for start in range(0, n, size)]
        show = self.show_progress if self.show_progress is not None else n > 2000
        pad_id = self.tokenizer.pad_token_id or 0
        order, pending = [], []
        with (
            ThreadPoolExecutor(2, thread_name_prefix="cascade-tokenize") as pool,
            torch.inference_mode(),
            progress(desc="cross-encoder", unit="pair", total=n, enabled=show, leave=False) as bar,
        ):
            encoded = pool.map(lambda c: self.pairs.encode(firsts[c], seconds[c]), chunks)
            for chunk, tokens in zip(chunks, encoded, strict=True):
                for rows in self.policy.batches(tokens.lengths):
                    feed = {k: to_device(v, self.device) for k, v in tokens.batch(rows, pad_id).items()}
                    pending.append(self._activation_fn(self.model(**feed).logits.float()).squeeze(-1))
                    order.append(rows + chunk.start)
                    bar.update(len(rows))
            scores = torch.cat(pending).cpu().numpy()  # the one wait for the GPU
        return restore_order(order, scores).astype(np.float32, copy=False)
