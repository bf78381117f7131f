"""Text analysis matching Lucene's English analyzer (what Anserini indexes BEIR with).

Lucene chain: StandardTokenizer -> EnglishPossessiveFilter -> LowerCaseFilter ->
StopFilter (Lucene's 33 English stop words) -> PorterStemFilter. The tokenizer here is a
regular expression that follows the UAX#29 word-break rules that matter for English text:
letters joined across ``.``, ``:`` and apostrophes ("u.s.a", "don't"), digits joined across
``.``, ``,`` and ``;`` ("3.14", "1,000"), letters and digits and underscores forming one token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import chain, compress, repeat

import numpy as np
import Stemmer

from .porter import needs_reference, porter_stem

LUCENE_ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)

_LETTER = r"[^\W\d_]"
# UAX#29: a soft hyphen (a Format char) never breaks a word; "·" joins letters like ":".
_TOKEN = re.compile(
    rf"\w[\w\xad]*(?:(?:(?<={_LETTER})[.:'’·](?={_LETTER})|(?<=\d)[.,;'’](?=\d))\w[\w\xad]*)*"
    r"|[©®™↔\U0001F300-\U0001FAFF]"  # Extended_Pictographic chars are tokens of their own
)
# Superscript / subscript digits and vulgar fractions are "No" characters: Python's \w takes
# them as digits, Lucene's tokenizer does not treat them as word characters at all.
_NOT_WORD = re.compile("[¹²³¼½¾\u2070-\u209f\u2150-\u218f]")
_POSSESSIVE = ("'s", "’s")  # EnglishPossessiveFilter drops these endings
_MAX_TOKEN_LENGTH = 255
_MAX_CACHE = 2_000_000


class Analyzer:
    """Turns text into index terms. Stems are cached: a corpus repeats its words.

    Args:
        stemmer: a PyStemmer algorithm name (``"porter"`` as Lucene, ``"english"`` for
            Snowball's Porter2) or ``None`` for no stemming.
        stopwords: words dropped after lowercasing; Lucene's English list by default.
    """

    def __init__(self, stemmer: str | None = "porter", stopwords: Iterable[str] | None = None):
        self.stemmer_name = stemmer
        self.stopwords = LUCENE_ENGLISH_STOP_WORDS if stopwords is None else frozenset(stopwords)
        self._stemmer = Stemmer.Stemmer(stemmer) if stemmer else None
        self._cache: dict[str, str | None] = {}

    @property
    def config(self) -> dict:
        return {"stemmer": self.stemmer_name, "stopwords": sorted(self.stopwords)}

    @classmethod
    def from_config(cls, config: dict) -> Analyzer:
        return cls(config.get("stemmer"), config.get("stopwords"))

    def _terms_for(self, words: Iterable[str]) -> None:
        """Fill the cache for words not seen before (one batched stemmer call)."""
        if len(self._cache) > _MAX_CACHE:  # bound memory on huge vocabularies; before filling,
            self._cache.clear()  # so every word asked for is in the cache on return
        new = set(words).difference(self._cache)  # O(len(words)): probes the dict
        if not new:
            return
        keep = []
        for w in new:
            base = w[:-2] if w.endswith(_POSSESSIVE) else w
            if not base.strip("_") or base in self.stopwords or len(base) > _MAX_TOKEN_LENGTH:
                self._cache[w] = None
            else:
                keep.append((w, base))
        if keep:
            bases = [b for _, b in keep]
            stems = self._stemmer.stemWords(bases) if self._stemmer else bases
            porter = self.stemmer_name == "porter"
            for (w, base), stem in zip(keep, stems, strict=True):
                # Porter's reference implementation (and Lucene's port of it) leaves words
                # of one or two letters alone; Snowball's would turn "s" into "".
                if len(base) <= 2:
                    self._cache[w] = base
                elif porter and needs_reference(base, stem):
                    self._cache[w] = porter_stem(base)  # where Lucene's Porter departs from Snowball's
                else:
                    self._cache[w] = stem

    @staticmethod
    def words(text: str) -> list[str]:
        """The tokenizer's words of ``text``, lowercased, before stop words and stemming."""
        return _TOKEN.findall(_NOT_WORD.sub(" ", text.lower()))

    def terms_of(self, words: Iterable[str]) -> list[str | None]:
        """Each word's term (its stem), or ``None`` for a word the analysis drops."""
        words = list(words)
        self._terms_for(words)
        return list(map(self._cache.__getitem__, words))

    def __call__(self, text: str) -> list[str]:
        words = self.words(text)
        self._terms_for(words)
        # every word is cached now; stop words map to None and are filtered out
        return list(filter(None, map(self._cache.get, words)))

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        # Text by text, not new words found once per batch of documents: a batch needs one set
        # over all its words and a second pass over word lists no longer in cache.
        return [self(t) for t in texts]


class TermIds:
    """Texts to term numbers, a vocabulary numbered in order of first appearance.

    What an index build needs from the analysis, at one dictionary probe per word: a word
    seen before maps straight to its term's number (or to "dropped"), so stemming and the
    stop list run once per distinct word, not per occurrence. Build processes each keep one:
    ``terms[n:]`` after a call are the terms that call numbered first.
    """

    def __init__(self, analyzer: Analyzer):
        self.analyzer = analyzer
        self.terms: list[str] = []
        self._term_id: dict[str, int] = {}
        self._word_id: dict[str, int] = {}  # -1: a word the analysis drops

    def encode(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """The term numbers of every kept word of ``texts`` in order (int64), and each
        text's number of kept words (int32)."""
        words = list(map(self.analyzer.words, texts))
        flat = list(chain.from_iterable(words))
        ids = np.fromiter(map(self._word_id.get, flat, repeat(-2)), dtype=np.int64, count=len(flat))
        unseen = ids == -2
        if unseen.any():
            missed = list(compress(flat, unseen))
            self._number(dict.fromkeys(missed))  # first-appearance order numbers the new terms
            ids[unseen] = np.fromiter(map(self._word_id.__getitem__, missed), dtype=np.int64, count=len(missed))
        kept = ids >= 0
        bounds = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=bounds[1:])
        kept_before = np.concatenate(([0], np.cumsum(kept)))  # kept words before each position
        return ids[kept], np.diff(kept_before[bounds]).astype(np.int32)

    def _number(self, words: Iterable[str]) -> None:
        words = list(words)
        if len(self._word_id) + len(words) > _MAX_CACHE:  # bounded on huge vocabularies
            self._word_id.clear()
        term_id, terms = self._term_id, self.terms
        for word, term in zip(words, self.analyzer.terms_of(words), strict=True):
            if term is None:
                self._word_id[word] = -1
                continue
            n = term_id.get(term)
            if n is None:
                n = term_id[term] = len(terms)
                terms.append(term)
            self._word_id[word] = n
