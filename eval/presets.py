"""Pipeline presets as data (``presets/NAME.yaml``) and the one resolver of a pipeline value.

Every surface resolves a pipeline here: the CLI (a preset name or a YAML/JSON file), the REST
API (a preset name or an inline spec object, never a server-side path) and the evaluation
code. So an unknown preset, an unknown family or a bad spec gets the same error everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cascade.rerank.registry import check_rerankers
from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.pipeline import PipelineSpec

PRESET_DIR = Path(__file__).with_name("presets")
_FILE_SUFFIXES = (".yaml", ".yml", ".json")


@cache
def presets() -> dict[str, dict[str, Any]]:
    """Preset name -> spec data, read once from ``presets/*.yaml`` (the name is the file's stem)."""
    out = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or data.get("name", path.stem) != path.stem:
            raise InvalidInput(f"{path}: a preset file holds one mapping whose name is the file's stem")
        out[path.stem] = data
    return out


def preset_names() -> list[str]:
    return sorted(presets())


def load_pipeline_file(path: str | Path) -> PipelineSpec:
    """A spec from a YAML or JSON file; its name defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"pipeline file {path} does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidInput(f"pipeline file {path} is not valid: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"pipeline file {path} must hold a mapping")
    return PipelineSpec.parse(data, name=data.get("name", path.stem))


def resolve_pipeline(
    value: str | Mapping[str, Any] | PipelineSpec | None,
    default: PipelineSpec | None = None,
    allow_files: bool = True,
) -> PipelineSpec:
    """A validated spec from a preset name, a spec mapping, or (``allow_files``) a YAML/JSON path.

    ``None`` gives ``default``. The REST API passes ``allow_files=False``: a request never names
    a file on the server.

    Raises:
        NotFound: an unknown preset name (the valid names are in the message).
        InvalidInput: an invalid spec, an unknown retriever or reranker family, a bad file.

    Example:
        >>> resolve_pipeline("bm25").retrievers[0].retriever
        'bm25'
    """
    if value is None:
        if default is None:
            raise InvalidInput("give a pipeline (a preset name or a spec object)")
        spec = default
    elif isinstance(value, PipelineSpec):
        spec = value
    elif isinstance(value, Mapping):
        spec = PipelineSpec.parse(dict(value))
    elif isinstance(value, str):
        if value in presets():
            spec = PipelineSpec.parse(presets()[value], name=value)
        elif allow_files and value.lower().endswith(_FILE_SUFFIXES):
            spec = load_pipeline_file(value)
        else:
            files = "; or a .yaml/.yml/.json pipeline file" if allow_files else ""
            raise NotFound(f"unknown pipeline preset {value!r}; valid: {', '.join(preset_names())}{files}")
    else:
        raise InvalidInput(f"pipeline must be a preset name or a spec object, got {type(value).__name__}")
    return check_rerankers(spec)
