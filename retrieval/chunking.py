"""The one chunking configuration: windows of at most ``max_tokens`` tokens overlapping by
``overlap`` tokens.

Passage chunking for collections (:mod:`cascade.indexing.chunking`, whitespace tokens), late
and naive chunk embeddings (:mod:`cascade.retrieval.encoders.late_chunking`, model tokens),
stored collection configs and the API's request bodies all use :class:`ChunkConfig`, so the
fields, their limits and their error messages are defined once. It lives in the bottom
layer because late chunking, a retrieval encoder, needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InvalidInput

#: The largest window: past it, chunking no longer cuts a long document into passages.
MAX_CHUNK_TOKENS = 8192
#: The largest overlap: more would repeat most of every window in the next one.
MAX_CHUNK_OVERLAP = 1024


def _problems(e: ValidationError) -> str:
    problems = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {msg}" if where else msg)
    return "; ".join(problems)


class ChunkConfig(BaseModel):
    """How texts are cut into windows.

    Validated where it enters: nested in another model (a collection config, a request
    body), a bad value is part of that model's ``ValidationError``; from plain arguments,
    :meth:`parse` refuses it with :class:`InvalidInput`, like every library-level error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(256, ge=1, le=MAX_CHUNK_TOKENS, description="tokens per chunk, at most")
    overlap: int = Field(32, ge=0, le=MAX_CHUNK_OVERLAP, description="tokens shared by neighbouring chunks")

    @model_validator(mode="after")
    def _overlap_below_max_tokens(self) -> Self:
        # a window must reach past its overlap, or chunking never advances
        if self.overlap >= self.max_tokens:
            raise ValueError(f"overlap ({self.overlap}) must be below max_tokens ({self.max_tokens})")
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """Validate fields given as plain data; the problems become one :class:`InvalidInput` line."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InvalidInput(f"invalid chunking: {_problems(e)}") from None
