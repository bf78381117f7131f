"""The served models and the pure transforms of the model endpoints.

:class:`ModelCatalog` resolves the ``model`` a request names (an alias ``cascade serve`` was
started with, that alias's checkpoint, or, as before aliases existed, an allowed embedding model
or a reranker family) to what the engine loads. The functions below are the wire formats' math,
kept out of the routes: Matryoshka truncation, Cohere's quantized embedding types, OpenAI's
base64 floats, and cutting a document to a number of tokens.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cascade.rerank.registry import RERANKERS
from cascade.retrieval.errors import InvalidInput, NotFound

ModelKind = Literal["embedding", "sparse-embedding", "reranking"]


@dataclass(frozen=True)
class ServedModel:
    """A model a request may name.

    Attributes:
        id: the name requests use (an alias, or a legacy embedding model / reranker family).
        kind: ``embedding`` (dense), ``sparse-embedding`` (SPLADE) or ``reranking``.
        checkpoint: what is loaded (hub id or directory); ``None`` for a reranker family
            served with its registry defaults.
        family: a reranker's family in :data:`cascade.rerank.registry.RERANKERS`.
        params: a reranker's constructor arguments.
    """

    id: str
    kind: ModelKind
    checkpoint: str | None
    family: str | None = None
    params: Mapping[str, Any] | None = None


class ModelCatalog:
    """Args:
    rerankers: alias -> (family, checkpoint).
    embedders, sparse_embedders: alias -> checkpoint.
    embedding_models: dense models allowed by their own name (the settings before aliases).
    reranker_params: constructor arguments of the reranker families named directly.

    A name that is not served is a :class:`NotFound` (404) naming the served models. A server
    started without aliases of that kind keeps the earlier answer, :class:`InvalidInput` (422),
    for ``/v1/rerank`` and ``/v1/embeddings`` clients that rely on it.
    """

    def __init__(
        self,
        rerankers: Mapping[str, tuple[str, str]] | None = None,
        embedders: Mapping[str, str] | None = None,
        sparse_embedders: Mapping[str, str] | None = None,
        embedding_models: Sequence[str] = (),
        reranker_params: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self.reranker_aliases = {a: (f, c) for a, (f, c) in (rerankers or {}).items()}
        self.embedders = dict(embedders or {})
        self.sparse_embedders = dict(sparse_embedders or {})
        self.embedding_models = list(embedding_models)
        self.reranker_params = {k: dict(v) for k, v in (reranker_params or {}).items()}

    # -- listing -------------------------------------------------------------------------

    def served(self) -> list[ServedModel]:
        """Every model listed by ``GET /v1/models``: aliases first, in the order given, then the
        embedding models allowed by name and the reranker families configured with params."""
        out = [ServedModel(a, "embedding", c) for a, c in self.embedders.items()]
        out += [ServedModel(a, "sparse-embedding", c) for a, c in self.sparse_embedders.items()]
        out += [
            ServedModel(a, "reranking", c, f, {"model": c}) for a, (f, c) in self.reranker_aliases.items()
        ]
        out += [ServedModel(m, "embedding", m) for m in self.embedding_models if m not in self.embedders]
        out += [
            ServedModel(f, "reranking", p.get("model"), f, p)
            for f, p in self.reranker_params.items()
            if f in RERANKERS and f not in self.reranker_aliases
        ]
        return out

    def get(self, name: str) -> ServedModel:
        """The listed model named ``name`` (its id or checkpoint). Raises: NotFound naming them."""
        for m in self.served():
            if name in (m.id, m.checkpoint):
                return m
        raise NotFound(f"model {name!r} is not served; served: {self._names(self.served())}")

    @staticmethod
    def _names(models: Sequence[ServedModel]) -> str:
        return (
            ", ".join(m.id if m.checkpoint in (None, m.id) else f"{m.id} ({m.checkpoint})" for m in models)
            or "none"
        )

    def _of_kind(self, kind: ModelKind) -> list[ServedModel]:
        return [m for m in self.served() if m.kind == kind]

    def default(self, kind: ModelKind) -> ServedModel:
        """The first served model of ``kind`` (TEI's one model, Cohere v1's missing ``model``).

        Raises: NotFound saying which ``cascade serve`` flag serves one.
        """
        served = self._of_kind(kind)
        if not served:
            flag = {"embedding": "--embedder ALIAS=CHECKPOINT", "sparse-embedding": "--sparse-embedder ALIAS=CHECKPOINT",
                    "reranking": "--reranker ALIAS=FAMILY:CHECKPOINT"}[kind]  # fmt: skip
            raise NotFound(f"no {kind} model is served; start `cascade serve {flag}`")
        return served[0]

    # -- resolution ----------------------------------------------------------------------

    def embedder(self, name: str | None) -> str:
        """The dense checkpoint for ``name``; ``None``: the first served (TEI's one model)."""
        name = self.default("embedding").id if name is None else name
        if name in self.embedders:
            return self.embedders[name]
        if name in self.embedders.values() or name in self.embedding_models:
            return name
        if not self.embedders:  # the answer of the releases before aliases
            raise InvalidInput(
                f"embedding model {name!r} is not served; available: {', '.join(self.embedding_models)}"
            )
        raise NotFound(
            f"embedding model {name!r} is not served; served: {self._names(self._of_kind('embedding'))}"
        )

    def sparse_embedder(self, name: str | None) -> str:
        """The SPLADE checkpoint for ``name``; ``None``: the first served."""
        name = self.default("sparse-embedding").id if name is None else name
        if name in self.sparse_embedders:
            return self.sparse_embedders[name]
        if name in self.sparse_embedders.values():
            return name
        raise NotFound(
            f"sparse embedding model {name!r} is not served; served: "
            f"{self._names(self._of_kind('sparse-embedding'))}"
        )

    def reranker(self, name: str | None) -> tuple[str, dict[str, Any]]:
        """(family, constructor params) for ``name``: an alias, an alias's checkpoint, or a family
        of the registry (with ``reranker_params``, as before aliases); ``None``: the first served."""
        name = self.default("reranking").id if name is None else name
        for alias, (family, checkpoint) in self.reranker_aliases.items():
            if name in (alias, checkpoint):
                return family, {"model": checkpoint}
        if name in RERANKERS:
            return name, dict(self.reranker_params.get(name, {}))
        families = ", ".join(RERANKERS.names())
        if not self.reranker_aliases:  # the answer of the releases before aliases
            raise InvalidInput(
                f"unknown reranker model {name!r}; installed: {families}"
                if families
                else f"no reranker is installed, so {name!r} is not available (rerankers register in RERANKERS)"
            )
        raise NotFound(
            f"reranking model {name!r} is not served; served: {self._names(self._of_kind('reranking'))} "
            f"(reranker families also accepted: {families})"
        )


# -- embeddings ------------------------------------------------------------------------------

EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]


def truncate_dimensions(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka: the first ``dimensions`` coordinates, L2-normalized again when ``normalize``.

    Raises:
        InvalidInput: ``dimensions`` above the model's width.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if dimensions is not None:
        if dimensions > vectors.shape[1]:
            raise InvalidInput(f"dimensions={dimensions} is above the model's width of {vectors.shape[1]}")
        vectors = vectors[:, :dimensions]
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def base64_floats(vector: np.ndarray) -> str:
    """OpenAI's ``encoding_format="base64"`` (and Cohere's ``base64``): the little-endian float32
    bytes of the vector, base64-encoded (what the clients decode with ``np.frombuffer``)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def quantize(vectors: np.ndarray, kind: EmbeddingType) -> list:
    """Cohere's embedding types, one list per vector.

    - ``float``: the floats.
    - ``int8``: signed, with a symmetric scale per vector: ``round(v * 127 / max|v|)`` in
      [-127, 127] (a zero vector stays zero). Cosine and dot-product order within one vector's
      scale are kept; scores across vectors are approximate, as with any int8 embedding.
    - ``uint8``: the ``int8`` values plus 128, in [1, 255].
    - ``ubinary``: one bit per dimension, 1 where the value is > 0, packed 8 dimensions a byte,
      first dimension in the highest bit (``numpy.packbits``), as Cohere and sentence-transformers
      pack them; a width not divisible by 8 is padded with 0 bits.
    - ``binary``: the ``ubinary`` bytes minus 128 (signed), as Cohere.
    - ``base64``: :func:`base64_floats` of each vector.
    """
    v = np.asarray(vectors, dtype=np.float32)
    if kind == "float":
        return v.tolist()
    if kind == "base64":
        return [base64_floats(row) for row in v]
    if kind in ("int8", "uint8"):
        peak = np.abs(v).max(axis=1, keepdims=True)
        q = np.rint(v * (127.0 / np.where(peak > 0, peak, 1.0))).clip(-127, 127).astype(np.int16)
        return (q + 128 if kind == "uint8" else q).tolist()
    if kind in ("ubinary", "binary"):
        bits = np.packbits(v > 0, axis=1).astype(np.int16)
        return (bits - 128 if kind == "binary" else bits).tolist()
    raise InvalidInput(f"unknown embedding type {kind!r}")


# -- token limits ----------------------------------------------------------------------------

_WORD = re.compile(r"\S+")


def truncate_to_tokens(texts: Sequence[str], max_tokens: int, tokenizer: Any | None) -> list[str]:
    """Each text cut after its first ``max_tokens`` tokens (Cohere's ``max_tokens_per_doc``).

    Tokens are the reranker's own tokenizer's (special tokens not counted), cut at the
    character where the last kept token ends, so the text keeps its original spelling; a
    reranker without a local tokenizer (e.g. one scoring on Ray replicas or an HTTP backend)
    counts whitespace-separated words instead.
    """
    if tokenizer is None:
        out = []
        for t in texts:
            ends = [m.end() for m in _WORD.finditer(t)]
            out.append(t[: ends[max_tokens - 1]] if len(ends) > max_tokens else t)
        return out
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        return [
            t[: offsets[max_tokens - 1][1]] if len(offsets) > max_tokens else t
            for t, offsets in zip(texts, enc["offset_mapping"], strict=True)
        ]
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [
        tokenizer.decode(i[:max_tokens]) if len(i) > max_tokens else t
        for t, i in zip(texts, ids, strict=True)
    ]


def check_lengths(lengths: Sequence[int], limit: int, what: str = "tokens") -> None:
    """For ``truncate=false`` (TEI) / ``truncate="NONE"`` (Cohere): refuse inputs over the limit.

    Raises:
        InvalidInput: naming the first input over ``limit``.
    """
    for i, n in enumerate(lengths):
        if n > limit:
            raise InvalidInput(
                f"input {i} has {n} {what}, above the model's limit of {limit}; "
                'send truncate=true (TEI) or truncate="END" (Cohere) to cut it'
            )


def prompt_for(
    name: str | None, side: str | None, config: Any, named_prompts: Callable[[], Mapping[str, str]]
) -> str:
    """The text put before each input.

    Args:
        name: a prompt of the model's sentence-transformers config (TEI's ``prompt_name``);
            ``query`` and ``document``/``passage`` fall back to the encoder's query and document
            prompts.
        side: ``"query"`` or ``"document"`` (Cohere's ``input_type``), when ``name`` is None.
        config: the encoder's config (``query_prompt``, ``document_prompt``).
        named_prompts: reads the model's prompts by name (only called for another name).

    Raises:
        InvalidInput: a prompt name the model does not declare.
    """
    if name is None:
        if side is None:
            return ""
        return getattr(config, "query_prompt" if side == "query" else "document_prompt", "")
    prompts = dict(named_prompts())
    if name in prompts:
        return prompts[name]
    if name == "query":
        return getattr(config, "query_prompt", "")
    if name in ("document", "passage", "corpus"):
        return getattr(config, "document_prompt", "")
    raise InvalidInput(f"unknown prompt_name {name!r}; the model declares: {', '.join(prompts) or 'none'}")
