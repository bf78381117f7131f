"""BERT's WordPiece on normalized text, compiled: the tokenizer a GPU cross-encoder waits on.

The Rust tokenizer spends its time per text on normalized-string bookkeeping and a String
per token, and its ids come back as Python lists, which must then be turned into arrays. For text already normalized, with every character the
pre-tokenizer splits on turned into ASCII spaces around it (:mod:`rerank.text_ids` does that),
the pre-tokenizer and WordPiece are simple enough to run as one numba loop over the UTF-8
bytes of all texts at once, in parallel, writing ids straight into an int64 array:

- words are runs of characters between spaces and ASCII punctuation; each punctuation
  character is a word of its own (``BertPreTokenizer``);
- each word is split greedily into the longest vocabulary entries, ``##`` entries after the
  first; a word with a piece not in the vocabulary, or longer than
  ``max_input_chars_per_word``, becomes ``[UNK]`` (``WordPiece``).

Vocabulary entries live in a trie (children sorted by character, searched by bisection) with
two roots, one for word starts and one for ``##`` continuations, so the longest match is one
walk. :func:`WordPieceKernel.from_spec` returns ``None`` for any tokenizer that is not exactly
this shape, and the caller keeps the Rust tokenizer; tests compare the two on every ASCII
character, on Unicode text and on SciFact-like text.
"""

from __future__ import annotations

import threading

import numpy as np

from cascade.retrieval.compiled import AVAILABLE, jit, parallel, prange

#: One parallel kernel at a time: numba's fallback threading layer (workqueue, where neither
#: TBB nor OpenMP is installed) aborts the process on concurrent parallel calls, and a server
#: or the GPU reranker's tokenizing workers call from several threads. The kernel already
#: uses every core, so waiting costs little.
_PARALLEL_CALL = threading.Lock()

#: ASCII punctuation, each character a word of its own for BertPreTokenizer.
_PUNCT = np.zeros(256, dtype=np.bool_)  # indexed by any byte of UTF-8 text
_PUNCT[[*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127)]] = True
_SPACE = 32


class WordPieceKernel:
    """Token ids of normalized texts, as BertPreTokenizer + WordPiece give them.

    Build with :meth:`from_spec`; call :meth:`encode`.
    """

    def __init__(self, vocab: dict[str, int], unk_id: int, prefix: str = "##", max_chars: int = 100):
        self.unk_id, self.max_chars = unk_id, max_chars
        # node 0 is the root for word starts, node 1 the root for continuations
        children: list[dict[int, int]] = [{}, {}]
        ids = [-1, -1]
        for token, token_id in vocab.items():
            root, text = (1, token[len(prefix) :]) if token.startswith(prefix) else (0, token)
            if not text:
                continue
            node = root
            for byte in text.encode("utf-8"):
                nxt = children[node].get(byte)
                if nxt is None:
                    nxt = children[node][byte] = len(children)
                    children.append({})
                    ids.append(-1)
                node = nxt
            ids[node] = token_id
        counts = np.fromiter((len(c) for c in children), dtype=np.int64, count=len(children))
        self.first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        pairs = [sorted(c.items()) for c in children]
        self.chars = np.fromiter((b for p in pairs for b, _ in p), dtype=np.uint8, count=int(counts.sum()))
        self.nodes = np.fromiter((n for p in pairs for _, n in p), dtype=np.int64, count=int(counts.sum()))
        self.ids = np.asarray(ids, dtype=np.int64)

    @classmethod
    def from_spec(cls, spec: dict) -> WordPieceKernel | None:
        """A kernel for a tokenizer JSON (``Tokenizer.to_str()``) with a cleaning
        BertNormalizer, BertPreTokenizer and WordPiece; ``None`` for anything else."""
        if not AVAILABLE:
            return None
        model, normalizer, pre = spec.get("model") or {}, spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
        if (model.get("type") != "WordPiece" or pre.get("type") != "BertPreTokenizer"
                or normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True)):  # fmt: skip
            return None
        vocab = model["vocab"]
        if model.get("unk_token") not in vocab:
            return None
        return cls(vocab, vocab[model["unk_token"]], model.get("continuing_subword_prefix", "##"),
                   int(model.get("max_input_chars_per_word", 100)))  # fmt: skip

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids of normalized texts (no control characters, words apart: ASCII spaces or
        punctuation between them): ``(pool, starts, lengths)``, text ``i`` being
        ``pool[starts[i]:][:lengths[i]]``."""
        lengths = np.fromiter((len(t) if t.isascii() else len(t.encode("utf-8")) for t in texts),
                              dtype=np.int64, count=len(texts))  # fmt: skip
        starts = np.cumsum(lengths) - lengths
        data = np.frombuffer("".join(texts).encode("utf-8"), dtype=np.uint8)
        # a text has at most one token per byte: each text writes inside its own span, then
        # the spans are packed (a pool as long as the tokens, not the bytes, to copy and gather from)
        spans = np.empty(len(data), dtype=np.int32)
        counts = np.zeros(len(texts), dtype=np.int64)
        with _PARALLEL_CALL:
            _tokenize(data, starts, lengths, self.first, self.chars, self.nodes, self.ids, _PUNCT,
                      self.unk_id, self.max_chars, spans, counts)  # fmt: skip
        packed = np.cumsum(counts) - counts
        pool = np.empty(int(counts.sum()), dtype=np.int64)
        _pack(spans, starts, counts, packed, pool)
        return pool, packed, counts


@jit
def _child(first, chars, nodes, node, byte):
    lo, hi = first[node], first[node + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if chars[mid] < byte:
            lo = mid + 1
        else:
            hi = mid
    if lo < first[node + 1] and chars[lo] == byte:
        return nodes[lo]
    return -1


@jit
def _chars(data, begin, end):
    """UTF-8 characters in ``data[begin:end]``: every byte but continuation bytes."""
    n = 0
    for pos in range(begin, end):
        n += (data[pos] & 0xC0) != 0x80
    return n


@jit
def _word(data, begin, end, first, chars, nodes, ids, unk_id, max_chars, out, at):
    """Write the word ``data[begin:end]``'s pieces at ``out[at:]``; returns the new end."""
    if end - begin > max_chars and _chars(data, begin, end) > max_chars:
        out[at] = unk_id
        return at + 1
    start, written = begin, at
    while start < end:
        node = 0 if start == begin else 1
        best_id, best_end = -1, start
        for pos in range(start, end):
            node = _child(first, chars, nodes, node, data[pos])
            if node < 0:
                break
            if ids[node] >= 0:
                best_id, best_end = ids[node], pos + 1
        if best_id < 0:  # a piece not in the vocabulary: the whole word is unknown
            out[at] = unk_id
            return at + 1
        out[written] = best_id
        written += 1
        start = best_end
    return written


@jit
def _pack(spans, starts, counts, packed, pool):
    for t in range(len(starts)):
        pool[packed[t] : packed[t] + counts[t]] = spans[starts[t] : starts[t] + counts[t]]


@parallel
def _tokenize(data, starts, lengths, first, chars, nodes, ids, punct, unk_id, max_chars, out, counts):
    for t in prange(len(starts)):
        pos, end, at = starts[t], starts[t] + lengths[t], starts[t]
        while pos < end:
            byte = data[pos]
            if byte == _SPACE:
                pos += 1
                continue
            stop = pos + 1
            if not punct[byte]:
                while stop < end and data[stop] != _SPACE and not punct[data[stop]]:
                    stop += 1
            at = _word(data, pos, stop, first, chars, nodes, ids, unk_id, max_chars, out, at)
            pos = stop
        counts[t] = at - starts[t]
