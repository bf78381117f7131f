import numpy as np
import pytest

from cascade.retrieval.sparse.analysis import Analyzer, TermIds
from cascade.retrieval.sparse.porter import needs_reference, porter_stem


def test_lucene_english_analysis_cases():
    a = Analyzer()
    assert a("The U.S.A. economy grew 3.14% in 1,000 days") == [
        "u.s.a",
        "economi",
        "grew",
        "3.14",
        "1,000",
        "dai",
    ]
    assert a("John's cells aren't CELLS") == ["john", "cell", "aren't", "cell"]
    # stop words go; words of one or two letters are never stemmed (Porter's reference code)
    assert a("it is as an s of us") == ["s", "us"]
    assert a("H₂O² m²") == ["h", "o", "m"]
    assert a("anti-inflammatory foo_bar _") == ["anti", "inflammatori", "foo_bar"]


def test_porter_reference_departures_from_snowball():
    a = Analyzer()
    assert a("assembly technology possibly irreversibly") == ["assembl", "technolog", "possibl", "irrevers"]
    assert porter_stem("notably") == "notabl"
    assert porter_stem("stably") == "stabli"  # m(sta) = 0: the rule does not fire
    assert porter_stem("neurology") == "neurolog"
    assert porter_stem("cell") == "cell"
    # a stem ending in -bli after step 4 took a suffix off: no step-2 rule saw "bli" (Lucene:
    # "feezabli"; replaying bli -> ble on Snowball's stem gave "feezabl")
    assert a("feezabliic tolablious") == ["feezabli", "tolabli"]
    # -ed/-ing off, then any double consonant but l, s, z loses one (Snowball keeps "kk")
    assert a("trekking crunfebreeckking hissing falling") == ["trek", "crunfebreeck", "hiss", "fall"]
    assert needs_reference("trekking", "trekk") and not needs_reference("cells", "cell")


def test_porter_reference_port_on_porters_examples():
    """Porter's reference stemmer (Lucene's) on the classic examples of each step."""
    cases = {"caresses": "caress", "ponies": "poni", "ties": "ti", "cats": "cat", "feed": "feed",
             "agreed": "agre", "plastered": "plaster", "motoring": "motor", "sing": "sing",
             "conflated": "conflat", "troubled": "troubl", "sized": "size", "hopping": "hop",
             "tanned": "tan", "fizzed": "fizz", "failing": "fail", "filing": "file", "happy": "happi",
             "relational": "relat", "conditional": "condit", "valenci": "valenc", "digitizer": "digit",
             "vietnamization": "vietnam", "predication": "predic", "operator": "oper",
             "feudalism": "feudal", "decisiveness": "decis", "hopefulness": "hope",
             "formaliti": "formal", "sensibiliti": "sensibl", "triplicate": "triplic",
             "formative": "form", "electriciti": "electr", "hopeful": "hope", "goodness": "good",
             "revival": "reviv", "allowance": "allow", "airliner": "airlin", "adjustable": "adjust",
             "adoption": "adopt", "homologous": "homolog", "effective": "effect", "bowdlerize": "bowdler",
             "probate": "probat", "rate": "rate", "cease": "ceas", "controll": "control", "roll": "roll"}  # fmt: skip
    assert {w: porter_stem(w) for w in cases} == cases


def test_no_stemmer_and_custom_stopwords():
    a = Analyzer(stemmer=None, stopwords=["cells"])
    assert a("Stem cells differentiate") == ["stem", "differentiate"]


def test_analyze_many_matches_one_by_one_and_a_full_cache_loses_no_word(monkeypatch):
    texts = ["Stem cells differentiate", "John's cells", "", "Neurology of stem-cell assembly", "the of"]
    one_by_one = [Analyzer()(t) for t in texts]
    assert Analyzer().analyze_many(texts) == one_by_one
    # the stem cache is bounded: when it is cleared, the batch that overflowed it keeps its terms
    monkeypatch.setattr("cascade.retrieval.sparse.analysis._MAX_CACHE", 3)
    a = Analyzer()
    assert [a(t) for t in texts] == one_by_one
    assert a.analyze_many(texts) == one_by_one


@pytest.mark.parametrize("max_cache", [None, 3])
def test_term_ids_number_terms_in_order_of_first_appearance(monkeypatch, max_cache):
    """TermIds against the plain reading: analyze each text, number each new term as it comes."""
    if max_cache:  # a cleared word cache must not renumber any term
        monkeypatch.setattr("cascade.retrieval.sparse.analysis._MAX_CACHE", max_cache)
    batches = [
        ["Stem cells differentiate", "", "John's cells aren't CELLS", "the of and"],
        ["Neurology of stem-cell assembly", "cells", "H₂O differentiates"],
        [],
        ["the", "U.S.A. grew 3.14%", "stem"],
    ]
    analyzer, numbers = Analyzer(), {}
    terms = TermIds(Analyzer())
    for texts in batches:
        expected = [[numbers.setdefault(t, len(numbers)) for t in analyzer(x)] for x in texts]
        ids, counts = terms.encode(iter(texts))
        assert ids.dtype == np.int64 and counts.dtype == np.int32
        assert counts.tolist() == [len(e) for e in expected]
        assert ids.tolist() == [i for e in expected for i in e]
    assert terms.terms == list(numbers)
