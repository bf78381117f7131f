"""The RAG backend: ``POST /v1/context`` packs the best passages into a token budget with
citations; ``POST /v1/answer`` streams (SSE) an LLM's answer over that context."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from cascade.api.auth import Caller
from cascade.api.concurrency import run_search
from cascade.api.limits import check_context, check_search
from cascade.api.llm import cited_markers, rag_messages, stream_chat
from cascade.api.schemas import AnswerIn, Citation, ContextIn, ContextOut
from cascade.api.service.context import PackedContext, Usefulness
from cascade.retrieval.errors import CascadeError

router = APIRouter(prefix="/v1", tags=["rag"])


async def _context(body: ContextIn, request: Request) -> PackedContext:
    check_search(request, body.k, 1, body.pipeline)
    check_context(request, body.max_tokens)
    ev = body.evaluator
    usefulness = Usefulness(ev.upper, ev.lower, ev.reranker) if ev is not None else None
    return await run_search(
        request, request.app.state.engine.context,
        body.collection, body.query, body.pipeline, body.k, body.filter,
        body.max_tokens, body.tokenizer, body.dedup_threshold, usefulness,
    )  # fmt: skip


def _citations(ctx: PackedContext) -> list[Citation]:
    return [Citation(**vars(p)) for p in ctx.passages]


@router.post("/context", response_model=ContextOut)
async def context(body: ContextIn, request: Request, who: Caller):
    who.check(body.collection)
    ctx = await _context(body, request)
    return ContextOut(
        context=ctx.text, tokens=ctx.tokens, passages=_citations(ctx),
        duplicates_removed=ctx.duplicates_removed, skipped_for_budget=ctx.skipped_for_budget,
        confidence=ctx.confidence, dropped_not_useful=ctx.dropped_not_useful if ctx.confidence else None,
    )  # fmt: skip


def _sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


@router.post("/answer")
async def answer(body: AnswerIn, request: Request, who: Caller):
    """Server-sent events: ``citations`` (the numbered passages), then ``data`` events with
    ``{"delta": text}``, then ``done`` with the full answer and the markers it cites. With
    ``"stream": false``: one JSON object with the same content."""
    who.check(body.collection)
    ctx = await _context(body, request)
    settings = request.app.state.settings
    deltas = await stream_chat(
        settings, rag_messages(body.query, ctx), body.temperature, body.max_answer_tokens
    )
    citations = [c.model_dump() for c in _citations(ctx)]
    valid = [p.marker for p in ctx.passages]
    if not body.stream:
        text = "".join([d async for d in deltas])
        return {"answer": text, "citations": citations, "cited": cited_markers(text, valid)}

    async def events():
        yield _sse({"passages": citations}, "citations")
        parts: list[str] = []
        try:
            async for d in deltas:
                parts.append(d)
                yield _sse({"delta": d})
        except CascadeError as e:  # the stream has begun: report in-band, the status is sent
            yield _sse({"error": {"type": type(e).__name__, "message": str(e)}}, "error")
            return
        text = "".join(parts)
        yield _sse({"answer": text, "cited": cited_markers(text, valid)}, "done")

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
