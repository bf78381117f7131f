"""The LLM side of ``/v1/answer``: the RAG prompt, the citation markers an answer uses, and
the answer stream from the server given by ``--llm-base-url`` / ``--llm-model``, through the
project's one OpenAI-compatible client, :class:`~cascade.rerank.llm_backends.OpenAIChatBackend`.
Connection problems and refusals raise :class:`Unavailable` before the first token, so the
API can still answer 503 instead of a broken stream."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Sequence

from cascade.api.service.context import PackedContext
from cascade.rerank.llm_backends import OpenAIChatBackend
from cascade.retrieval.errors import InvalidInput, MissingDependency, Unavailable

from .settings import Settings

SYSTEM_PROMPT = (
    "Answer the question using only the numbered passages. Cite the passages you use with their "
    "numbers in square brackets, like [1] or [2][3]. If the passages do not contain the answer, say so."
)
_MARKER = re.compile(r"\[(\d+)\]")


def rag_messages(question: str, context: PackedContext) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Passages:\n\n{context.text}\n\nQuestion: {question}"},
    ]


def cited_markers(answer: str, valid: Sequence[int]) -> list[int]:
    """The citation markers an answer uses, in first-use order, limited to real passages."""
    out: list[int] = []
    for m in _MARKER.finditer(answer):
        n = int(m.group(1))
        if n in valid and n not in out:
            out.append(n)
    return out


@functools.lru_cache(maxsize=8)
def _backend(base_url: str, model: str, api_key: str, timeout_s: float) -> OpenAIChatBackend:
    # no retries: a request waits for no backoff, an unreachable server is a 503 at once;
    # no key from the environment: only the one the server was started with
    return OpenAIChatBackend(model, base_url, api_key=api_key, timeout_s=timeout_s, max_retries=0)


async def stream_chat(
    settings: Settings, messages: list[dict[str, str]], temperature: float = 0.0, max_tokens: int = 512
) -> AsyncIterator[str]:
    """Connect and return an iterator over the answer's text deltas.

    Raises:
        MissingDependency: no LLM configured; Unavailable: the server is unreachable or refused.
    """
    if not settings.llm_base_url or not settings.llm_model:
        raise MissingDependency("no LLM is configured: start the server with --llm-base-url and --llm-model")
    backend = _backend(
        settings.llm_base_url, settings.llm_model, settings.llm_api_key or "", settings.llm_timeout_s
    )
    try:
        return await backend.stream(messages, max_tokens, temperature)
    except InvalidInput as e:  # the LLM server refused: its configuration, not the caller's input
        raise Unavailable(str(e)) from None
