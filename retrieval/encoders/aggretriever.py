"""Aggretriever pooling (Lin, Li and Lin, TACL 2023): [CLS] plus agg*, over any masked-LM checkpoint.

A BERT-style model's [CLS] vector is a poor summary before contrastive training; its MLM
head, though, already says which vocabulary terms each token evokes. agg* reads that: every
token's vocabulary distribution (the softmax of its MLM logits, times a learned term weight
when the checkpoint has one) is max-pooled over the text's tokens ([CLS] excluded) into one
|V|-dim lexical vector, which is folded to a dense ``D`` dims:

1. drop the first ``|V| mod 2D`` vocabulary ids (BERT's unused ones), or pad the end with
   zeros to a multiple of 2D when that remainder is over 1000;
2. view the vector as rows of 2D and take the max down each column (column ``j`` holds ids
   ``j, j + 2D, j + 4D, ...``);
3. fold each pair of columns into one signed value: ``a`` if ``a > b`` else ``-b``.

The representation is ``[agg* ; CLS]``, CLS projected when the checkpoint has a projection,
scored by plain inner product (no normalization), as in the authors' code
(castorini/dhr, ``tevatron/Aggretriever``), whose ``pooler.pt`` (CLS projection) and
``term_weight_trans.pt`` (term weights) files a checkpoint directory may carry.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.models import resolve_model_path

from .dense import DenseEncoder

log = logging.getLogger(__name__)

#: agg* size of the paper's models (with a 128-dim projected CLS: 768 dims in all)
DEFAULT_AGG_DIM = 640

_TERM_WEIGHT_FILES = ("term_weight_trans.pt", "TermWeightTrans.pt")
_POOLER_FILES = ("pooler.pt",)


def fold(lexical, dims: int):
    """agg*: a batch of |V|-dim lexical vectors ``[B, V]`` folded to ``[B, dims]`` (see module doc)."""
    torch = require("torch", "models")
    batch, vocab = lexical.shape
    width = 2 * dims
    if width > vocab:
        raise InvalidInput(
            f"agg_dim={dims} needs a vocabulary of at least {width} terms; the model has {vocab}"
        )
    remove = vocab % width
    if remove > 1000:  # pad instead of dropping that many ids
        remove -= width
    x = lexical[:, remove:] if remove >= 0 else torch.nn.functional.pad(lexical, (0, -remove))
    top = x.reshape(batch, -1, width).max(1).values
    positive, negative = top[:, 0::2], top[:, 1::2]
    return torch.where(positive > negative, positive, -negative)


class AggretrieverEncoder(DenseEncoder):
    """A :class:`DenseEncoder` whose pooling is Aggretriever's; settings as DenseEncoder's,
    with ``pooling="aggretriever"`` and ``agg_dim`` (default 640). Output: ``agg_dim`` plus
    the CLS width (the projection's, or the hidden size) dims.

    Raises:
        InvalidInput: ``dim`` (these vectors cannot be truncated), an ``agg_dim`` too large for
            the vocabulary; NotFound: the model cannot be loaded.

    Example:
        >>> enc = AggretrieverEncoder("../shared/models/splade-tiny")  # doctest: +SKIP
        >>> enc.encode_queries(["stem cells"]).shape  # doctest: +SKIP
        (1, 768)
    """

    poolings = ("aggretriever",)
    auto_class = "AutoModelForMaskedLM"

    def __init__(self, model: str | None = None, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 256, max_tokens: int | None = None, show_progress: bool = True,
                 prompts: str | None = None, config=None, **settings):  # fmt: skip
        if config is None and not model:
            raise InvalidInput("aggretriever pooling needs a masked-LM checkpoint: set model")
        if (config.dim if config is not None else settings.get("dim")) is not None:
            raise InvalidInput("aggretriever vectors cannot be truncated: leave dim unset")
        if config is None:
            settings["pooling"] = "aggretriever"
        super().__init__(
            model, device, dtype, batch_size, max_tokens, show_progress, prompts, config, **settings
        )
        if max_tokens is None:  # the MLM logits take |V| floats a token: smaller batches
            self.max_tokens = 8192 if self.device.type == "cuda" else 2048
        self.agg_dim = self.config.agg_dim or DEFAULT_AGG_DIM
        fold(
            require("torch", "models").zeros(1, self.model.config.vocab_size), self.agg_dim
        )  # checks the size
        self.term_weights = _linear_heads(self.config.model, _TERM_WEIGHT_FILES, self.device)
        self.projection = _linear_heads(self.config.model, _POOLER_FILES, self.device)
        cls_dim = self.projection["q"][0].shape[0] if self.projection else self.model.config.hidden_size
        self.dim = self.agg_dim + cls_dim

    def encode_queries(self, texts) -> np.ndarray:
        return self._embed(self.tokenize(texts, self.config.query_prompt), "q")

    def encode_documents(self, texts) -> np.ndarray:
        return self._embed(self.tokenize(texts, self.config.document_prompt), "p")

    def embed_ids(self, ids) -> np.ndarray:
        """Document-side vectors of token id sequences (the passage heads when they differ)."""
        return self._embed(ids, "p")

    def _embed(self, ids, side: str) -> np.ndarray:
        torch = require("torch", "models")
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for rows, (hidden, logits), mask in self._run(ids):
            with torch.inference_mode():
                vectors = self._represent(hidden.float(), logits.float(), mask, side)
            out[rows] = self.postprocess(vectors.cpu().numpy())
        return out

    def _represent(self, hidden, logits, mask, side: str):
        torch = require("torch", "models")
        keep = mask[:, 1:].unsqueeze(-1).to(hidden.dtype)  # every real token but [CLS]
        lexical = torch.softmax(logits[:, 1:], dim=-1)
        if self.term_weights:
            weight, bias = self.term_weights[side]
            lexical = lexical * (hidden[:, 1:] @ weight.T + bias)
        agg = fold((lexical * keep).max(1).values, self.agg_dim)
        cls = hidden[:, 0]
        if self.projection:
            weight, bias = self.projection[side]
            cls = cls @ weight.T + bias
        return torch.cat([agg, cls], dim=1)

    def _model_output(self, model, input_ids, mask):
        out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[-1], out.logits


def _linear_heads(model: str, names: tuple[str, ...], device) -> dict | None:
    """A tevatron ``LinearPooler`` saved beside the checkpoint: ``{"q": (W, b), "p": (W, b)}``
    (tied heads share one), or None when the directory has none."""
    torch = require("torch", "models")
    folder = Path(resolve_model_path(model))
    path = next((folder / n for n in names if (folder / n).is_file()), None)
    if path is None:
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        q = (state["linear_q.weight"], state["linear_q.bias"])
    except KeyError:
        raise InvalidInput(f"{path} is not a linear pooler (no linear_q.weight / linear_q.bias)") from None
    p = (state.get("linear_p.weight", q[0]), state.get("linear_p.bias", q[1]))
    log.info("aggretriever: %s loaded from %s", path.stem, folder)
    return {side: tuple(t.float().to(device) for t in pair) for side, pair in (("q", q), ("p", p))}
