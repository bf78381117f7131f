"""Encoder speed benchmarks of the learned-sparse and late-interaction families.

- ``splade-encode``: our SPLADE document encoder at its default dtype (bf16 on CPUs with bf16
  matrix instructions, see :func:`retrieval.models.resolve_dtype`) against sentence-transformers'
  ``SparseEncoder.encode_document`` on the same checkpoint, texts, max length, device and
  thread count, at fp32 (its default) and at bf16 (the model cast with ``.to``), each at the
  best of a batch-size sweep. Also ours at fp32 (the gain of bf16 alone), and parity against
  the reference at the same dtype: the share of documents with the same active terms and the
  largest weight difference.
- ``colbert-encode``: our late-interaction token encoder (the plaid bench's multi-vector
  model: MiniLM token vectors through a seeded random orthonormal projection) at its default
  dtype against PyLate's ``ColBERT.encode`` at fp32 when ``pylate`` is installed, else against
  our own encoder at fp32 (the reference's batch size swept either way); docs/s, their ratio
  and the largest token-vector difference to our fp32 output.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cascade.eval.bench import best_of_sweep, race, synced, version, versions
from cascade.eval.benchmarks.dense import one_device
from cascade.eval.datasets import load_dataset
from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.models import DEFAULT_DENSE_MODEL, dtype_name, resolve_model_path

log = logging.getLogger(__name__)

#: the references' batch sizes swept (sentence-transformers' default: 32)
BATCH_SIZES = (16, 32, 64, 128, 256)

TIMING = "fastest of {rounds} rounds, contenders in turn, after a warm-up; one device each"


def default_splade_model() -> Path:
    """The shared offline SPLADE checkpoint: ``{shared}/models/splade-tiny`` (``$CASCADE_SHARED``,
    else ``../shared`` beside the project, as the reproduction matrix finds it)."""
    from cascade.eval.reproduce import shared_dir

    return shared_dir() / "models" / "splade-tiny"


def _texts(dataset_dir: Path, num_docs: int, all_docs: bool) -> list[str]:
    if num_docs < 1:
        raise InvalidInput(f"num_docs must be >= 1, got {num_docs}")
    ds = load_dataset(dataset_dir, "test")
    docs = ds.corpus() if all_docs else itertools.islice(ds.corpus(), num_docs)
    return [d.contents for d in docs]


def _row(name: str, seconds: float, n: int, **extra) -> dict:
    return {"name": name, **extra, "seconds": round(seconds, 3), "docs_per_s": round(n / seconds, 1)}


# -- splade-encode ---------------------------------------------------------------------------


def logits_gb(
    tokenizer, texts: list[str], batch_size: int, max_length: int, vocab: int, itemsize: int
) -> float:
    """Peak GB of sentence-transformers' SPLADE forward at a batch size, estimated: it keeps
    the (batch x tokens x vocabulary) MLM logits and one masked copy of them, over batches of
    texts sorted by character length, longest first, as its ``encode`` cuts them."""
    lengths = np.array(
        [len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    )
    order = np.argsort([-len(t) for t in texts], kind="stable")
    worst = max(
        len(c) * int(lengths[c].max())
        for c in np.array_split(order, range(batch_size, len(order), batch_size))
    )
    return 2 * worst * vocab * itemsize / 1e9


def _to_csr(tensor) -> sp.csr_matrix:
    """A sentence-transformers sparse (COO) output as float32 CSR, zeros dropped, indices sorted."""
    t = tensor.coalesce().cpu()
    idx, val = t.indices().numpy(), t.values().float().numpy()
    out = sp.csr_matrix((val, (idx[0], idx[1])), shape=tuple(t.shape), dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def sparse_parity(ours: sp.csr_matrix, ref: sp.csr_matrix) -> dict:
    """Share of rows with the same active terms, and the largest weight difference (a term
    active on one side only counts with its whole weight)."""
    same = sum(np.array_equal(ours[i].indices, ref[i].indices) for i in range(ours.shape[0]))
    diff = abs(ours - ref)
    return {"docs": int(ours.shape[0]), "same_terms": round(same / ours.shape[0], 4),
            "max_abs_diff": float(diff.max()) if diff.nnz else 0.0}  # fmt: skip


def splade_encode(dataset_dir: Path, device: str | None = None, num_docs: int = 1000, all_docs: bool = False,
                  model: str | None = None, dtype: str | None = None,
                  batch_sizes: list[int] | tuple[int, ...] = BATCH_SIZES, rounds: int = 3,
                  threads: int = 2, parity_docs: int = 32, max_logits_gb: float = 6.0,
                  plot: Path | None = None, **_) -> dict:  # fmt: skip
    """``cascade bench splade-encode``: docs/s of our SPLADE encoder and sentence-transformers'.

    Args:
        num_docs: the first N documents (``all_docs`` for the whole corpus).
        model: a SPLADE masked-LM checkpoint (default: :func:`default_splade_model`).
        dtype: ours (``auto``/None: bf16 where the CPU has bf16 matrix instructions).
        batch_sizes: the reference's batch sizes, swept at each dtype; its best is its figure.
            Ours batches by tokens (its defaults).
        rounds: timed runs of each, taking turns; the fastest of each counts.
        threads: torch CPU threads, the same for all.
        parity_docs: the longest N documents (so truncation is checked too) for the parity figures.
        max_logits_gb: reference batch sizes whose logits would need more memory than this
            (:func:`logits_gb`) are not run, and are listed as skipped. The default keeps its
            default batch size (32) at fp32 for any text up to 512 tokens over a 30k vocabulary
            (4 GB), and spares a 24 GB machine shared with other work.
        plot: docs/s against the reference's batch size, ours as lines.
    """
    path = Path(model) if model is not None else default_splade_model()
    if not (path / "config.json").is_file() and model is None:
        raise InvalidInput(f"no SPLADE model at {path}: pass --opt model=DIR (or set CASCADE_SHARED)")
    path = resolve_model_path(str(path))
    torch = require("torch", "models")
    st = require("sentence_transformers", "models")
    from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder, model_max_length

    torch.set_num_threads(threads)
    texts = _texts(dataset_dir, num_docs, all_docs)
    dev = one_device(device)
    ours = SpladeEncoder(SpladeConfig(model=path, device=dev, dtype=dtype))
    ours32 = (
        ours
        if ours.dtype == torch.float32
        else SpladeEncoder(SpladeConfig(model=path, device=dev, dtype="float32"))
    )
    refs = {"fp32": st.SparseEncoder(path, device=str(ours.device)),
            "bf16": st.SparseEncoder(path, device=str(ours.device)).to(torch.bfloat16)}  # fmt: skip
    tok, mlm = ours._load(path)  # the encoder's own (cached) tokenizer and model: its length limit
    max_length = model_max_length(tok, mlm)
    for ref in refs.values():  # the same truncation on every side
        if ref.max_seq_length != max_length:
            log.warning("SparseEncoder max_seq_length %s set to ours, %s", ref.max_seq_length, max_length)
            ref.max_seq_length = max_length
    vocab = len(ours.vocab)
    sizes, skipped = {}, {}
    for key, itemsize in (("fp32", 4), ("bf16", 2)):
        est = {bs: logits_gb(tok, texts, bs, max_length, vocab, itemsize) for bs in batch_sizes}
        sizes[key] = [bs for bs in batch_sizes if est[bs] <= max_logits_gb]
        skipped[key] = {str(bs): round(gb, 1) for bs, gb in est.items() if gb > max_logits_gb}
        if not sizes[key]:
            raise InvalidInput(f"every reference batch size needs more than max_logits_gb={max_logits_gb} GB "
                               f"at {key}; pass smaller batch_sizes or a larger max_logits_gb")  # fmt: skip

    sync = synced(ours.device)
    for enc in {id(ours): ours, id(ours32): ours32}.values():  # warm-up: kernels, allocator
        enc.encode_documents(texts[:32])
    for ref in refs.values():
        ref.encode_document(texts[:32], batch_size=16)
    contenders = {"ours": sync(lambda: ours.encode_documents(texts))}
    if ours32 is not ours:
        contenders["ours-fp32"] = sync(lambda: ours32.encode_documents(texts))

    def st_encode(ref, bs):
        return sync(lambda: ref.encode_document(texts, batch_size=bs, show_progress_bar=False))

    for key, ref in refs.items():
        contenders.update({f"{key}-{bs}": st_encode(ref, bs) for bs in sizes[key]})
    timed = race(contenders, rounds=rounds)
    n = len(texts)
    ours_s = timed["ours"][0]
    ours32_s = timed["ours-fp32" if ours32 is not ours else "ours"][0]

    # parity at the same dtype, on the longest documents
    probe = sorted(texts, key=len, reverse=True)[:parity_docs]
    same_dtype = {"float32": (ours32, refs["fp32"])}
    if ours.dtype == torch.bfloat16:
        same_dtype["bfloat16"] = (ours, refs["bf16"])
    parity = {
        name: sparse_parity(enc.encode_documents(probe), _to_csr(ref.encode_document(probe, batch_size=16)))
        for name, (enc, ref) in same_dtype.items()
    }

    baselines, best_s = {}, {}
    for key, dt, how in (("fp32", "float32", "float32 (its default)"),
                         ("bf16", "bfloat16", "model.to(torch.bfloat16)")):  # fmt: skip
        b = best_of_sweep(timed, f"{key}-", sizes[key], n)
        best, best_s[key] = b["batch_size"], b["seconds"]
        baselines[key] = _row(
            f"sentence-transformers SparseEncoder.encode_document ({dt})",
            b["seconds"],
            n,
            version=version("sentence-transformers"),
            dtype=dt,
            setting=f"{how}, batch_size={best}, the best of a sweep over {sizes[key]} (its default: 32); "
            f"max_seq_length={max_length}",
            batch_size=best,
            sweep_docs_per_s=b["sweep"],
            sweep_skipped_logits_gb=skipped[key],
        )
    result = {
        "benchmark": "splade-encode",
        "dataset": str(dataset_dir),
        "model": str(path),
        "num_docs": n,
        "device": str(ours.device),
        "dtype": dtype_name(ours.dtype),
        "threads": threads,
        "max_length": max_length,
        "timing": TIMING.format(rounds=rounds),
        "versions": versions("torch", "transformers", "sentence-transformers"),
        "ours": _row(
            f"cascade SpladeEncoder ({dtype_name(ours.dtype)}, length-sorted token-budget batches, "
            "vocabulary-chunked max-pool)",
            ours_s,
            n,
            version=version("cascade-search"),
            dtype=dtype_name(ours.dtype),
            batch_size=ours.config.batch_size,
            token_budget=ours.config.token_budget,
        ),
        "ours_fp32": _row("cascade SpladeEncoder (float32)", ours32_s, n, dtype="float32"),
        "baseline": baselines["fp32"],
        # the same shape as dense-encode and rerank: every reference precision, by dtype name
        "baselines": {"float32": baselines["fp32"], "bfloat16": baselines["bf16"]},
        "ratio": round(best_s["fp32"] / ours_s, 3),
        "ratio_same_dtype": round(best_s["bf16" if ours.dtype == torch.bfloat16 else "fp32"] / ours_s, 3),
        "bf16_gain": round(ours32_s / ours_s, 3),
        "parity": parity,
    }
    if plot is not None:
        from cascade.eval.plots import line_chart

        series = {
            f"sentence-transformers {k}": [(bs, n / timed[f"{k}-{bs}"][0]) for bs in sizes[k]] for k in refs
        }
        xs = list(batch_sizes)
        series[f"cascade {result['dtype']}"] = [(bs, n / ours_s) for bs in xs]
        if ours32 is not ours:
            series["cascade float32"] = [(bs, n / ours32_s) for bs in xs]
        result["plots"] = [str(line_chart(plot, series, "sentence-transformers batch size", "documents/s",
                                          f"{Path(path).name} encode, {n} docs, {result['device']}",
                                          logx=True))]  # fmt: skip
    return result


# -- colbert-encode --------------------------------------------------------------------------


def _pylate_contenders(
    model: str, ours, projection_dim: int | None, projection_seed: int, texts, sizes, sync
):
    """PyLate's ColBERT at fp32 over the same transformer, its Dense layer set to our projection
    (PyLate adds its own ``[D]`` prefix and punctuation skiplist: its preprocessing, not ours)."""
    torch = require("torch", "models")
    from pylate import models

    from cascade.retrieval.encoders.colbert import random_orthonormal

    hidden = ours.transformer.config.hidden_size
    dim = projection_dim or hidden
    ref = models.ColBERT(model_name_or_path=resolve_model_path(model), device=str(ours.device),
                         embedding_size=dim, document_length=ours.config.doc_maxlen)  # fmt: skip
    w = (
        np.eye(hidden, dtype=np.float32)
        if projection_dim is None
        else random_orthonormal(hidden, dim, projection_seed)
    )
    with torch.no_grad():
        ref[1].linear.weight.copy_(torch.from_numpy(w))
    ref.encode(texts[:32], is_query=False, batch_size=16, show_progress_bar=False)
    setting = (f"models.ColBERT float32, Dense set to our projection, "
               f"document_length={ours.config.doc_maxlen}, its own [D] prefix and skiplist")  # fmt: skip

    def at(bs):
        return sync(lambda: ref.encode(texts, is_query=False, batch_size=bs, show_progress_bar=False))

    contenders = {f"ref-{bs}": at(bs) for bs in sizes}
    return "PyLate ColBERT.encode (float32)", version("pylate"), setting, contenders


def colbert_encode(dataset_dir: Path, device: str | None = None, num_docs: int = 1000, all_docs: bool = False,
                   model: str = DEFAULT_DENSE_MODEL, projection_dim: int | None = 128, dtype: str | None = None,
                   batch_sizes: list[int] | tuple[int, ...] = BATCH_SIZES, rounds: int = 3, threads: int = 2,
                   plot: Path | None = None, **_) -> dict:  # fmt: skip
    """``cascade bench colbert-encode``: docs/s of our token encoder against PyLate (fp32) or,
    without PyLate, against our encoder at fp32.

    Args:
        num_docs: the first N documents (``all_docs`` for the whole corpus).
        model / projection_dim: the plaid bench's multi-vector model (``tokens`` format,
            seeded orthonormal projection to 128 dims; None keeps the hidden size).
        dtype: ours (``auto``/None: bf16 where the CPU has bf16 matrix instructions).
        batch_sizes: the reference's batch sizes, swept; its best is its figure. Ours runs at
            its default batch size.
        rounds, threads, plot: as ``dense-encode``.
    """
    torch = require("torch", "models")
    from cascade.retrieval.encoders.colbert import ColBERTEncoder

    torch.set_num_threads(threads)
    texts = _texts(dataset_dir, num_docs, all_docs)
    dev = one_device(device)
    ours = ColBERTEncoder(model, format="tokens", device=dev, dtype=dtype, projection_dim=projection_dim)
    ours32 = ColBERTEncoder(
        model, format="tokens", device=dev, dtype="float32", projection_dim=projection_dim
    )
    sync = synced(ours.device)
    sizes = list(batch_sizes)
    if importlib.util.find_spec("pylate") is not None:
        name, ref_version, setting, contenders = _pylate_contenders(
            model, ours, projection_dim, 0, texts, sizes, sync
        )
    else:

        def at(bs):
            def run():
                ours32.batch_size = bs  # the contenders run one at a time
                return ours32.encode_documents(texts)

            return sync(run)

        name, ref_version = "cascade ColBERTEncoder fp32 (PyLate not installed)", version("cascade-search")
        setting = "our encoder at float32, the same model and texts"
        contenders = {f"ref-{bs}": at(bs) for bs in sizes}
    default_bs = ours.batch_size
    ours.encode_documents(texts[:32])  # warm-up: kernels, allocator
    ours32.encode_documents(texts[:32])
    timed = race({"ours": sync(lambda: ours.encode_documents(texts)), **contenders}, rounds=rounds)
    ours32.batch_size = default_bs
    n = len(texts)
    ours_s, got = timed["ours"]
    ref = best_of_sweep(timed, "ref-", sizes, n)
    best, ref_s = ref["batch_size"], ref["seconds"]
    want = got if ours.dtype == torch.float32 else ours32.encode_documents(texts)
    diff = float(np.abs(got.vectors - want.vectors).max()) if len(got.vectors) else 0.0
    result = {
        "benchmark": "colbert-encode",
        "dataset": str(dataset_dir),
        "model": model,
        "projection_dim": projection_dim,
        "num_docs": n,
        "num_token_vectors": int(len(got.vectors)),
        "device": str(ours.device),
        "dtype": dtype_name(ours.dtype),
        "threads": threads,
        "doc_maxlen": ours.config.doc_maxlen,
        "timing": TIMING.format(rounds=rounds),
        "versions": versions("torch", "transformers", "pylate"),
        "ours": _row(
            f"cascade ColBERTEncoder ({dtype_name(ours.dtype)}, length-sorted batches)",
            ours_s,
            n,
            version=version("cascade-search"),
            dtype=dtype_name(ours.dtype),
            batch_size=default_bs,
        ),
        "baseline": _row(
            name,
            ref_s,
            n,
            version=ref_version,
            dtype="float32",
            setting=f"{setting}; batch_size={best}, the best of a sweep over {sizes}",
            batch_size=best,
            sweep_docs_per_s=ref["sweep"],
        ),
        "ratio": round(ref_s / ours_s, 3),
        "max_abs_diff_vs_fp32": diff,
    }
    if plot is not None:
        from cascade.eval.plots import line_chart

        series = {name: [(int(bs), v) for bs, v in ref["sweep"].items()],
                  f"cascade {result['dtype']}": [(bs, round(n / ours_s, 1)) for bs in sizes]}  # fmt: skip
        result["plots"] = [str(line_chart(plot, series, "reference batch size", "documents/s",
                                          f"{Path(model).name} token vectors, {n} docs, {result['device']}",
                                          logx=True))]  # fmt: skip
    return result
