from cascade.retrieval.sparse.analysis import Analyzer, porter_departures


def test_lucene_english_analysis_cases():
    a = Analyzer()
    assert a("The U.S.A. economy grew 3.14% in 1,000 days") == ["u.s.a", "economi", "grew", "3.14", "1,000", "dai"]
    assert a("John's cells aren't CELLS") == ["john", "cell", "aren't", "cell"]
    # stop words go; words of one or two letters are never stemmed (Porter's reference code)
    assert a("it is as an s of us") == ["s", "us"]
    assert a("H₂O² m²") == ["h", "o", "m"]
    assert a("anti-inflammatory foo_bar _") == ["anti", "inflammatori", "foo_bar"]


def test_porter_reference_departures_from_snowball():
    a = Analyzer()
    assert a("assembly technology possibly irreversibly") == ["assembl", "technolog", "possibl", "irrevers"]
    assert porter_departures("notabli") == "notabl"
    assert porter_departures("stabli") == "stabli"  # m(sta) = 0: the rule does not fire
    assert porter_departures("neurologi") == "neurolog"
    assert porter_departures("cell") == "cell"


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
