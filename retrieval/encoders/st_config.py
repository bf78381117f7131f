"""Read a sentence-transformers model's own settings, so our encoder matches what ST does.

A sentence-transformers directory declares its pipeline in ``modules.json`` (Transformer ->
Pooling -> Normalize), its pooling in ``1_Pooling/config.json``, its maximum length in
``sentence_bert_config.json`` and its prompts in ``config_sentence_transformers.json``.
A plain Hugging Face model has none of these and takes explicit settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.models import load_error

log = logging.getLogger(__name__)

# Old configs flag each mode with a boolean; newer ones name it in "pooling_mode".
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def read_model_json(model: str, name: str) -> dict | list | None:
    """A JSON file of a local model directory or a hub repository; None when it has none.

    Raises:
        NotFound: a hub id that cannot be reached (no network) or does not exist.
    """
    path = Path(model) / name
    if Path(model).is_dir():
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(model, name)).read_text())
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: no network, nothing cached
        raise load_error(model, e) from None
    except EntryNotFoundError:
        return None
    except Exception as e:  # repository missing, gated, bad id: all mean "cannot load"
        raise load_error(model, e) from None


def sentence_transformers_settings(model: str) -> dict[str, Any]:
    """Encoder settings declared by a sentence-transformers model; ``{}`` for a plain HF model.

    Returns:
        A dict with any of ``subfolder``, ``pooling``, ``normalize``, ``max_length``,
        ``do_lower_case``, ``query_prompt``, ``document_prompt``.

    Raises:
        InvalidInput: the model uses a module this encoder does not implement (a Dense head,
            several pooling modes concatenated, pooling that excludes the prompt).
    """
    modules = read_model_json(model, "modules.json")
    if not modules:
        return {}
    settings: dict[str, Any] = {"normalize": False}
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        path = module.get("path", "")
        if kind not in _SUPPORTED_MODULES:
            raise InvalidInput(
                f"model {model!r} has a {kind!r} module; the dense encoder supports "
                f"{', '.join(_SUPPORTED_MODULES)}"
            )
        if kind == "Transformer":
            settings["subfolder"] = path
            cfg = read_model_json(model, f"{path}/sentence_bert_config.json" if path else "sentence_bert_config.json")
            cfg = cfg or {}
            if cfg.get("max_seq_length"):
                settings["max_length"] = int(cfg["max_seq_length"])
            settings["do_lower_case"] = bool(cfg.get("do_lower_case", False))
        elif kind == "Pooling":
            settings["pooling"] = _pooling_mode(model, read_model_json(model, f"{path}/config.json") or {})
        else:
            settings["normalize"] = True
    prompts = (read_model_json(model, "config_sentence_transformers.json") or {}).get("prompts") or {}
    if prompts.get("query"):
        settings["query_prompt"] = prompts["query"]
    # the order sentence-transformers' encode_document tries
    for name in ("document", "passage", "corpus"):
        if prompts.get(name):
            settings["document_prompt"] = prompts[name]
            break
    return settings


def _pooling_mode(model: str, cfg: dict) -> str:
    if "pooling_mode" in cfg:
        mode = cfg["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        modes = [m for key, m in _LEGACY_POOLING.items() if cfg.get(key)] or ["mean"]
    if len(modes) != 1:
        raise InvalidInput(f"model {model!r} concatenates pooling modes {modes}; only one mode is supported")
    if cfg.get("include_prompt", True) is False:
        raise InvalidInput(f"model {model!r} pools without its prompt tokens; that is not supported")
    return modes[0]
