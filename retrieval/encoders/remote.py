"""A dense encoder that calls an OpenAI-compatible ``POST /v1/embeddings`` endpoint.

Hosted APIs, Hugging Face TEI, Infinity, vLLM and another Cascade (``cascade serve
--embedder``) all answer it. The model is named ``openai:BASE_URL#MODEL``, for example
``openai:http://localhost:8080/v1#bge-small``, so it goes wherever a model id goes (pipeline
YAML ``params.model``, ``cascade index --model``); the index manifest records it with the
vector width the endpoint returned, so queries go to the same endpoint and model and a
server that starts answering with another width is refused. An API key is read from the
environment variable named by ``api_key_env`` when the encoder is built; only the variable's
name is recorded.

Texts go in requests of ``inputs_per_request``; a request that fails to connect, times out or
gets 408/409/425/429/5xx is retried with exponential backoff, waiting what a ``Retry-After``
header asks for when there is one; any other 4xx stops at once with the server's message.
``requests_per_second`` and ``tokens_per_minute`` pace the requests (tokens estimated as
characters / 4, without the server's tokenizer).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import email.utils
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cascade.retrieval.errors import IndexMismatch, InvalidInput, Unavailable, require
from cascade.retrieval.progress import progress

log = logging.getLogger(__name__)

PREFIX = "openai:"
#: statuses worth retrying: timeouts, conflicts, rate limits and server-side failures
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

# the clock and the sleep, one place for the tests to replace
_clock = time.monotonic
_sleep = time.sleep


def is_remote_model(model: str) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def parse_remote_model(model: str) -> tuple[str, str]:
    """``"openai:http://host:8080/v1#name"`` -> ``("http://host:8080/v1", "name")``.

    Raises:
        InvalidInput: not of that form.
    """
    url, _, name = model.removeprefix(PREFIX).partition("#")
    if not is_remote_model(model) or not url.startswith(("http://", "https://")) or not name:
        raise InvalidInput(
            f"a remote embedder is named openai:BASE_URL#MODEL "
            f"(e.g. openai:http://localhost:8080/v1#bge-small), got {model!r}"
        )
    return url.rstrip("/"), name


@dataclass(frozen=True)
class RemoteEncoderConfig:
    """What decides a remote encoder's vectors and how it is called; saved in the manifest.

    Attributes:
        model: ``openai:BASE_URL#MODEL``.
        query_prompt, document_prompt: text prepended to queries / documents before sending.
        normalize: L2-normalize what the server returns (after ``dim``).
        dim: keep the first ``dim`` coordinates (Matryoshka truncation).
        server_dim: the width the endpoint returns; recorded on the first answer, checked on every later one.
        api_key_env: environment variable holding a bearer token; ``None``: no token sent.
        inputs_per_request: texts per request (TEI's default limit is 32).
        max_retries: retries after the first attempt of a request.
        backoff_s, max_backoff_s: the first retry waits ``backoff_s``, each next one twice as
            long, at most ``max_backoff_s``; a ``Retry-After`` header overrides it.
        requests_per_second, tokens_per_minute: pacing; ``None``: unpaced.
        timeout_s: per request.
    """

    model: str
    query_prompt: str = ""
    document_prompt: str = ""
    normalize: bool = False
    dim: int | None = None
    server_dim: int | None = None
    api_key_env: str | None = None
    inputs_per_request: int = 32
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    requests_per_second: float | None = None
    tokens_per_minute: int | None = None
    timeout_s: float = 60.0

    def __post_init__(self):
        parse_remote_model(self.model)
        for name in ("dim", "server_dim", "inputs_per_request", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0 or self.timeout_s <= 0:
            raise InvalidInput("max_retries, backoff_s and max_backoff_s must be >= 0 and timeout_s > 0")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise InvalidInput(f"requests_per_second must be > 0, got {self.requests_per_second!r}")

    @classmethod
    def resolve(cls, model: str, prompts: str | None = None, **overrides) -> RemoteEncoderConfig:
        """A prompt preset (``"e5"``, ``"instruct"``...), then explicit settings; ``None`` values are ignored.

        Raises:
            InvalidInput: an unknown setting (local-model settings such as ``pooling`` included),
                an unknown preset, a malformed model name or a bad value.
        """
        from .dense import PROMPT_PRESETS

        overrides = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(overrides) - set(cls.__dataclass_fields__) - {"model"}
        if unknown:
            raise InvalidInput(
                f"settings {sorted(unknown)} do not apply to a remote embedder; valid: "
                f"{', '.join(f for f in cls.__dataclass_fields__ if f not in ('model', 'server_dim'))}"
            )
        settings: dict[str, Any] = {}
        if prompts is not None:
            if prompts not in PROMPT_PRESETS:
                raise InvalidInput(f"unknown prompt preset {prompts!r}; valid: {', '.join(PROMPT_PRESETS)}")
            settings["query_prompt"], settings["document_prompt"] = PROMPT_PRESETS[prompts]
        return cls(model=model, **(settings | overrides))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteEncoderConfig:
        return cls(**data)


class RateLimiter:
    """Pace calls to at most ``requests_per_second`` and ``tokens_per_minute`` (a sliding
    minute); a call larger than the whole minute's budget waits for an empty window and goes alone."""

    def __init__(self, requests_per_second: float | None = None, tokens_per_minute: int | None = None):
        self.interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self.tokens_per_minute = tokens_per_minute
        self._last: float | None = None
        self._window: collections.deque[tuple[float, int]] = collections.deque()

    def acquire(self, tokens: int = 0) -> float:
        """Wait until a call of ``tokens`` may start; returns the seconds waited."""
        waited = 0.0
        while True:
            now = _clock()
            while self._window and now - self._window[0][0] >= 60.0:
                self._window.popleft()
            wait = 0.0
            if self._last is not None and self.interval:
                wait = self._last + self.interval - now
            if self.tokens_per_minute and self._window:
                used = sum(n for _, n in self._window)
                if used + tokens > self.tokens_per_minute:
                    wait = max(wait, self._window[0][0] + 60.0 - now)
            if wait <= 0:
                break
            _sleep(wait)
            waited += wait
        self._last = now
        if self.tokens_per_minute:
            self._window.append((now, tokens))
        return waited


class RemoteEncoder:
    """Encode texts through an OpenAI-compatible embeddings endpoint.

    Takes the constructor vocabulary of :class:`cascade.retrieval.encoders.dense.DenseEncoder`
    so a retriever builds either the same way; ``device``, ``dtype``, ``batch_size`` and
    ``max_tokens`` concern local models and are ignored.

    Args:
        model: ``openai:BASE_URL#MODEL``.
        prompts: a prompt preset name.
        config: a :class:`RemoteEncoderConfig` (from a manifest) instead of ``model`` and settings.
        **settings: :class:`RemoteEncoderConfig` fields.

    Raises:
        InvalidInput: bad settings; (from ``encode*``) the endpoint refused a request (a 4xx
            other than those retried), e.g. an unknown model or a bad key.
        Unavailable: (from ``encode*``) no answer after the retries, or a malformed answer.
        IndexMismatch: (from ``encode*``) the endpoint returns another width than recorded.

    Example:
        >>> enc = RemoteEncoder("openai:http://localhost:8080/v1#minilm")  # doctest: +SKIP
        >>> enc.encode_queries(["what is a stem cell?"]).shape  # doctest: +SKIP
        (1, 384)
    """

    dtype = "float32"

    def __init__(self, model: str = "", device: str | None = None, dtype: str | None = None,
                 batch_size: int | None = None, max_tokens: int | None = None, show_progress: bool = True,
                 prompts: str | None = None, config: RemoteEncoderConfig | None = None,
                 **settings):  # fmt: skip
        httpx = require("httpx", "llm")
        self.config = config or RemoteEncoderConfig.resolve(model, prompts=prompts, **settings)
        self.base_url, self.model_name = parse_remote_model(self.config.model)
        self.show_progress = show_progress
        self.limiter = RateLimiter(self.config.requests_per_second, self.config.tokens_per_minute)
        headers = {}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if not key:
                raise InvalidInput(f"api_key_env names {self.config.api_key_env}, which is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._httpx = httpx
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.config.timeout_s)

    @classmethod
    def from_config(cls, config: RemoteEncoderConfig, **runtime) -> RemoteEncoder:
        return cls(config=config, show_progress=runtime.get("show_progress", True))

    @property
    def dim(self) -> int:
        """The width of the vectors; when no answer has told it yet (a config from before any
        request, e.g. a build resumed from stored shards), one short request asks the endpoint."""
        if self.config.dim is None and self.config.server_dim is None:
            self._embed(["dimension probe"])
        return self.config.dim or self.config.server_dim

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, self.config.query_prompt)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, self.config.document_prompt)

    def encode(self, texts: Sequence[str], prompt: str = "") -> np.ndarray:
        """float32 ``(len(texts), dim)``, rows in input order."""
        if isinstance(texts, str):
            raise InvalidInput("texts must be a list of strings, not one string")
        texts = [prompt + t for t in texts]
        step = self.config.inputs_per_request
        parts = []
        bar = progress(
            desc="encode", unit="doc", total=len(texts), enabled=self.show_progress and len(texts) >= 1000
        )
        with bar:
            for start in range(0, len(texts), step):
                parts.append(self._embed(texts[start : start + step]))
                bar.update(len(parts[-1]))
        if not parts:
            return np.zeros((0, self.config.dim or self.config.server_dim or 0), dtype=np.float32)
        return self._postprocess(np.concatenate(parts))

    def _postprocess(self, vectors: np.ndarray) -> np.ndarray:
        from .dense import truncate_and_normalize

        return truncate_and_normalize(vectors, self.dim, self.config.normalize)

    # -- one request -----------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.limiter.acquire(sum(len(t) // 4 + 1 for t in texts))
        payload = {"model": self.model_name, "input": texts, "encoding_format": "float"}
        vectors = self._parse(self._post(payload), len(texts))
        width = vectors.shape[1]
        if self.config.server_dim is None:
            if self.config.dim is not None and self.config.dim > width:
                raise InvalidInput(
                    f"dim={self.config.dim} exceeds the {width} dims {self.config.model} returns"
                )
            self.config = dataclasses.replace(self.config, server_dim=width)
        elif width != self.config.server_dim:
            raise IndexMismatch(
                f"{self.config.model} now returns {width}-dim vectors; it returned "
                f"{self.config.server_dim} when the index was built"
            )
        return vectors

    def _post(self, payload: dict) -> dict:
        cfg = self.config
        problem, wait = "", 0.0
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                log.warning("embedding endpoint %s: %s; retry %d of %d in %.2f s",
                            self.base_url, problem, attempt, cfg.max_retries, wait)  # fmt: skip
                _sleep(wait)
            wait = min(cfg.max_backoff_s, cfg.backoff_s * 2**attempt)
            try:
                response = self._client.post("/embeddings", json=payload)
            except self._httpx.TransportError as e:
                problem = f"not reachable ({type(e).__name__}: {_one_line(str(e))})"
                continue
            if response.status_code < 400:
                try:
                    return response.json()
                except ValueError:
                    raise Unavailable(f"embedding endpoint {self.base_url} sent a non-JSON answer: "
                                      f"{_one_line(response.text)[:200]}") from None  # fmt: skip
            detail = _error_detail(response)
            if response.status_code not in RETRY_STATUS:
                raise InvalidInput(
                    f"embedding endpoint {self.base_url} refused model {self.model_name!r}: "
                    f"HTTP {response.status_code}: {detail}"
                )
            problem = f"HTTP {response.status_code}: {detail}"
            wait = _retry_after(response.headers.get("retry-after"), wait)
        n = cfg.max_retries + 1
        raise Unavailable(
            f"embedding endpoint {self.base_url} did not answer after {n} attempt{'s' if n > 1 else ''}: {problem}"
        )

    def _parse(self, body: Any, n: int) -> np.ndarray:
        """The vectors of an embeddings answer, ordered by their ``index`` field."""
        try:
            data = body["data"]
            order = [int(d["index"]) for d in data]
            rows = [_vector(d["embedding"]) for d in data]
            if sorted(order) != list(range(n)) or len({len(r) for r in rows}) != 1:
                raise ValueError(f"{len(data)} embeddings for {n} inputs, indexes {order[:8]}")
        except (KeyError, TypeError, ValueError) as e:
            raise Unavailable(
                f"embedding endpoint {self.base_url} sent a malformed answer: {_one_line(str(e))[:200]}"
            ) from None
        out = np.empty((n, len(rows[0])), dtype=np.float32)
        out[order] = np.stack(rows)
        return out

    def close(self) -> None:
        self._client.close()


def _vector(embedding) -> np.ndarray:
    if isinstance(embedding, str):  # base64 little-endian float32, for servers that send it anyway
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


def _retry_after(value: str | None, default: float) -> float:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); ``default`` without one."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def _error_detail(response) -> str:
    """The server's own message: OpenAI's ``error.message``, FastAPI's ``detail``, TEI's ``error``."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text)[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        message = err.get("message") if isinstance(err, dict) else err
        message = message or body.get("detail") or body.get("message")
        if message:
            return _one_line(str(message))[:300]
    return _one_line(response.text)[:300]


def _one_line(text: str) -> str:
    return " ".join(text.split())
