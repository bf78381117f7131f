"""Porter's stemmer as Lucene's ``PorterStemmer`` has it (a port of Martin Porter's reference
implementation), for the few words where Snowball's "porter" gives another stem.

The analyzer stems with Snowball (C, fast) and calls :func:`porter_stem` only for the words
:func:`needs_reference` picks: those where the reference implementation departs from the
published algorithm that Snowball follows:

- step 2: ``bli`` -> ``ble`` (the published rule is ``abli`` -> ``able``) and ``logi`` -> ``log``
  (not in the published algorithm);
- step 1b: after ``-ed``/``-ing`` is removed, any double consonant but ``l``, ``s``, ``z`` loses
  a letter ("trekking" -> "trek"); Snowball undoubles only ``bb dd ff gg mm nn pp rr tt``.
"""

from __future__ import annotations

import re

# a double consonant that Snowball leaves and the reference undoubles, before -ed/-ing (and an
# -s that step 1a removes first)
_DOUBLE_BEFORE_ED_ING = re.compile(r"(cc|hh|jj|kk|qq|vv|ww|xx|yy)(ed|ing)s?$")


def needs_reference(word: str, snowball_stem: str) -> bool:
    """Whether Snowball's stem of ``word`` may differ from the reference implementation's."""
    return snowball_stem.endswith(("bli", "logi")) or _DOUBLE_BEFORE_ED_ING.search(word) is not None


class _Stemmer:
    """One word being stemmed: ``b`` the letters, ``k`` the last index, ``j`` a suffix's start - 1
    (the reference's global state, kept per call)."""

    def __init__(self, word: str):
        self.b = list(word)
        self.k = len(word) - 1
        self.j = 0

    def cons(self, i: int) -> bool:
        ch = self.b[i]
        if ch in "aeiou":
            return False
        if ch == "y":
            return i == 0 or not self.cons(i - 1)
        return True

    def m(self) -> int:
        """The number of consonant-vowel sequences in b[0..j]: [C](VC)^m[V], counted as the
        vowels followed by a consonant."""
        n, after_vowel = 0, False
        for i in range(self.j + 1):
            consonant = self.cons(i)
            n += consonant and after_vowel
            after_vowel = not consonant
        return n

    def vowel_in_stem(self) -> bool:
        return any(not self.cons(i) for i in range(self.j + 1))

    def doublec(self, j: int) -> bool:
        return j >= 1 and self.b[j] == self.b[j - 1] and self.cons(j)

    def cvc(self, i: int) -> bool:
        if i < 2 or not self.cons(i) or self.cons(i - 1) or not self.cons(i - 2):
            return False
        return self.b[i] not in "wxy"

    def ends(self, s: str) -> bool:
        o = self.k - len(s) + 1
        if o < 0 or "".join(self.b[o : self.k + 1]) != s:
            return False
        self.j = self.k - len(s)
        return True

    def setto(self, s: str) -> None:
        o = self.j + 1
        self.b[o:] = list(s)
        self.k = self.j + len(s)

    def r(self, s: str) -> None:
        if self.m() > 0:
            self.setto(s)

    def step1(self) -> None:
        b = self.b
        if b[self.k] == "s":
            if self.ends("sses"):
                self.k -= 2
            elif self.ends("ies"):
                self.setto("i")
            elif b[self.k - 1] != "s":
                self.k -= 1
        del b[self.k + 1 :]
        if self.ends("eed"):
            if self.m() > 0:
                self.k -= 1
        elif (self.ends("ed") or self.ends("ing")) and self.vowel_in_stem():
            self.k = self.j
            del b[self.k + 1 :]
            if self.ends("at"):
                self.setto("ate")
            elif self.ends("bl"):
                self.setto("ble")
            elif self.ends("iz"):
                self.setto("ize")
            elif self.doublec(self.k):
                if b[self.k] not in "lsz":
                    self.k -= 1
            elif self.m() == 1 and self.cvc(self.k):
                self.setto("e")
        del b[self.k + 1 :]

    def step2(self) -> None:
        if self.ends("y") and self.vowel_in_stem():
            self.b[self.k] = "i"

    _STEP3 = {
        "a": (("ational", "ate"), ("tional", "tion")),
        "c": (("enci", "ence"), ("anci", "ance")),
        "e": (("izer", "ize"),),
        "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
        "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
        "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
        "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")),
        "g": (("logi", "log"),),
    }
    _STEP4 = {
        "e": (("icate", "ic"), ("ative", ""), ("alize", "al")),
        "i": (("iciti", "ic"),),
        "l": (("ical", "ic"), ("ful", "")),
        "s": (("ness", ""),),
    }
    _STEP5 = {
        "a": ("al",), "c": ("ance", "ence"), "e": ("er",), "i": ("ic",), "l": ("able", "ible"),
        "n": ("ant", "ement", "ment", "ent"), "o": ("ion", "ou"), "s": ("ism",), "t": ("ate", "iti"),
        "u": ("ous",), "v": ("ive",), "z": ("ize",),
    }  # fmt: skip

    def _rules(self, rules: tuple) -> None:
        for suffix, replacement in rules:
            if self.ends(suffix):
                self.r(replacement)
                return

    def step3(self) -> None:
        if self.k == 0:
            return
        self._rules(self._STEP3.get(self.b[self.k - 1], ()))

    def step4(self) -> None:
        self._rules(self._STEP4.get(self.b[self.k], ()))

    def step5(self) -> None:
        if self.k == 0:
            return
        for suffix in self._STEP5.get(self.b[self.k - 1], ()):
            if self.ends(suffix):
                if suffix == "ion" and not (self.j >= 0 and self.b[self.j] in "st"):
                    continue  # -ion only after s or t; try the next ending ("ou")
                break
        else:
            return
        if self.m() > 1:
            self.k = self.j
            del self.b[self.k + 1 :]

    def step6(self) -> None:
        self.j = self.k
        if self.b[self.k] == "e":
            a = self.m()
            if a > 1 or (a == 1 and not self.cvc(self.k - 1)):
                self.k -= 1
        if self.b[self.k] == "l" and self.doublec(self.k) and self.m() > 1:
            self.k -= 1
        del self.b[self.k + 1 :]

    def stem(self) -> str:
        if self.k > 1:
            for step in (self.step1, self.step2, self.step3, self.step4, self.step5, self.step6):
                step()
                del self.b[self.k + 1 :]
        return "".join(self.b[: self.k + 1])


def porter_stem(word: str) -> str:
    """The stem of a lowercase ``word`` as Lucene's ``PorterStemmer`` computes it."""
    return _Stemmer(word).stem()
