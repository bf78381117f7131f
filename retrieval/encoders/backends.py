"""Dense encoder backends, found by name: which class turns texts into one vector each.

``transformers`` runs a local checkpoint (:class:`.dense.DenseEncoder`, encoders and decoder
LLMs alike); ``aggretriever`` is the pooling of that name over a masked-LM checkpoint
(:class:`.aggretriever.AggretrieverEncoder`); ``openai`` calls an OpenAI-compatible
embeddings endpoint (:class:`.remote.RemoteEncoder`). The backend follows from the settings
a retriever is given, never from a guess: a model named ``openai:URL#NAME`` is remote, a
``pooling`` in :data:`.dense.HEAD_POOLINGS` names its own backend, anything else is local.
"""

from __future__ import annotations

from typing import Any

from cascade.retrieval.models import DEFAULT_DENSE_MODEL
from cascade.retrieval.registry import Registry

from .dense import HEAD_POOLINGS, EncoderConfig
from .remote import RemoteEncoderConfig, is_remote_model

DENSE_ENCODERS = Registry(
    "dense encoder backend",
    {
        "transformers": "cascade.retrieval.encoders.dense:DenseEncoder",
        "aggretriever": "cascade.retrieval.encoders.aggretriever:AggretrieverEncoder",
        "openai": "cascade.retrieval.encoders.remote:RemoteEncoder",
    },
)


def backend_name(model: str, pooling: str | None = None) -> str:
    """The :data:`DENSE_ENCODERS` entry for a model name and pooling setting."""
    if is_remote_model(model):
        return "openai"
    if pooling in HEAD_POOLINGS:
        return pooling
    return "transformers"


def dense_encoder(model: str = DEFAULT_DENSE_MODEL, **kwargs: Any):
    """Build the encoder for ``model`` and settings (the :class:`.dense.DenseEncoder` vocabulary).

    Raises:
        InvalidInput: bad settings; NotFound: a local model that cannot be loaded.
    """
    return DENSE_ENCODERS.get(backend_name(model, kwargs.get("pooling")))(model, **kwargs)


def encoder_config_from_json(data: dict[str, Any]) -> EncoderConfig | RemoteEncoderConfig:
    """The encoder config recorded in an index manifest."""
    if is_remote_model(data.get("model", "")):
        return RemoteEncoderConfig.from_json(data)
    return EncoderConfig.from_json(data)


def encoder_from_config(config: EncoderConfig | RemoteEncoderConfig, **runtime: Any):
    """Rebuild the encoder an index was built with (``runtime``: device, dtype, show_progress...)."""
    cls = DENSE_ENCODERS.get(backend_name(config.model, getattr(config, "pooling", None)))
    return cls.from_config(config, **runtime)
