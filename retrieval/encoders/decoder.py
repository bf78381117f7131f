"""What decoder-LLM embedders (E5-Mistral, NV-Embed, gte-Qwen2 style) need beyond an encoder.

A causal model sees each token only with the tokens before it, so the last token is the only
one that has read the whole text: such models pool the last token (or the mean) of a sequence
that ends with the end-of-sequence token, and batches are padded on the left so that every
row's last token sits in the last column. Their rotary position embeddings (RoPE) can be
stretched past the trained length without training (LongEmbed, Zhu et al. 2024):

- ``linear``: position interpolation (Chen et al. 2023) divides positions by the factor
  (transformers' ``rope_type: linear``);
- ``ntk``: NTK-aware scaling raises the rotary base to ``theta * factor ** (d / (d - 2))``
  (``d`` the rotary dimension), which keeps the fast-turning dimensions as trained and
  stretches the slow ones; written into the config's ``rope_theta``.

transformers' ``dynamic`` NTK is refused: it rescales by the longest sequence the model has
seen so far, so a text's vector would depend on what was encoded before it.
"""

from __future__ import annotations

from typing import Any

from cascade.retrieval.errors import InvalidInput, require

#: RoPE scalings an encoder may ask for: position interpolation and (static) NTK-aware scaling.
ROPE_TYPES = ("linear", "ntk")


def check_rope_scaling(spec: Any) -> dict[str, Any] | None:
    """Validate a ``{"rope_type": "linear"|"ntk", "factor": F}`` setting (``"type"`` is read
    as ``"rope_type"``, the older transformers spelling); returns it in the canonical form.

    Raises:
        InvalidInput: not a mapping, an unknown type, or a factor that is not a number >= 1.
    """
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise InvalidInput(
            f"rope_scaling must be a mapping like {{'rope_type': 'linear', 'factor': 4}}, got {spec!r}"
        )
    unknown = set(spec) - {"rope_type", "type", "factor"}
    if unknown:
        raise InvalidInput(f"unknown rope_scaling keys {sorted(unknown)}; valid: rope_type, factor")
    rope_type = spec.get("rope_type", spec.get("type"))
    if rope_type == "dynamic":
        raise InvalidInput(
            "rope_scaling type 'dynamic' makes a vector depend on the texts encoded before it; "
            "use 'ntk' (static NTK-aware scaling) or 'linear'"
        )
    if rope_type not in ROPE_TYPES:
        raise InvalidInput(
            f"rope_scaling type {rope_type!r} is not supported; valid: {', '.join(ROPE_TYPES)}"
        )
    factor = spec.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
        raise InvalidInput(f"rope_scaling factor must be a number >= 1, got {factor!r}")
    return {"rope_type": rope_type, "factor": float(factor)}


def apply_rope_scaling(config, spec: dict[str, Any]) -> None:
    """Write a (checked) RoPE scaling into a transformers model config, in place.

    transformers 5 keeps RoPE settings in ``config.rope_parameters`` (with ``rope_theta``);
    4.x in ``config.rope_scaling`` beside ``config.rope_theta``.

    Raises:
        InvalidInput: the model has no rotary position embeddings.
    """
    params = getattr(config, "rope_parameters", None)
    theta = params.get("rope_theta") if params is not None else getattr(config, "rope_theta", None)
    if theta is None:
        raise InvalidInput(f"a {config.model_type} model has no rotary position embeddings to scale")
    factor = spec["factor"]
    if spec["rope_type"] == "ntk":
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        partial = (params or {}).get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
        dim = int(head * partial)
        theta = theta * factor ** (dim / (dim - 2))
        update = {"rope_theta": theta}
    else:
        update = {"rope_type": "linear", "factor": factor}
    if params is not None:
        config.rope_parameters = {**params, **update}
    elif spec["rope_type"] == "ntk":
        config.rope_theta = theta
    else:
        config.rope_scaling = {**update, "type": "linear"}


def is_decoder_only(config) -> bool:
    """A causal language model (Llama, Qwen2, Mistral, GPT-2...), not an encoder such as BERT
    (which transformers also lists as a causal LM) nor an encoder-decoder."""
    require("transformers", "models")
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None)
    return (
        not getattr(config, "is_encoder_decoder", False)
        and kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )
