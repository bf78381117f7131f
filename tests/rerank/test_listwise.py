"""Listwise rerankers: sliding window, prompts, parsing, the HTTP backend (a loopback server), FIRST."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time

import numpy as np
import pytest
from chat_server import ChatServer

from cascade.rerank.listwise import ListwiseReranker, SlidingWindow
from cascade.rerank.llm_backends import OpenAIChatBackend
from cascade.rerank.prompts import PromptFormat, parse_permutation
from cascade.retrieval.errors import InvalidInput, Unavailable
from cascade.retrieval.types import Document, Query

# ---------------------------------------------------------------- an OpenAI-compatible server on loopback

PASSAGE = re.compile(r"^\[(\w+)\] (\S+)", re.MULTILINE)


# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")


def oracle_answer(messages, grades: dict[str, int]) -> str:
    """Ranks the window's passages by their graded relevance (stable), as an ideal LLM would."""
    text = "\n".join(m["content"] for m in messages if m["role"] == "user")
    shown = PASSAGE.findall(text)
    ranked = sorted(range(len(shown)), key=lambda i: -grades.get(shown[i][1], 0))
    return " > ".join(f"[{shown[i][0]}]" for i in ranked)


def _reranker(url: str, **kw) -> ListwiseReranker:
    kw = {"backoff_s": 0.01, "timeout_s": 5.0, "api_key": "sk-test", **kw}
    return ListwiseReranker("scripted", backend="openai", base_url=url, **kw)


def _docs(n: int, prefix: str = "d") -> list[Document]:
    return [Document(f"{prefix}{i:03d}", f"{prefix}{i:03d} passage text number [{i}] about things") for i in range(n)]


# ---------------------------------------------------------------- pure parts


def test_sliding_window_spans():
    w = SlidingWindow()
    assert w.spans(100) == [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30), (0, 20)]
    assert w.spans(150) == w.spans(100)  # only the top `depth` is reranked
    assert w.spans(15) == [(0, 15)] and w.spans(25) == [(5, 25), (0, 15)] and w.spans(0) == []
    assert SlidingWindow(window=4, stride=4, depth=10).spans(10) == [(6, 10), (2, 6), (0, 2)]
    with pytest.raises(InvalidInput):
        SlidingWindow(window=5, stride=6)


@pytest.mark.parametrize(
    ("answer", "n", "ids", "expected", "parsed"),
    [
        ("[2] > [1] > [3]", 3, "numeric", [1, 0, 2], True),
        ("[2] > [2] > [9] > [0] > [1]", 3, "numeric", [1, 0, 2], True),  # repeated, out of range, zero
        ("I think [3] is best", 4, "numeric", [2, 0, 1, 3], True),  # missing ones appended in order
        ("3 > 1", 3, "numeric", [2, 0, 1], True),
        ("Sorry, I cannot rank these.", 3, "numeric", [0, 1, 2], False),
        ("", 2, "numeric", [0, 1], False),
        ("[B] > [A] > [B] > [Z]", 3, "alpha", [1, 0, 2], True),
        ("C > A", 3, "alpha", [2, 0, 1], True),
        ("[b] > [c]", 3, "alpha", [1, 2, 0], True),
    ],
)
def test_parse_permutation_repairs(answer, n, ids, expected, parsed):
    assert parse_permutation(answer, n, ids) == (expected, parsed)


def test_prompt_formats():
    passages = ["alpha text " * 200, "beta [3] text"]
    zephyr = PromptFormat("rankzephyr", "numeric", max_passage_words=5).messages("what?", passages)
    assert [m["role"] for m in zephyr] == ["system", "user"]
    assert "[1] alpha text alpha text alpha\n[2] beta (3) text\n" in zephyr[1]["content"]  # cut, defused
    assert "Search Query: what?." in zephyr[1]["content"] and "e.g., [2] > [1]" in zephyr[1]["content"]
    gpt = PromptFormat("rankgpt", "numeric").messages("what?", passages)
    assert [m["role"] for m in gpt] == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert gpt[5]["content"] == "[2] beta (3) text" and gpt[6]["content"] == "Received passage [2]."
    alpha = PromptFormat("rankvicuna", "alpha").messages("q", ["a", "b", "c", "d"])
    assert "[D] d\n" in alpha[1]["content"] and "alphabetical identifier" in alpha[1]["content"]
    with pytest.raises(InvalidInput, match="prompt style"):
        PromptFormat("rankbert")


# ---------------------------------------------------------------- over HTTP


@pytest.mark.parametrize("style", ["rankzephyr", "rankgpt", "rankvicuna"])
def test_oracle_sliding_window_brings_reachable_relevant_to_top(style):
    docs = _docs(120)
    grades = {"d003": 1, "d017": 2, "d045": 1, "d062": 1, "d088": 2, "d099": 1, "d110": 2}  # d110: below depth
    with ChatServer(lambda i, m: (200, oracle_answer(m, grades))) as srv:
        ranking = _reranker(srv.url, prompt=style).rerank(Query("q1", "which?"), docs)
        assert len(srv.requests) == 9  # (80,100) ... (0,20)
    path, auth, body = srv.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "scripted"
    assert body["temperature"] == 0 and body["max_tokens"] > 20 * 3
    reachable = sorted((d for d in grades if int(d[1:]) < 100), key=lambda d: (-grades[d], d))
    assert list(ranking.doc_ids[: len(reachable)]) == reachable
    assert ranking.doc_ids[110] == "d110"  # unreachable: keeps its place under the reranked top 100
    assert list(ranking.scores) == sorted(ranking.scores, reverse=True)


def test_batched_queries_and_empty_lists():
    a, b = _docs(30, "a"), _docs(7, "b")
    grades = {"a029": 1, "a015": 2, "b006": 1}
    with ChatServer(lambda i, m: (200, oracle_answer(m, grades))) as srv:
        rr = _reranker(srv.url, window=10, stride=5, concurrency=3)
        ra, rempty, rb = rr.rerank_batch([Query("a", "x"), Query("e", "y"), Query("b", "z")], [a, [], b], top_k=3)
        assert len(srv.requests) == 5 + 1
    assert list(ra.doc_ids[:2]) == ["a015", "a029"] and len(ra) == 3
    assert len(rempty) == 0 and rb.doc_ids[0] == "b006"


def test_unparsable_answer_keeps_order_and_warns(caplog):
    docs = _docs(5)
    with ChatServer(lambda i, m: (200, "I am not sure.")) as srv, caplog.at_level(logging.WARNING):
        ranking = _reranker(srv.url).rerank(Query("q", "x"), docs)
    assert list(ranking.doc_ids) == [d.id for d in docs]
    assert "window kept in input order" in caplog.text


def test_server_errors_are_retried_with_backoff():
    docs = _docs(3)
    script = lambda i, m: (503, "busy") if i < 2 else (200, "[3] > [1] > [2]")  # noqa: E731
    with ChatServer(script) as srv:
        ranking = _reranker(srv.url, max_retries=2).rerank(Query("q", "x"), docs)
        assert len(srv.requests) == 3
    assert list(ranking.doc_ids) == ["d002", "d000", "d001"]
    with ChatServer(lambda i, m: (503, "busy")) as srv:
        with pytest.raises(Unavailable, match="after 2 attempts: HTTP 503"):
            _reranker(srv.url, max_retries=1).rerank(Query("q", "x"), docs)
    with ChatServer(lambda i, m: (401, "bad key")) as srv:
        with pytest.raises(InvalidInput, match="HTTP 401"):
            _reranker(srv.url).rerank(Query("q", "x"), docs)
        assert len(srv.requests) == 1  # a refusal is not retried


def test_unreachable_server_is_unavailable_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    rr = _reranker(f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_s=0.05, timeout_s=0.5)
    t = time.perf_counter()
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1.*did not answer after 3 attempts"):
        rr.rerank(Query("q", "x"), _docs(4))
    assert 0.15 <= time.perf_counter() - t < 10  # two backoffs: 0.05 + 0.1


def test_streamed_answers_use_the_same_client_retries_and_errors():
    messages = [{"role": "user", "content": "rank"}]

    def collect(backend) -> list[str]:
        async def run():
            return [d async for d in await backend.stream(messages, 16, temperature=0.5)]

        return asyncio.run(run())

    script = lambda i, m: (503, "busy") if i == 0 else (200, "[2] > [1]")  # noqa: E731
    with ChatServer(script) as srv:
        backend = OpenAIChatBackend("scripted", srv.url, api_key="sk-test", backoff_s=0.01, max_retries=1)
        assert collect(backend) == ["[2] ", "> ", "[1]"]
        assert len(srv.requests) == 2  # the 503 was retried
    path, auth, body = srv.requests[-1]
    assert (path, auth, body["model"], body["stream"]) == ("/v1/chat/completions", "Bearer sk-test", "scripted", True)
    assert body["temperature"] == 0.5 and body["max_tokens"] == 16
    with ChatServer(lambda i, m: (401, "bad key")) as srv:
        with pytest.raises(InvalidInput, match="refused the request: HTTP 401"):
            collect(OpenAIChatBackend("m", srv.url, backoff_s=0.01))
        assert len(srv.requests) == 1  # a refusal is not retried
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unavailable, match="did not answer after 1 attempt: not reachable"):
        collect(OpenAIChatBackend("m", f"http://127.0.0.1:{port}/v1", max_retries=0))


def test_bad_arguments():
    with pytest.raises(InvalidInput, match="backend"):
        ListwiseReranker("m", backend="grpc")
    with pytest.raises(InvalidInput, match="sliding window"):
        ListwiseReranker("m", window=1)


# ---------------------------------------------------------------- local HF model, FIRST


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    pytest.importorskip("torch")
    import torch

    torch.set_num_threads(2)
    from rerank_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("llama"))


def test_hf_generation_listwise_gives_a_full_permutation(llama_dir):
    docs = _docs(12)
    rr = ListwiseReranker(str(llama_dir), backend="hf", device="cpu", window=5, stride=3, max_new_tokens=8)
    ranking = rr.rerank(Query("q", "passage about things"), docs)
    assert sorted(ranking.doc_ids) == [d.id for d in docs]


def test_first_orders_by_identifier_logits(llama_dir):
    import torch

    from cascade.rerank.listwise import FirstReranker

    docs = _docs(6)
    rr = FirstReranker(str(llama_dir), device="cpu", window=6, stride=3)
    be = rr.backend
    messages = rr.prompt.messages("what things", [d.contents for d in docs])
    ids = be.tokenizer(be.render(messages) + "[", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = be.model(input_ids=ids).logits[0, -1, rr.token_ids].numpy()
    ranking = rr.rerank(Query("q", "what things"), docs)
    assert list(ranking.doc_ids) == [docs[i].id for i in np.argsort(-logits, kind="stable")]
    # batched prompts of different lengths (left padding) give the same orders as one at a time
    queries = [Query(str(i), "what " * (1 + 7 * i)) for i in range(3)]
    batched = FirstReranker(str(llama_dir), device="cpu", window=4, stride=2, batch_size=3)
    single = FirstReranker(str(llama_dir), device="cpu", window=4, stride=2, batch_size=1)
    cands = [docs, docs[:3], docs[2:]]
    assert batched.rerank_batch(queries, cands) == single.rerank_batch(queries, cands)
    with pytest.raises(InvalidInput, match="26"):
        FirstReranker(str(llama_dir), device="cpu", window=27)
