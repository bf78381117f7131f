"""Synthetic MS MARCO-shaped text: deterministic, the right shape, and analyzed alike by Lucene
and by us."""

import json
from collections import Counter

import numpy as np
import pytest

from cascade.eval.synthetic import BLOCK, CorpusSpec, Synthetic, write_beir
from cascade.indexing.corpus import read_jsonl
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.sparse.analysis import Analyzer

SMALL = CorpusSpec(seed=1, vocab=20_000, topics=200, topic_words=150)


@pytest.fixture(scope="module")
def texts():
    return list(Synthetic(SMALL).texts(20_000))


def test_same_seed_same_text_and_prefixes_agree(texts):
    again = Synthetic(CorpusSpec(seed=1, vocab=20_000, topics=200, topic_words=150))
    assert list(again.texts(300)) == texts[:300]  # a smaller corpus is the start of a larger one
    assert list(again.texts(50, start=1000)) == texts[1000:1050]
    other = list(Synthetic(CorpusSpec(seed=2, vocab=20_000, topics=200, topic_words=150)).texts(300))
    assert sum(a == b for a, b in zip(other, texts, strict=False)) == 0
    # across a block boundary (each block has its own random stream)
    tail = list(again.texts(4, start=BLOCK - 2))
    assert tail[:2] == list(again.texts(BLOCK))[-2:] and tail[2:] == list(again.model.block_texts(1, 2))


def test_passage_lengths_follow_ms_marco(texts):
    lengths = np.array([len(t.split()) for t in texts])
    assert 54 <= lengths.mean() <= 58  # MS MARCO passages: about 56 words
    assert 48 <= np.median(lengths) <= 52
    assert lengths.min() >= 5 and lengths.max() <= 250 and (lengths > 150).sum() > 0  # a long tail


def test_words_are_zipfian_and_topical(texts):
    words = Counter(w.strip(".,").lower() for t in texts for w in t.split())
    top = [w for w, _ in words.most_common(3)]
    assert top[0] == "the" and set(top) <= {"the", "of", "and", "to", "a"}
    freqs = np.array(sorted(words.values(), reverse=True), dtype=float)[:2000]
    slope = np.polyfit(np.log(np.arange(1, len(freqs) + 1)), np.log(freqs), 1)[0]
    assert -1.3 < slope < -0.6  # Zipf's law, exponent about 1
    # topical: the content words of one passage recur in others of its topic, so passage pairs
    # that share a rare word share far more words than random pairs do
    m = Synthetic(SMALL).model
    head = set(m.words[:300])
    sets = [{w.strip(".,").lower() for w in t.split()} - head for t in texts[:3000]]
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(sets), size=(3000, 2))
    random_overlap = np.mean([len(sets[a] & sets[b]) for a, b in pairs])
    by_word: dict[str, list[int]] = {}
    for i, s in enumerate(sets):
        for w in s:
            by_word.setdefault(w, []).append(i)
    rare = [ix for ix in by_word.values() if 2 <= len(ix) <= 4]
    same_topic = np.mean([len(sets[ix[0]] & sets[ix[1]]) - 1 for ix in rare[:3000]])
    assert same_topic > 3 * random_overlap


def test_queries_have_2_to_10_words_from_the_topics():
    syn = Synthetic(SMALL)
    qs = syn.queries(2000)
    assert qs == Synthetic(SMALL).queries(2000) and qs[:30] == syn.queries(30)
    n = np.array([len(q.text.split()) for q in qs])
    assert n.min() == 2 and n.max() <= 10 and 5 <= n.mean() <= 6.5
    assert len({q.id for q in qs}) == 2000
    analyzer = Analyzer()
    assert all(analyzer(q.text) for q in qs)  # every query keeps a term after stop words


def test_write_beir_streams_a_corpus_once(tmp_path):
    out = write_beir(SMALL, 1500, tmp_path / "c", num_queries=40, show_progress=False)
    docs = list(read_jsonl(out / "corpus.jsonl"))
    assert [d.id for d in docs] == [str(i) for i in range(1500)]
    assert [d.text for d in docs] == list(Synthetic(SMALL).texts(1500))
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert len(queries) == 40 and queries[0]["_id"] == "q0"
    stamp = (out / "corpus.jsonl").stat().st_mtime_ns
    write_beir(SMALL, 1500, out, num_queries=40, show_progress=False)
    assert (out / "corpus.jsonl").stat().st_mtime_ns == stamp  # kept, not written again
    with pytest.raises(InvalidInput):
        CorpusSpec(mean_words=40, median_words=50)


@pytest.mark.slow
def test_lucene_and_our_analyzer_agree_on_synthetic_text(in_own_process):
    """The premise of the same-top-10 check at scale (starts Lucene's JVM: own process)."""
    pytest.importorskip("pyserini", reason="the lucene extra is not installed")
    if in_own_process:
        return
    from cascade.retrieval.sparse.lucene import start_java

    start_java()
    from pyserini.analysis import Analyzer as LuceneAnalyzer
    from pyserini.analysis import get_lucene_analyzer

    syn = Synthetic(CorpusSpec(seed=0))  # the default vocabulary, all 400k words possible
    texts = list(syn.texts(3000)) + [q.text for q in syn.queries(2000)]
    # and every word of the vocabulary once, in every surface form
    forms = syn.model.forms.tolist()
    texts += [" ".join(forms[i : i + 500]) for i in range(0, len(forms), 500)]
    lucene, ours = LuceneAnalyzer(get_lucene_analyzer()), Analyzer()
    assert [t[:80] for t in texts if lucene.analyze(t) != ours(t)] == []
