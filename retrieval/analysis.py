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

import Stemmer

LUCENE_ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)

_LETTER = r"[^\W\d_]"
_TOKEN = re.compile(
    rf"\w+(?:(?:(?<={_LETTER})[.:'’](?={_LETTER})|(?<=\d)[.,;'’](?=\d))\w+)*"
)
_POSSESSIVE = re.compile(r"['’]s$")
_MAX_TOKEN_LENGTH = 255


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

    def _terms_for(self, words: list[str]) -> None:
        """Fill the cache for words not seen before (one batched stemmer call)."""
        new = list({w for w in words if w not in self._cache})
        if not new:
            return
        keep = []
        for w in new:
            base = _POSSESSIVE.sub("", w)
            if not base or base in self.stopwords or len(base) > _MAX_TOKEN_LENGTH:
                self._cache[w] = None
            else:
                keep.append((w, base))
        if keep:
            bases = [b for _, b in keep]
            stems = self._stemmer.stemWords(bases) if self._stemmer else bases
            for (w, base), stem in zip(keep, stems, strict=True):
                # Porter's reference implementation (and Lucene's port of it) leaves words
                # of one or two letters alone; Snowball's would turn "s" into "".
                self._cache[w] = base if len(base) <= 2 else stem
        if len(self._cache) > 2_000_000:  # bound memory on huge vocabularies
            self._cache.clear()

    def __call__(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        self._terms_for(words)
        cache = self._cache
        return [t for t in (cache.get(w) for w in words) if t is not None]

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]
