"""``dtype``: what ``auto`` picks, the names it takes, and what an index records."""

import pytest

torch = pytest.importorskip("torch")

from cascade.retrieval import models  # noqa: E402
from cascade.retrieval.errors import InvalidInput  # noqa: E402
from cascade.retrieval.models import dtype_name, resolve_dtype  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags, want", [(("amx_bf16",), torch.bfloat16), (("avx512_bf16",), torch.bfloat16),
                                         ((), torch.float32)])  # fmt: skip
def test_auto_is_bf16_on_cpus_with_bf16_instructions_and_fp32_elsewhere(monkeypatch, flags, want):
    monkeypatch.setattr(models, "cpu_bf16_flags", lambda: flags)
    assert resolve_dtype(None, CPU) == resolve_dtype("auto", CPU) == want


def test_cpu_flags_are_read_from_cpuinfo():
    text = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    assert models.cpu_bf16_flags() == tuple(f for f in models.BF16_CPU_FLAGS if f in flags)


@pytest.mark.parametrize("name, want", [("float32", torch.float32), ("fp32", torch.float32),
                                        ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16),
                                        ("float16", torch.float16), ("fp16", torch.float16)])  # fmt: skip
def test_explicit_dtypes_are_taken_as_named(name, want):
    assert resolve_dtype(name, CPU) == want
    assert dtype_name(want) in ("float32", "bfloat16", "float16")


def test_an_unknown_dtype_is_a_one_line_error():
    with pytest.raises(InvalidInput, match="invalid dtype 'int8'; valid: auto, bf16"):
        resolve_dtype("int8", CPU)


def test_a_dense_index_records_the_dtype_it_was_encoded_in(tmp_path, monkeypatch):
    from dense_models import tiny_st_dir

    from cascade.retrieval.dense.retriever import DenseRetriever
    from cascade.retrieval.storage import read_index
    from cascade.retrieval.types import Document

    docs = [Document(str(i), f"document number {i} about topic {i % 3}") for i in range(12)]
    for flags, want in ((("avx512_bf16",), "bfloat16"), ((), "float32")):
        monkeypatch.setattr(models, "cpu_bf16_flags", lambda f=flags: f)
        built = DenseRetriever.build(docs, model=str(tiny_st_dir()), device="cpu", show_progress=False)
        built.save(tmp_path / want)
        manifest, _, _ = read_index(tmp_path / want, "dense", (1,))
        assert manifest.params["encode_dtype"] == want
        assert DenseRetriever.load(tmp_path / want).encode_dtype == want
    explicit = DenseRetriever.build(
        docs, model=str(tiny_st_dir()), device="cpu", dtype="float32", show_progress=False
    )
    assert explicit.encode_dtype == "float32"
