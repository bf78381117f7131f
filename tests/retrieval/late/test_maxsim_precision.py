"""MaxSim's tensor-core path (GEMM and max in fp16/bf16, sums in fp32) against fp32 scoring."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _batch(rng, n, length, dim=16):
    x = rng.standard_normal((n, length, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    mask = np.arange(length)[None, :] < rng.integers(1, length + 1, n)[:, None]
    return torch.from_numpy(x), torch.from_numpy(mask)


def test_low_precision_maxsim_is_the_fp32_score_within_bf16_rounding():
    from cascade.retrieval.late.maxsim import maxsim_padded

    rng = np.random.default_rng(0)
    (q, qm), (d, dm) = _batch(rng, 3, 5), _batch(rng, 7, 9)
    exact = maxsim_padded(q, qm, d, dm)
    # fp32 inputs: the low-precision path is the same arithmetic
    torch.testing.assert_close(maxsim_padded(q, qm, d, dm, low_precision=True), exact)
    # bf16 inputs (8 mantissa bits): each of <= 5 maxima off by < 2^-7 of a unit-norm dot product
    low = maxsim_padded(q.bfloat16(), qm, d.bfloat16(), dm, low_precision=True)
    assert low.dtype == torch.float32
    assert float((low - exact).abs().max()) < 5 * 2**-7
    assert float((low - exact).abs().max()) > 0  # it did run in bf16


def test_tensor_core_scoring_needs_a_gpu():
    from cascade.retrieval.encoders.colbert import MultiVectors
    from cascade.retrieval.errors import InvalidInput
    from cascade.retrieval.late.maxsim import MaxSim

    docs = MultiVectors(np.eye(4, dtype=np.float16), np.array([0, 2, 4]))
    with pytest.raises(InvalidInput):
        MaxSim(docs, device="cpu", gemm_dtype="fp16")
    with pytest.raises(InvalidInput):
        MaxSim(docs, device="cpu", gemm_dtype="int8")
