"""T5 rerankers: monoT5 (P(true) at the first decoder step) and RankT5 (a ranking logit).

monoT5 (Nogueira et al., 2020) reads ``"Query: q Document: d Relevant:"`` and scores
``P(true) = softmax(logit_true, logit_false)[true]`` at the first decoder step. RankT5
(Zhuang et al., 2023) reads ``"Query: q Document: d"`` and uses an unnormalised ranking
logit: the encoder-decoder variant takes the first decoder step's logit of one vocabulary
token (``<extra_id_10>`` in the released checkpoints), the encoder-only variant projects
the encoder's first output vector to a score with a dense layer.

Long documents are cut inside the document span, so the template's suffix
(``Relevant:``) and the end-of-sequence token always survive truncation (pygaggle cuts
the whole string at 512 tokens and can lose them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from cascade.retrieval.encoders.batching import BatchPolicy, pad_batch
from cascade.retrieval.errors import InvalidInput, NotFound, require
from cascade.retrieval.models import load_error, resolve_device, resolve_dtype, resolve_model_path, to_device
from cascade.retrieval.progress import progress

from .base import PairwiseReranker

log = logging.getLogger(__name__)

MONOT5_TEMPLATE = "Query: {query} Document: {document} Relevant:"
RANKT5_TEMPLATE = "Query: {query} Document: {document}"
#: Where the encoder-only RankT5 variant keeps its dense head (arrays ``weight`` [1, d] and ``bias`` [1]).
RANK_HEAD_FILE = "rank_head.npz"


def single_token_id(tokenizer, token: str) -> int:
    """The vocabulary id of ``token``, which must encode to exactly one token."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise InvalidInput(f"{token!r} is not a single token for this tokenizer (got {len(ids)} tokens)")
    return int(ids[0])


class _T5Reranker(PairwiseReranker):
    """Shared loading, templating, truncation and batching; subclasses score a batch."""

    template: str
    _model_class = "T5ForConditionalGeneration"

    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        token_budget: int | None = None,
        template: str | None = None,
        show_progress: bool | None = None,
    ):
        self._torch = require("torch", "models")
        transformers = require("transformers", "models")
        self.template = template or self.template
        if self.template.count("{document}") != 1 or "{query}" not in self.template:
            raise InvalidInput(f"template must hold {{query}} and one {{document}}: {self.template!r}")
        self.model_id = model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.path = resolve_model_path(model)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
            cls = getattr(transformers, self._model_class)
            self.model = cls.from_pretrained(self.path, dtype=self.dtype)
        except (OSError, ValueError, KeyError) as e:
            raise load_error(model, e) from e
        self.model.to(self.device).eval()
        self.policy = BatchPolicy(batch_size=batch_size, token_budget=token_budget, max_length=max_length)
        self.show_progress = show_progress

    def encode(self, queries: Sequence[str], documents: Sequence[str]) -> list[list[int]]:
        """Token ids of the templated inputs, documents cut so each fits ``max_length``."""
        head, _, tail = self.template.partition("{document}")
        prefixes = [head.format(query=q) for q in queries]
        texts = [p + d + tail.format(query=q) for p, d, q in zip(prefixes, documents, queries, strict=True)]
        enc = self.tokenizer(texts, return_offsets_mapping=True)
        limit = self.policy.max_length
        out = []
        for ids, offsets, prefix, doc in zip(enc["input_ids"], enc["offset_mapping"], prefixes, documents,
                                             strict=True):  # fmt: skip
            if len(ids) <= limit:
                out.append(list(ids))
                continue
            start, end = len(prefix), len(prefix) + len(doc)
            in_doc = [i for i, (a, b) in enumerate(offsets) if start <= a < end and b > a]
            drop = set(in_doc[max(len(in_doc) - (len(ids) - limit), 0) :])
            kept = [t for i, t in enumerate(ids) if i not in drop]
            if len(kept) > limit:  # the query alone is too long: cut its tail, keep the last (EOS) token
                kept = kept[: limit - 1] + kept[-1:]
            out.append(kept)
        return out

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        """Scores of (query, document) pairs in input order."""
        torch = self._torch
        out = np.zeros(len(queries), dtype=np.float32)
        if not len(queries):
            return out
        seqs = self.encode(queries, documents)
        show = self.show_progress if self.show_progress is not None else len(seqs) > 2000
        pad_id = self.tokenizer.pad_token_id or 0
        bar = progress(desc=self.name, unit="pair", total=len(seqs), enabled=show, leave=False)
        with torch.inference_mode(), bar:
            for idx in self.policy.batches([len(s) for s in seqs]):
                ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
                ids_t, mask_t = to_device(ids, self.device), to_device(mask, self.device)
                out[idx] = self._score_batch(ids_t, mask_t).float().cpu().numpy()
                bar.update(len(idx))
        return out

    def _first_step_logits(self, ids, mask):
        """Decoder logits over the vocabulary at the first step, [batch, vocab]."""
        start = self.model.config.decoder_start_token_id
        dec = self._torch.full((ids.shape[0], 1), start, dtype=ids.dtype, device=ids.device)
        return self.model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits[:, 0, :]

    def _score_batch(self, ids, mask):
        raise NotImplementedError


class MonoT5Reranker(_T5Reranker):
    """monoT5: ``P(true)`` from the true/false logits of the first decoder step.

    Args:
        model: hub id or directory of a monoT5 checkpoint (``castorini/monot5-base-msmarco``).
        device, dtype, batch_size, max_length, token_budget, show_progress: as for the cross-encoder.
        true_token, false_token: the answer words (``"yes"``/``"no"`` for mT5 variants).
        template: input format; ``{query}`` and ``{document}`` are filled in.

    Raises:
        NotFound: the model cannot be loaded. InvalidInput: an answer word is not one token.
    """

    name = "monot5"
    template = MONOT5_TEMPLATE

    def __init__(self, model: str = "castorini/monot5-base-msmarco", device: str | None = None,
                 dtype: str | None = None, batch_size: int = 16, max_length: int = 512,
                 token_budget: int | None = None, true_token: str = "true", false_token: str = "false",
                 template: str | None = None, show_progress: bool | None = None):  # fmt: skip
        super().__init__(model, device, dtype, batch_size, max_length, token_budget, template, show_progress)
        self.token_ids = [single_token_id(self.tokenizer, false_token), single_token_id(self.tokenizer, true_token)]

    def _score_batch(self, ids, mask):
        pair = self._first_step_logits(ids, mask)[:, self.token_ids].float()
        return self._torch.softmax(pair, dim=-1)[:, 1]


class RankT5Reranker(_T5Reranker):
    """RankT5: an unnormalised ranking logit per (query, document).

    Args:
        model: hub id or directory. ``variant="encoder-decoder"``: a T5ForConditionalGeneration
            checkpoint, scored by the first-step logit of ``rank_token``. ``variant="encoder"``:
            a T5 encoder checkpoint plus ``rank_head.npz`` (``weight`` [1, d_model], ``bias`` [1])
            applied to the encoder's first output vector.
        rank_token: the vocabulary token whose logit is the score (encoder-decoder only).
        device, dtype, batch_size, max_length, token_budget, template, show_progress: as for monoT5.

    Raises:
        NotFound: the model or its rank head cannot be loaded. InvalidInput: bad arguments.
    """

    name = "rankt5"
    template = RANKT5_TEMPLATE

    def __init__(self, model: str = "Soyoung97/RankT5-base", device: str | None = None,
                 dtype: str | None = None, batch_size: int = 16, max_length: int = 512,
                 token_budget: int | None = None, variant: Literal["encoder-decoder", "encoder"] = "encoder-decoder",
                 rank_token: str = "<extra_id_10>", template: str | None = None,
                 show_progress: bool | None = None):  # fmt: skip
        if variant not in ("encoder-decoder", "encoder"):
            raise InvalidInput(f"variant must be 'encoder-decoder' or 'encoder', got {variant!r}")
        self.variant = variant
        self._model_class = "T5ForConditionalGeneration" if variant == "encoder-decoder" else "T5EncoderModel"
        super().__init__(model, device, dtype, batch_size, max_length, token_budget, template, show_progress)
        if variant == "encoder-decoder":
            self.token_id = single_token_id(self.tokenizer, rank_token)
        else:
            self.head_weight, self.head_bias = self._load_head(Path(self.path) / RANK_HEAD_FILE)

    def _load_head(self, file: Path):
        if not file.is_file():
            raise NotFound(f"encoder-only RankT5 needs its dense head at {file}")
        with np.load(file, allow_pickle=False) as arrays:
            weight, bias = arrays["weight"], arrays["bias"]
        d_model = self.model.config.d_model
        if weight.shape != (1, d_model) or bias.shape != (1,):
            raise InvalidInput(f"{file}: head shapes {weight.shape}, {bias.shape}; expected (1, {d_model}), (1,)")
        torch = self._torch
        return torch.from_numpy(weight).float().to(self.device), torch.from_numpy(bias).float().to(self.device)

    def _score_batch(self, ids, mask):
        if self.variant == "encoder-decoder":
            return self._first_step_logits(ids, mask)[:, self.token_id]
        first = self.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0, :].float()
        return (first @ self.head_weight.T + self.head_bias).squeeze(-1)
