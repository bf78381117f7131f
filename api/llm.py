"""A streaming client for OpenAI-compatible chat completions (vLLM, llama.cpp, OpenAI...),
used by ``/v1/answer``. Connection problems and non-200 answers raise :class:`Unavailable`
before the first token, so the API can still answer 503 instead of a broken stream."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence

from cascade.api.service.context import PackedContext
from cascade.retrieval.errors import MissingDependency, Unavailable, require

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


async def stream_chat(
    settings: Settings, messages: list[dict[str, str]], temperature: float = 0.0, max_tokens: int = 512
) -> AsyncIterator[str]:
    """Connect and return an iterator over the answer's text deltas.

    Raises:
        MissingDependency: no LLM configured; Unavailable: the server is unreachable or refused.
    """
    if not settings.llm_base_url or not settings.llm_model:
        raise MissingDependency("no LLM is configured: start the server with --llm-base-url and --llm-model")
    httpx = require("httpx", "llm")
    url = settings.llm_base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
    payload = {
        "model": settings.llm_model,
        "messages": messages,
        "stream": True,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    client = httpx.AsyncClient(timeout=settings.llm_timeout_s)
    try:
        resp = await client.send(
            client.build_request("POST", url, json=payload, headers=headers), stream=True
        )
    except httpx.HTTPError as e:
        await client.aclose()
        raise Unavailable(
            f"LLM server {settings.llm_base_url} is not reachable: {type(e).__name__}"
        ) from None
    if resp.status_code != 200:
        detail = (await resp.aread())[:200].decode("utf-8", "replace")
        await resp.aclose()
        await client.aclose()
        raise Unavailable(f"LLM server answered {resp.status_code}: {detail}")
    return _deltas(client, resp)


async def _deltas(client, resp) -> AsyncIterator[str]:
    try:
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                choice = json.loads(data)["choices"][0]
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                raise Unavailable(f"LLM server sent a malformed event: {data[:100]}") from None
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                yield delta
    finally:
        await resp.aclose()
        await client.aclose()
