"""Listwise LLM reranking: RankGPT's sliding window, with generation or with FIRST.

The window (20 passages by default) slides from the back of the top ``depth`` (100) to the
front in steps of ``stride`` (10), each window reordered by the model, so the best passages
climb to the top: whatever lands in a window's first ``window - stride`` places is carried
into the next window. Windows at the same step of different queries go to the model as one
batch. The final order is expressed as descending scores (``n - rank``) so the base class
sorts once; candidates below ``depth`` keep their order underneath.

Two ways to order a window:

* :class:`ListwiseReranker` asks the model to write ``[2] > [1] > ...`` (RankGPT, RankVicuna,
  RankZephyr prompts), through an OpenAI-compatible server or a local HF model, and parses it.
* :class:`FirstReranker` (FIRST, Reddy et al. 2024) runs one forward pass over the prompt
  followed by ``[`` and ranks the passages by the logits of their (single-token)
  identifiers at that position: no generation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.progress import progress
from cascade.retrieval.types import Document

from .base import Reranker
from .llm_backends import HFCausalLMBackend, OpenAIChatBackend
from .prompts import Identifiers, PromptFormat, PromptStyle, identifiers, parse_permutation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlidingWindow:
    """RankGPT's sliding window.

    Args:
        window: passages shown to the model at once.
        stride: how far the window moves each step (``stride < window`` makes windows overlap,
            which is what carries good passages forward).
        depth: only the top ``depth`` candidates are reranked.
        passes: how many times the whole back-to-front sweep runs (RankZephyr uses up to 3).
    """

    window: int = 20
    stride: int = 10
    depth: int = 100
    passes: int = 1

    def __post_init__(self) -> None:
        if self.window < 2 or not 1 <= self.stride <= self.window or self.depth < 1 or self.passes < 1:
            raise InvalidInput(
                f"sliding window needs window >= 2, 1 <= stride <= window, depth >= 1, passes >= 1; got "
                f"window={self.window} stride={self.stride} depth={self.depth} passes={self.passes}"
            )

    def spans(self, n: int) -> list[tuple[int, int]]:
        """The ``[start, end)`` windows of one sweep over ``n`` candidates, back to front.

        Unlike RankGPT's loop, a list shorter than the window still gets one window.
        """
        end = min(n, self.depth)
        out: list[tuple[int, int]] = []
        while end > 0:
            start = max(end - self.window, 0)
            out.append((start, end))
            if start == 0:
                break
            end -= self.stride
        return out


class _WindowReranker(Reranker):
    """Runs the sliding window over a batch of queries; subclasses order one batch of windows."""

    def __init__(self, slide: SlidingWindow, prompt: PromptFormat, show_progress: bool | None):
        self.slide, self.prompt, self.show_progress = slide, prompt, show_progress

    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        return self.score_many([query], [docs])[0]

    def score_many(self, queries: Sequence[str], docs: Sequence[Sequence[Document]]) -> list[np.ndarray]:
        if len(queries) != len(docs):
            raise InvalidInput(f"{len(queries)} queries but {len(docs)} candidate lists")
        orders = [list(range(len(ds))) for ds in docs]
        spans = [self.slide.spans(len(ds)) for ds in docs]
        steps = max((len(s) for s in spans), default=0)
        total = self.slide.passes * sum(len(s) for s in spans)
        show = self.show_progress if self.show_progress is not None else total > 50
        with progress(desc=self.name, unit="window", total=total, enabled=show, leave=False) as bar:
            for _ in range(self.slide.passes):
                for step in range(steps):
                    # step k of every query that has one goes to the model as one batch
                    todo = [(q, spans[q][step]) for q in range(len(queries)) if step < len(spans[q])]
                    windows = [[docs[q][i] for i in orders[q][a:b]] for q, (a, b) in todo]
                    perms = self.order_windows([queries[q] for q, _ in todo], windows)
                    for (q, (a, b)), perm in zip(todo, perms, strict=True):
                        current = orders[q][a:b]
                        orders[q][a:b] = [current[i] for i in perm]
                    bar.update(len(todo))
        out = []
        for order in orders:
            scores = np.zeros(len(order), dtype=np.float64)
            scores[order] = np.arange(len(order), 0, -1, dtype=np.float64)
            out.append(scores)
        return out

    def order_windows(self, queries: Sequence[str], windows: Sequence[Sequence[Document]]) -> list[list[int]]:
        """For each window, a permutation of its positions, best first."""
        raise NotImplementedError

    def window_messages(self, queries: Sequence[str], windows: Sequence[Sequence[Document]]) -> list[list[dict]]:
        """The chat messages for each (query, window of documents)."""
        return [self.prompt.messages(q, [d.contents for d in w]) for q, w in zip(queries, windows, strict=True)]


class ListwiseReranker(_WindowReranker):
    """Generation-based listwise reranking (RankGPT / RankVicuna / RankZephyr).

    Args:
        model: the model: a name the server knows (``backend="openai"``) or a hub id or
            directory of a causal LM (``backend="hf"``).
        backend: ``"openai"`` (any OpenAI-compatible chat-completions server) or ``"hf"``.
        prompt: ``"rankgpt"``, ``"rankvicuna"`` or ``"rankzephyr"``.
        window, stride, depth, passes: the sliding window (see :class:`SlidingWindow`).
        identifiers: ``"numeric"`` (``[1]``) or ``"alpha"`` (``[A]``).
        max_passage_words: passages are cut to this many words.
        max_new_tokens: answer budget; ``None`` sizes it from a full answer for the window.
        base_url, api_key, api_key_env, timeout_s, max_retries, backoff_s, concurrency: the
            HTTP backend (see :class:`OpenAIChatBackend`).
        device, dtype, batch_size, max_length: the local backend (see :class:`HFCausalLMBackend`).

    Raises:
        InvalidInput: bad arguments. NotFound: a local model that cannot be loaded.
        Unavailable: (when reranking) a server that does not answer after the retries.

    Example:
        >>> rr = ListwiseReranker("castorini/rank_zephyr_7b_v1_full", backend="openai",
        ...                       base_url="http://localhost:8000/v1")
        >>> rr.rerank(Query("q1", "what is bm25"), bm25_top100_docs)
    """

    name = "listwise"

    def __init__(self, model: str = "castorini/rank_zephyr_7b_v1_full", backend: Literal["openai", "hf"] = "openai",
                 prompt: PromptStyle = "rankzephyr", window: int = 20, stride: int = 10, depth: int = 100,
                 passes: int = 1, identifiers: Identifiers = "numeric", max_passage_words: int = 100,
                 max_new_tokens: int | None = None, base_url: str = "http://localhost:8000/v1",
                 api_key: str | None = None, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 max_retries: int = 3, backoff_s: float = 1.0, concurrency: int = 4, device: str | None = None,
                 dtype: str | None = None, batch_size: int = 4, max_length: int = 4096,
                 show_progress: bool | None = None):  # fmt: skip
        super().__init__(SlidingWindow(window, stride, depth, passes),
                         PromptFormat(prompt, identifiers, max_passage_words), show_progress)  # fmt: skip
        if backend == "openai":
            self.backend = OpenAIChatBackend(model, base_url, api_key, api_key_env, timeout_s, max_retries,
                                             backoff_s, concurrency)  # fmt: skip
        elif backend == "hf":
            self.backend = HFCausalLMBackend(model, device, dtype, batch_size, max_length)
        else:
            raise InvalidInput(f"backend must be 'openai' or 'hf', got {backend!r}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise InvalidInput(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens

    def order_windows(self, queries: Sequence[str], windows: Sequence[Sequence[Document]]) -> list[list[int]]:
        if not windows:
            return []
        longest = max(len(w) for w in windows)
        budget = self.max_new_tokens or self.backend.estimate_tokens(self.prompt.answer_template(longest)) + 2
        answers = self.backend.chat(self.window_messages(queries, windows), budget)
        perms = []
        for answer, window in zip(answers, windows, strict=True):
            perm, parsed = parse_permutation(answer, len(window), self.prompt.ids)
            if not parsed:
                log.warning("no ranking in the model's answer %r; window kept in input order", answer[:80])
            perms.append(perm)
        return perms


class FirstReranker(_WindowReranker):
    """FIRST: one forward pass per window, passages ordered by their identifiers' first-token logits.

    The prompt (RankZephyr's, with alphabetical identifiers by default, as FIRST was trained)
    is followed by ``[``; the logits at the next position over the window's identifier
    tokens order the window. Identifiers must be distinct single tokens for the tokenizer.

    Args:
        model: hub id or directory of a causal LM (``rryisthebest/First_Model``).
        window, stride, depth, passes, prompt, identifiers, max_passage_words: as for
            :class:`ListwiseReranker`.
        device, dtype, batch_size, max_length: the local model (see :class:`HFCausalLMBackend`).

    Raises:
        InvalidInput: an identifier that is not a single token, or bad arguments.
        NotFound: the model cannot be loaded.
    """

    name = "first"

    def __init__(self, model: str = "rryisthebest/First_Model", prompt: PromptStyle = "rankzephyr",
                 window: int = 20, stride: int = 10, depth: int = 100, passes: int = 1,
                 identifiers: Identifiers = "alpha", max_passage_words: int = 100, device: str | None = None,
                 dtype: str | None = None, batch_size: int = 4, max_length: int = 4096,
                 show_progress: bool | None = None):  # fmt: skip
        super().__init__(SlidingWindow(window, stride, depth, passes),
                         PromptFormat(prompt, identifiers, max_passage_words), show_progress)  # fmt: skip
        self.backend = HFCausalLMBackend(model, device, dtype, batch_size, max_length)
        self.token_ids = self._identifier_tokens(window)

    def _identifier_tokens(self, window: int) -> list[int]:
        tok = self.backend.tokenizer
        # tokenized after the "[" that ends the prompt, as the model sees it (a tokenizer that adds a
        # prefix space would give another id for the label alone)
        opener = tok.encode("[", add_special_tokens=False)
        ids = []
        for label in identifiers(self.prompt.ids, window):
            enc = tok.encode("[" + label, add_special_tokens=False)
            if len(enc) != len(opener) + 1 or enc[: len(opener)] != opener:
                raise InvalidInput(
                    f"identifier {label!r} is not one token after '[' for this tokenizer; FIRST needs "
                    "single-token identifiers (use identifiers='alpha' or a smaller window)"
                )
            ids.append(int(enc[-1]))
        if len(set(ids)) != len(ids):
            raise InvalidInput("identifiers map to the same token for this tokenizer (a lowercasing tokenizer?)")
        return ids

    def order_windows(self, queries: Sequence[str], windows: Sequence[Sequence[Document]]) -> list[list[int]]:
        if not windows:
            return []
        logits = self.backend.next_token_logits(self.window_messages(queries, windows), "[", self.token_ids)
        # stable: equal logits keep the input order
        return [np.argsort(-row[: len(w)], kind="stable").tolist() for row, w in zip(logits, windows, strict=True)]
