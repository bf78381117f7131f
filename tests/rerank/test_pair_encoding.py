"""PairEncoder gives exactly the ids and type ids of the HF tokenizer's pair call."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from rerank_models import minilm_tokenizer  # noqa: E402

from cascade.rerank.pair_encoding import PairEncoder, longest_first  # noqa: E402

WORDS = (
    "cell protein gene cancer the of patients risk increased tumor mice expression "
    "immunohistochemistry pneumonoultramicroscopic hydroxychloroquinesulfate naïve café 10.5% (IL-6) β-catenin anti-inflammatory e.g. Ünïcödé 漢字 x\u00adray don't"
).split()


def _texts(rng, n, lo, hi, seps=(" ",)):
    out = []
    for _ in range(n):
        k = int(rng.integers(lo, hi))
        words = rng.choice(WORDS, size=k)
        out.append("".join(w + str(rng.choice(seps)) for w in words).strip(" "))
    return out


def _hf(tok, firsts, seconds, max_length):
    enc = tok(firsts, seconds, truncation="longest_first", max_length=max_length)
    return list(enc["input_ids"]), list(enc.get("token_type_ids") or [])


def _check(tok, firsts, seconds, max_length, **kw):
    enc = PairEncoder(tok, max_length, **kw)
    assert enc.template is not None  # the fast path ran, not the fallback
    got = enc.encode(firsts, seconds)
    ids, types = _hf(tok, firsts, seconds, max_length)
    assert got.ids() == ids
    assert got.lengths.tolist() == [len(x) for x in ids]
    # a batch of some rows, padded as the HF call pads them
    rows = np.arange(1, len(ids), 3)
    batch = got.batch(rows, tok.pad_token_id)
    ref = tok.pad({"input_ids": [ids[r] for r in rows], "token_type_ids": [types[r] for r in rows]} if types
                  else {"input_ids": [ids[r] for r in rows]}, return_tensors="np")  # fmt: skip
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        if name in ref:
            np.testing.assert_array_equal(batch[name], ref[name], err_msg=name)
    assert ("token_type_ids" in batch) == bool(types)
    return got


@pytest.mark.parametrize("chars_per_token", [1.0, 5.0])  # cuts mostly redone / mostly kept
@pytest.mark.parametrize("max_length", [12, 32, 64, 256])
def test_bert_pairs_equal_hf_call(max_length, chars_per_token):
    tok = minilm_tokenizer()
    rng = np.random.default_rng(max_length)
    firsts = _texts(rng, 60, 0, 40)  # long queries too: both sides get truncated
    seconds = _texts(rng, 60, 0, 400, seps=(" ", "  ", "\n", "\t", " \x1f", ", "))
    seconds[3] = seconds[5]  # a repeated document is tokenized once
    got = _check(tok, firsts, seconds, max_length, chars_per_token=chars_per_token)
    assert max(got.lengths) == max_length


def test_left_truncation_side():
    tok = minilm_tokenizer()
    tok.truncation_side = "left"
    rng = np.random.default_rng(1)
    _check(tok, _texts(rng, 30, 0, 30), _texts(rng, 30, 0, 200), 40)


def test_byte_level_bpe_roberta_template(tmp_path):
    """A RoBERTa-style tokenizer (<s> A </s></s> B </s>, no type ids) trained in the test."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(2)
    corpus = _texts(rng, 300, 5, 50)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>"]))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.model_input_names = ["input_ids", "attention_mask"]
    firsts, seconds = _texts(rng, 50, 0, 30), _texts(rng, 50, 0, 300, seps=(" ", "  ", ". "))
    enc = PairEncoder(tok, 48, chars_per_token=1.5, with_types=False)
    assert enc.template is not None and enc.template.num_special == 4
    got = enc.encode(firsts, seconds)
    assert got.pool_types is None
    assert got.ids() == _hf(tok, firsts, seconds, 48)[0]
    assert set(got.batch(np.arange(5), tok.pad_token_id)) == {"input_ids", "attention_mask"}


def test_longest_first_rule_against_tokenizer():
    """The vectorized rule, on every pair of lengths up to 12, against the tokenizer itself."""
    tok = minilm_tokenizer()
    cell, gene = tok.convert_tokens_to_ids(["cell", "gene"])
    for budget in (5, 6):
        la, lb = (grid.ravel() for grid in np.meshgrid(np.arange(13), np.arange(13)))
        keep_a, keep_b = longest_first(la, lb, budget)
        rows = tok([" ".join(["cell"] * a) for a in la], [" ".join(["gene"] * b) for b in lb],
                   truncation="longest_first", max_length=budget + 3)["input_ids"]  # fmt: skip
        assert keep_a.tolist() == [ids.count(cell) for ids in rows]
        assert keep_b.tolist() == [ids.count(gene) for ids in rows]


def _reference(tok):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    reference.no_padding(), reference.no_truncation()
    return lambda batch: [e.ids for e in reference.encode_batch(batch, add_special_tokens=False)]


def test_python_normalizer_and_compiled_wordpiece_equal_rust_tokenizer():
    """Texts normalized in Python and tokenized by the numba WordPiece must come out as the
    Rust tokenizer makes them: every ASCII character, added tokens, Unicode punctuation,
    spaces, accents, CJK, final sigma, long words."""
    pytest.importorskip("numba")
    from cascade.rerank.text_ids import TextIds

    tok = minilm_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<ctl>"]})  # matched before normalizing
    tok.add_tokens(["xyz-token"])  # matched after
    texts = TextIds(tok.backend_tokenizer)
    assert texts.kernel is not None  # BertNormalizer + WordPiece, numba installed: compiled path
    every_char = [f"Ab{chr(c)}cD x{chr(c)}{chr(c)}Y" for c in range(128)]
    added = ["a [SEP] b", "a [sep] b", "[MASK]x", "[MA\x01SK]", "x [CLS]", "[S\x7fEP] z", "Café [SEP]", "UPPER Case",
             "a <c\x01tl> b", "<CTL>", "x <ctl>", "XYZ-TOKEN y", "xyz-tok\x02en"]
    unicode = ["cd33’s role – “specific” — x\u00a0y\u3000z", "ΟΔΟΣ Σ σς İstanbul", "e\u0301te\u0301 naïve",
               "漢字テスト한국어", "soft\u00adhy\u200bphen \ufffd \u2603 😀 ∈≥±×µ", "β" * 60 + " " + "β" * 101,
               "a" * 100 + " " + "b" * 101, "pneumonoultramicroscopicsilicovolcanoconiosis ##ing ##"]
    rng = np.random.default_rng(4)
    alphabet = [chr(c) for c in [*range(32, 127), 0xe9, 0x3b2, 0x2013, 0x2019, 0xa0, 0x301, 0x4e2d, 0x3a3, 0xad, 0x85]]
    random = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 80)))) for _ in range(300)]
    mixed = _texts(rng, 40, 0, 60, seps=(" ", "\t", "\n", "\x0b", "\x1f", "\r\n", "\x00"))
    batch = every_char + added + unicode + random + mixed
    assert texts.ids(batch) == _reference(tok)(batch)
    taken = sum(texts._normalized(t) is not None for t in batch)
    assert taken > 0.9 * len(batch)  # nearly all went the compiled way


def test_without_numba_the_rust_tokenizer_takes_normalized_text():
    """No compiled kernel (numba missing): ASCII texts go to the Rust tokenizer without its
    normalizer, the rest to the full one; the ids stay the same."""
    from cascade.rerank.text_ids import TextIds

    tok = minilm_tokenizer()
    texts = TextIds(tok.backend_tokenizer)
    texts.kernel = None
    rng = np.random.default_rng(6)
    batch = _texts(rng, 60, 0, 80, seps=(" ", "\t", "\n", "\x01", ", ")) + ["a [SEP] b", "Ünïcödé β–x"]
    assert texts.ids(batch) == _reference(tok)(batch)
    assert texts._normalized("Ünïcödé") is None and texts._normalized("Tab\tX") == "tab x"


def test_compiled_wordpiece_on_scifact_like_text():
    """Real abstracts (the MiniLM vocabulary on biomedical English): the same ids."""
    from cascade.rerank.text_ids import TextIds

    tok = minilm_tokenizer()
    rng = np.random.default_rng(5)
    batch = _texts(rng, 200, 50, 300, seps=(" ", ", ", ". ", " (", ") ", "-", "/", "; "))
    got = TextIds(tok.backend_tokenizer).encode(batch)
    assert got.ids() == _reference(tok)(batch)


def test_mismatched_lengths_rejected():
    from cascade.retrieval.errors import InvalidInput

    with pytest.raises(InvalidInput, match="2 first texts but 1"):
        PairEncoder(minilm_tokenizer(), 32).encode(["a", "b"], ["c"])


def test_fallback_pair_call_batches_the_same():
    """Without a readable template the HF pair call is used; batches come out the same."""
    tok = minilm_tokenizer()
    rng = np.random.default_rng(3)
    firsts, seconds = _texts(rng, 20, 0, 20), _texts(rng, 20, 0, 100)
    fast = PairEncoder(tok, 40)
    slow = PairEncoder(tok, 40)
    slow.template = None
    a, b = fast.encode(firsts, seconds), slow.encode(firsts, seconds)
    assert b.pool_types is not None and a.ids() == b.ids()
    rows = np.arange(20)
    for name, arr in a.batch(rows, 0).items():
        np.testing.assert_array_equal(arr, b.batch(rows, 0)[name], err_msg=name)


def test_compiled_wordpiece_from_many_threads_on_workqueue_layer():
    """numba's workqueue layer aborts the process on concurrent parallel calls; a server
    tokenizes from several threads, so the kernel's calls must not overlap."""
    pytest.importorskip("numba")
    import os
    import subprocess
    import sys

    script = """
import sys
from concurrent.futures import ThreadPoolExecutor
from cascade.rerank.text_ids import TextIds
from rerank_models import minilm_tokenizer
texts = TextIds(minilm_tokenizer().backend_tokenizer)
batch = ["cell protein gene cancer expression " * 20 + str(i) for i in range(200)]
want = texts.ids(batch)
with ThreadPoolExecutor(4) as pool:
    got = list(pool.map(lambda _: texts.ids(batch), range(16)))
import numba
assert numba.threading_layer() == "workqueue", numba.threading_layer()
sys.exit(0 if all(g == want for g in got) else 3)
"""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
