"""Where LLM answers come from: an OpenAI-compatible server or a local HF model.

Listwise rerankers use both; the API's RAG route streams from the server client. Both take a
batch of conversations (lists of ``{"role", "content"}`` messages) and return one answer
text each. The local model can also return next-token logits after an
assistant prefix, which is all FIRST needs (one forward pass, no generation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cascade.retrieval.encoders.batching import pad_batch
from cascade.retrieval.errors import InvalidInput, Unavailable, require
from cascade.retrieval.models import load_error, resolve_device, resolve_dtype, resolve_model_path, to_device

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]

#: Answers that are worth retrying: rate limits and server-side failures.
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class OpenAIChatBackend:
    """The project's one client for OpenAI-compatible chat completions (OpenAI, vLLM, SGLang,
    llama.cpp, TGI): whole answers for a batch of conversations (:meth:`chat`, listwise
    rerankers) and one answer streamed as it is generated (:meth:`stream`, the API's RAG route).

    Both send the same payload, retry the same failures with the same backoff and report
    them with the same messages.

    Args:
        model: the model name the server knows.
        base_url: the API root, e.g. ``"http://localhost:8000/v1"``; ``/chat/completions`` is appended.
        api_key: bearer token; ``None`` reads the environment variable ``api_key_env`` at
            construction; ``""``: no token.
        api_key_env: where to read the key from when ``api_key`` is None.
        timeout_s: per-request timeout (connect, read, write); for a stream, between two events.
        max_retries: retries after the first attempt, for connection errors, timeouts, 429 and 5xx.
        backoff_s: the first retry waits this long, each later one twice as long as the one before.
        concurrency: requests in flight at once across a batch of windows.
        temperature: sampling temperature (0: greedy, as the listwise papers use).

    Raises:
        Unavailable: (from :meth:`chat`, :meth:`stream`) the server did not answer after the
            retries, or sent a malformed answer.
        InvalidInput: (from :meth:`chat`, :meth:`stream`) the server refused the request (4xx
            other than 408, 425 and 429).
    """

    def __init__(self, model: str, base_url: str = "http://localhost:8000/v1", api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0, max_retries: int = 3,
                 backoff_s: float = 1.0, concurrency: int = 4, temperature: float = 0.0):  # fmt: skip
        httpx = require("httpx", "llm")
        if max_retries < 0 or backoff_s < 0 or timeout_s <= 0 or concurrency < 1:
            raise InvalidInput("max_retries and backoff_s must be >= 0, timeout_s > 0, concurrency >= 1")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.max_retries, self.backoff_s, self.concurrency = max_retries, backoff_s, concurrency
        self.temperature, self.timeout_s = temperature, timeout_s
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout_s)
        self._httpx = httpx

    def estimate_tokens(self, text: str) -> int:
        """An upper bound on the token count of ``text`` without the server's tokenizer.

        One token a character: digit-by-digit tokenizers (Llama) spend about 5 tokens on
        ``"[12] >"``, and a budget too small would cut the answer, while an unused budget costs
        nothing (the model stops at its end token).
        """
        return len(text) + 8

    def chat(self, conversations: Sequence[Messages], max_tokens: int) -> list[str]:
        """One answer per conversation, requests run ``concurrency`` at a time."""
        if len(conversations) <= 1 or self.concurrency == 1:
            return [self._complete(m, max_tokens) for m in conversations]
        with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda m: self._complete(m, max_tokens), conversations))

    async def stream(self, messages: Messages, max_tokens: int,
                     temperature: float | None = None) -> AsyncIterator[str]:  # fmt: skip
        """Connect, then return an iterator over the answer's text deltas (server-sent events).

        Connecting, the retries and the status check happen before this returns, so a caller
        can still answer with an error status of its own; a failure after the first delta
        surfaces from the iterator. ``temperature``: this request's, default the backend's.
        """
        payload = self._payload(messages, max_tokens, temperature) | {"stream": True}
        client = self._httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self.timeout_s
        )
        try:
            problem = ""
            for attempt in range(self.max_retries + 1):
                if attempt:
                    await asyncio.sleep(self._backoff(attempt))
                try:
                    request = client.build_request("POST", "/chat/completions", json=payload)
                    response = await client.send(request, stream=True)
                except self._httpx.TransportError as e:
                    problem = self._unreachable(e, attempt)
                    continue
                if response.status_code < 400:
                    return self._deltas(client, response)
                detail = (await response.aread())[:200].decode("utf-8", "replace")
                await response.aclose()
                problem = self._refused(response.status_code, detail, attempt)
            raise self._gave_up(problem)
        except BaseException:
            await client.aclose()
            raise

    def _payload(self, messages: Messages, max_tokens: int, temperature: float | None = None) -> dict:
        return {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": self.temperature if temperature is None else temperature}  # fmt: skip

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
        return self.backoff_s * 2 ** (attempt - 1)

    def _unreachable(self, e: Exception, attempt: int) -> str:
        """The problem to report for a connection that failed (refused, reset, DNS, timeouts)."""
        problem = f"not reachable ({type(e).__name__}: {e})"
        log.warning("LLM server %s: %s (attempt %d)", self.base_url, problem, attempt + 1)
        return problem

    def _refused(self, status: int, detail: str, attempt: int) -> str:
        """The problem to report for an error status worth retrying; a refusal raises at once."""
        if status not in _RETRY_STATUS:
            raise InvalidInput(f"LLM server {self.base_url} refused the request: HTTP {status} {detail}")
        problem = f"HTTP {status} {detail}".rstrip()
        log.warning("LLM server %s: %s (attempt %d)", self.base_url, problem, attempt + 1)
        return problem

    def _gave_up(self, problem: str) -> Unavailable:
        n = self.max_retries + 1
        return Unavailable(
            f"LLM server {self.base_url} did not answer after {n} attempt{'s' if n > 1 else ''}: {problem}"
        )

    def _complete(self, messages: Messages, max_tokens: int) -> str:
        payload = self._payload(messages, max_tokens)
        problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._backoff(attempt))
            try:
                response = self._client.post("/chat/completions", json=payload)
            except self._httpx.TransportError as e:
                problem = self._unreachable(e, attempt)
                continue
            if response.status_code >= 400:
                problem = self._refused(response.status_code, response.text[:200], attempt)
                continue
            try:
                return response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise Unavailable(
                    f"LLM server {self.base_url} sent a malformed chat completion: {response.text[:200]}"
                ) from None
        raise self._gave_up(problem)

    async def _deltas(self, client, response) -> AsyncIterator[str]:
        """The text deltas of a streamed completion; closes the response and its client."""
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    choices = json.loads(data)["choices"]
                    delta = (choices[0].get("delta") or {}).get("content") if choices else None
                except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
                    raise Unavailable(
                        f"LLM server {self.base_url} sent a malformed event: {data[:100]}"
                    ) from None
                if delta:
                    yield delta
        finally:
            await response.aclose()
            await client.aclose()

    def close(self) -> None:
        self._client.close()


class HFCausalLMBackend:
    """A local Hugging Face causal LM: generation for listwise, next-token logits for FIRST.

    Conversations are rendered with the tokenizer's chat template; a tokenizer without one
    (RankVicuna's) gets the Vicuna v1.1 format (``"{system} USER: {user} ASSISTANT:"``).

    Args:
        model: hub id or directory of a causal LM.
        device, dtype: as everywhere (:func:`cascade.retrieval.models.resolve_dtype`).
        batch_size: conversations per forward pass / generate call.
        max_length: context size; longer prompts are cut from the left (with a warning).

    Raises:
        NotFound: the model cannot be loaded.
    """

    def __init__(self, model: str, device: str | None = None, dtype: str | None = None, batch_size: int = 4,
                 max_length: int = 4096):  # fmt: skip
        self._torch = require("torch", "models")
        transformers = require("transformers", "models")
        if batch_size < 1 or max_length < 8:
            raise InvalidInput("batch_size must be >= 1 and max_length >= 8")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        path = resolve_model_path(model)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        except (OSError, ValueError, KeyError) as e:
            raise load_error(model, e) from e
        self.model.to(self.device).eval()
        self.batch_size, self.max_length = batch_size, max_length
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def render(self, messages: Messages, assistant_prefix: str = "") -> str:
        """The prompt text for one conversation, ending where the assistant's answer starts."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            system = " ".join(m["content"] for m in messages if m["role"] == "system")
            turns = [f"{'USER' if m['role'] == 'user' else 'ASSISTANT'}: {m['content']}"
                     for m in messages if m["role"] != "system"]  # fmt: skip
            bos = self.tokenizer.bos_token or ""
            text = bos + " ".join([system, *turns]).strip() + " ASSISTANT:"
        return text + assistant_prefix

    def estimate_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _encode(self, prompts: Sequence[str]) -> list[list[int]]:
        # rendered prompts already hold their special tokens (chat template or BOS above)
        seqs = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        for i, s in enumerate(seqs):
            if len(s) > self.max_length:
                log.warning("prompt of %d tokens cut to the context size %d (cut passages shorter)",
                            len(s), self.max_length)  # fmt: skip
                seqs[i] = s[-self.max_length :]
        return seqs

    def _batches(self, items: Sequence):
        for start in range(0, len(items), self.batch_size):
            yield items[start : start + self.batch_size]

    def _tensors(self, seqs: Sequence[Sequence[int]]):
        ids, mask = pad_batch(seqs, self.pad_id, left=True)
        return to_device(ids, self.device), to_device(mask, self.device)

    def chat(self, conversations: Sequence[Messages], max_tokens: int) -> list[str]:
        """Greedy answers, ``max_tokens`` new tokens at most."""
        out: list[str] = []
        with self._torch.inference_mode():
            for batch in self._batches(list(conversations)):
                ids, mask = self._tensors(self._encode([self.render(m) for m in batch]))
                gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                                          do_sample=False, pad_token_id=self.pad_id)  # fmt: skip
                out += self.tokenizer.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True)
        return out

    def next_token_logits(self, conversations: Sequence[Messages], assistant_prefix: str,
                          token_ids: Sequence[int]) -> np.ndarray:  # fmt: skip
        """Logits of ``token_ids`` for the token after ``assistant_prefix``: [conversations, tokens]."""
        rows = []
        with self._torch.inference_mode():
            for batch in self._batches(list(conversations)):
                ids, mask = self._tensors(self._encode([self.render(m, assistant_prefix) for m in batch]))
                # left padding puts every prompt's last token in the last column
                # positions count real tokens only, as generate() does, so padding changes nothing
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    logits_to_keep=1).logits[:, -1, :]  # fmt: skip
                rows.append(logits[:, list(token_ids)].float().cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, len(token_ids)), dtype=np.float32)
