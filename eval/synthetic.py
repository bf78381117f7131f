"""Synthetic MS MARCO-shaped text, deterministic from a seed: corpora of any size for the
cost curves (``cascade bench scale``), where MS MARCO itself cannot be downloaded.

Passages follow MS MARCO's length distribution (a lognormal with mean about 56 and median about
50 words, clipped to [5, 250]) over a Zipfian vocabulary with topical structure: each passage
belongs to one of ``topics`` topics, and each of its words comes either from that topic (a
Zipfian distribution over the topic's own subset of the vocabulary, so a topic's words
co-occur) or from a global Zipfian background whose head is real common English (stop words
included, as in real text). The rest of the vocabulary is pronounceable syllable words, some
with English endings (-ing, -ed, -tion...) so stemming merges forms as it does in English,
and a few numbers. Sentences start capitalized and end with a period. Queries are 2-10 words
from the same topics.

Everything is lowercase ASCII letters, digits and ``.``/``,``: text on which Lucene's English
analyzer and ours (:mod:`cascade.retrieval.sparse.analysis`) give the same terms.

Passages are made in fixed blocks, each from its own random stream, so memory is bounded by
a block, a corpus of N passages is the first N of any larger one with the same seed, and
8.8M passages take minutes (numpy draws every word of a block at once).

Example:
    >>> spec = CorpusSpec(seed=0)
    >>> docs = list(itertools.islice(passages(spec, 1000), 3))   # doctest: +SKIP
    >>> write_beir(spec, 100_000, "synthetic-100k/")              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.progress import progress
from cascade.retrieval.types import Document, Query

log = logging.getLogger(__name__)

#: Passages per random stream: the unit of generation (and of memory).
BLOCK = 1 << 16

#: Common English words by rough frequency: the head of the background distribution.
HEAD = (
    "the of and to a in is for that on was with as it by be are at from or this an which "
    "can you your have not has but all also one more its they their were will may other if "
    "used when about what there use into these been some such than each most time only first "
    "two many people how after between other new where so would over years made like do any "
    "well both during while through part well then under called them because known state "
    "include up out same found number small large water body make during different day "
    "form help including three long high often world area system within body use name "
    "he she his her we our who them would could should very much just those every back "
    "need way around since before much work year get does did because still however usually "
    "since important several without along less life common free place best type following "
    "family average cost per percent based information example within using take left right"
).split()

_ONSETS = ("b c d f g h j k l m n p r s t v w z br cr dr fr gr pr tr bl cl fl gl pl sl st sp "
           "sc sh ch th qu").split() + ["", ""]  # fmt: skip
_NUCLEI = "a e i o u a e i o u ai ea ee oa ou io".split()
_CODAS = "n r s t l m nd st ng ck x rt ll".split() + [""] * 8
_SUFFIXES = "ing ed s es tion ly ness al ment ize able ful er ous ive ity ation ic".split()


@dataclass(frozen=True)
class CorpusSpec:
    """The generator's settings; a spec and a size name a corpus exactly.

    Attributes:
        seed: the random seed.
        vocab: distinct words (the head, syllable words and numbers).
        topics: topics; a passage has one, drawn Zipfian (``topic_exponent``).
        topic_words: words in each topic's subset of the vocabulary.
        topic_share: share of a passage's words drawn from its topic (the rest: background).
        mean_words / median_words: the passage length lognormal; clipped to
            [min_words, max_words].
        zipf: exponent of the background and in-topic word distributions.
        query_topic_share: share of a query's words drawn from its topic.
    """

    seed: int = 0
    vocab: int = 400_000
    topics: int = 4_000
    topic_words: int = 400
    topic_share: float = 0.4
    mean_words: float = 56.0
    median_words: float = 50.0
    min_words: int = 5
    max_words: int = 250
    zipf: float = 1.0
    topic_exponent: float = 0.7
    query_topic_share: float = 0.75

    def __post_init__(self):
        if self.vocab < len(HEAD) + self.topic_words or self.topics < 1 or self.topic_words < 1:
            raise InvalidInput(f"vocab must be >= {len(HEAD)} + topic_words, topics and topic_words >= 1")
        if not 0 < self.median_words < self.mean_words:
            raise InvalidInput("passage lengths need 0 < median_words < mean_words (a right tail)")
        if not 1 <= self.min_words <= self.max_words:
            raise InvalidInput("passage lengths need 1 <= min_words <= max_words")

    @property
    def key(self) -> str:
        """A short name of these settings (a cache folder name)."""
        if self == CorpusSpec(seed=self.seed):
            return f"seed{self.seed}"
        return f"seed{self.seed}-{hashlib.sha256(json.dumps(asdict(self)).encode()).hexdigest()[:8]}"


class _Model:
    """The word distributions a spec implies (built once per spec, a few seconds)."""

    def __init__(self, spec: CorpusSpec):
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        words = _vocabulary(rng, spec.vocab)
        self.words = words
        v = len(words)
        ranks = np.arange(1, v + 1, dtype=np.float64)
        self.background_cdf = _cdf(ranks**-spec.zipf)
        # topic subsets: content words (past the head), drawn log-uniform over rank, so a
        # topic holds a few frequent words and many rare ones, as a real topic does
        lo, hi = np.log(len(HEAD)), np.log(v)
        picks = np.exp(rng.uniform(lo, hi, size=(spec.topics, spec.topic_words))).astype(np.int64)
        self.topic_table = np.minimum(picks, v - 1).astype(np.int32)
        self.topic_cdf = _cdf(np.arange(1, spec.topic_words + 1, dtype=np.float64) ** -spec.zipf)
        self.topic_choice_cdf = _cdf(np.arange(1, spec.topics + 1, dtype=np.float64) ** -spec.topic_exponent)
        # surface forms: plain, Capitalized (sentence start), "word." (end), "Word." , "word,"
        caps = [w[:1].upper() + w[1:] for w in words]
        self.forms = np.array(words + caps + [w + "." for w in words] + [w + "." for w in caps]
                              + [w + "," for w in words], dtype=object)  # fmt: skip
        sigma2 = 2 * np.log(spec.mean_words / spec.median_words)
        self.mu, self.sigma = float(np.log(spec.median_words)), float(np.sqrt(sigma2))

    def word_ids(self, streams: _Streams, topic_of_word: np.ndarray, share: float) -> np.ndarray:
        """One word id per position: from its topic with probability ``share``, else background."""
        n = len(topic_of_word)
        u = streams("word").random(n)
        from_topic = streams("source").random(n) < share
        ids = np.searchsorted(self.background_cdf, u, side="right").astype(np.int32)
        t = np.flatnonzero(from_topic)
        rank = np.searchsorted(self.topic_cdf, u[t], side="right")
        ids[t] = self.topic_table[topic_of_word[t], rank]
        return ids

    def topics(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.searchsorted(self.topic_choice_cdf, rng.random(n), side="right").astype(np.int32)

    def lengths(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raw = np.rint(rng.lognormal(self.mu, self.sigma, n))
        return np.clip(raw, self.spec.min_words, self.spec.max_words).astype(np.int64)

    def block_texts(self, block: int, n: int) -> list[str]:
        """The first ``n`` passages of block ``block`` (the same whatever ``n``: every quantity
        comes from a stream of its own, whose first values do not depend on how many are drawn)."""
        streams = _Streams(self.spec.seed, 1, block)
        lengths = self.lengths(streams("length"), n)
        topics = self.topics(streams("topic"), n)
        total = int(lengths.sum())
        ends = np.cumsum(lengths)
        starts = ends - lengths
        doc_of = np.repeat(np.arange(n), lengths)
        ids = self.word_ids(streams, topics[doc_of], self.spec.topic_share)
        # sentences of about 12 words: a period ends one, a capital starts the next
        end = streams("end").random(total) < 1 / 12
        end[ends - 1] = True
        start = np.empty(total, dtype=bool)
        start[0] = True
        start[1:] = end[:-1]
        start[starts] = True
        comma = (streams("comma").random(total) < 0.04) & ~end & ~start
        # 0..4: plain, Capital, "end.", "Capital.", "comma,"
        form = np.where(comma, 4, start.astype(np.int64) + 2 * end)
        tokens = self.forms[form * len(self.words) + ids].tolist()
        bounds = np.concatenate(([0], ends)).tolist()
        return [" ".join(tokens[bounds[i] : bounds[i + 1]]) for i in range(n)]


class _Streams:
    """Independent random streams named by purpose, under one key (seed, kind, block)."""

    _PURPOSES = ("length", "topic", "word", "source", "end", "comma", "pick")

    def __init__(self, *key: int):
        self.key = key

    def __call__(self, purpose: str) -> np.random.Generator:
        return np.random.default_rng([*self.key, self._PURPOSES.index(purpose)])


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[-1] = 1.0 + 1e-12  # searchsorted(side="right") of u < 1 stays in range
    return cdf


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    """``size`` distinct words: the English head, then syllable words (shorter ones more
    frequent, as in English) with numbers mixed in."""
    head = list(dict.fromkeys(HEAD))
    taken = set(head)
    numbers = [str(i) for i in range(1000)] + [str(y) for y in range(1900, 2030)]
    numbers += [f"{i}.{j}" for i, j in rng.integers(0, 100, size=(400, 2))]
    numbers += [f"{i},{j:03d}" for i, j in rng.integers(1, 100, size=(200, 2))]
    numbers = [n for n in dict.fromkeys(numbers) if n not in taken]
    want = size - len(head)
    n_numbers = min(len(numbers), want // 100)
    made: dict[str, None] = {}
    while len(made) < want - n_numbers:
        for w in _syllable_words(rng, 2 * (want - n_numbers - len(made)) + 100):
            if w not in taken and w not in made:
                made[w] = None
                if len(made) == want - n_numbers:
                    break
    content = sorted(made, key=len)  # stable: shorter words take the more frequent ranks
    nums = rng.permutation(np.array(numbers[:n_numbers], dtype=object)).tolist()
    slots = np.sort(rng.choice(len(content) + n_numbers, size=n_numbers, replace=False)).tolist()
    out, it_c, it_n = [], iter(content), iter(nums)
    slot_set = set(slots)
    for i in range(len(content) + n_numbers):
        out.append(next(it_n) if i in slot_set else next(it_c))
    return head + out


def _syllable_words(rng: np.random.Generator, n: int) -> list[str]:
    onsets, nuclei, codas = (np.array(x, dtype=object) for x in (_ONSETS, _NUCLEI, _CODAS))
    syllables = rng.choice([1, 2, 3, 4], size=n, p=[0.2, 0.4, 0.3, 0.1])
    words = np.full(n, "", dtype=object)
    for s in range(4):
        live = syllables > s
        m = int(live.sum())
        part = onsets[rng.integers(0, len(onsets), m)] + nuclei[rng.integers(0, len(nuclei), m)]
        part = part + codas[rng.integers(0, len(codas), m)]
        words[live] = words[live] + part
    suffixed = rng.random(n) < 0.3
    words[suffixed] = (
        words[suffixed]
        + np.array(_SUFFIXES, dtype=object)[rng.integers(0, len(_SUFFIXES), int(suffixed.sum()))]
    )
    return [w for w in words.tolist() if len(w) >= 3]


@dataclass
class Synthetic:
    """Passages and queries of one spec."""

    spec: CorpusSpec

    @cached_property
    def model(self) -> _Model:
        return _Model(self.spec)

    def texts(self, n: int, start: int = 0) -> Iterator[str]:
        """Texts of passages ``start`` .. ``start + n - 1``, a block at a time."""
        if n < 0 or start < 0:
            raise InvalidInput("n and start must be >= 0")
        end = start + n
        block = start // BLOCK
        while block * BLOCK < end:
            lo = max(start - block * BLOCK, 0)
            hi = min(end - block * BLOCK, BLOCK)
            yield from self.model.block_texts(block, hi)[lo:]
            block += 1

    def passages(self, n: int) -> Iterator[Document]:
        """The first ``n`` passages as documents, ids ``"0"`` .. ``str(n - 1)`` (as MS MARCO's)."""
        for i, text in enumerate(self.texts(n)):
            yield Document(str(i), text)

    def queries(self, n: int) -> list[Query]:
        """``n`` queries of 2-10 words (mean about 5.5), each word from the query's topic with
        probability ``query_topic_share`` (the first always), else from the background."""
        m = self.model
        streams = _Streams(self.spec.seed, 2)
        lengths = 2 + streams("length").binomial(8, 0.45, n)
        topics = m.topics(streams("topic"), n)
        total = int(lengths.sum())
        ends = np.cumsum(lengths)
        ids = m.word_ids(streams, np.repeat(topics, lengths), self.spec.query_topic_share)
        first = ends - lengths
        rank = np.searchsorted(m.topic_cdf, streams("pick").random(n), side="right")
        ids[first] = m.topic_table[topics, rank]  # every query names its topic at least once
        words = m.forms[ids].tolist()
        assert len(words) == total
        bounds = np.concatenate(([0], ends)).tolist()
        return [Query(f"q{i}", " ".join(words[bounds[i] : bounds[i + 1]])) for i in range(n)]


def passages(spec: CorpusSpec, n: int) -> Iterator[Document]:
    """The first ``n`` passages of ``spec`` (see :meth:`Synthetic.passages`)."""
    return Synthetic(spec).passages(n)


def write_beir(spec: CorpusSpec, n: int, out: str | Path, num_queries: int = 10_000,
               show_progress: bool = True) -> Path:  # fmt: skip
    """Write ``n`` passages as a BEIR folder (``corpus.jsonl``, ``queries.jsonl``) under ``out``,
    streaming a block at a time; a folder already complete (its ``synthetic.json``) is kept.
    Returns ``out``."""
    out = Path(out)
    meta = {"spec": asdict(spec), "num_docs": n, "num_queries": num_queries}
    done = out / "synthetic.json"
    if done.is_file() and json.loads(done.read_text()) == meta:
        return out
    out.mkdir(parents=True, exist_ok=True)
    syn = Synthetic(spec)
    tmp = out / f".corpus.jsonl.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        bar = progress(total=n, desc=f"synthetic corpus ({n:,})", enabled=show_progress)
        i = 0
        while i < n:
            k = min(BLOCK - i % BLOCK, n - i)
            texts = list(syn.texts(k, start=i))
            # the text is letters, digits, spaces, "." and ",": nothing JSON must escape
            f.write(
                "".join(f'{{"_id": "{i + j}", "title": "", "text": "{t}"}}\n' for j, t in enumerate(texts))
            )
            i += k
            bar.update(k)
        bar.close()
    tmp.replace(out / "corpus.jsonl")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in syn.queries(num_queries):
            f.write(json.dumps({"_id": q.id, "text": q.text}) + "\n")
    done.write_text(json.dumps(meta))
    log.info("synthetic corpus: %d passages, %d queries in %s", n, num_queries, out)
    return out
