"""Collections: create, list, inspect, drop; ingest documents (JSON, NDJSON, files); delete;
snapshots and restore."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from cascade.api.auth import Caller
from cascade.api.ingest import documents_from_upload, parse_json_documents, parse_ndjson
from cascade.api.limits import check_documents
from cascade.api.schemas import (
    CollectionInfo,
    CollectionList,
    CreateCollection,
    DeleteIn,
    DeleteOut,
    DocumentsIn,
    IngestOut,
    RestoreIn,
    SnapshotList,
    SnapshotOut,
)
from cascade.retrieval.errors import InvalidInput

router = APIRouter(prefix="/v1/collections", tags=["collections"])

_NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


def _inlined(schema: dict) -> dict:
    """``schema`` with its ``$defs`` references replaced by the definitions: a ``#/$defs/...``
    reference inside the OpenAPI document would point at the document's root, where there is none."""
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


_INGEST_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": _inlined(DocumentsIn.model_json_schema())},
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "one document object per line"}
            },
        },
        "required": True,
    }
}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CollectionInfo)
async def create_collection(body: CreateCollection, request: Request, who: Caller):
    who.check(body.name)
    engine = request.app.state.engine
    coll = await run_in_threadpool(
        engine.create_collection, body.name, body.pipeline, body.chunking.model_dump(), body.compaction
    )
    return coll.info()


@router.get("", response_model=CollectionList)
async def list_collections(request: Request, who: Caller):
    return {"collections": [n for n in request.app.state.engine.collection_names() if who.allows(n)]}


@router.get("/{name}", response_model=CollectionInfo)
async def get_collection(name: str, request: Request, who: Caller):
    who.check(name)
    return request.app.state.engine.collection(name).info()


@router.delete("/{name}")
async def drop_collection(name: str, request: Request, who: Caller):
    who.check(name)
    await run_in_threadpool(request.app.state.engine.drop_collection, name)
    return {"collection": name, "dropped": True}


async def _ingest(request: Request, name: str, docs) -> IngestOut:
    check_documents(request, docs)
    coll = request.app.state.engine.writable_collection(name)
    result = await run_in_threadpool(coll.upsert, docs)
    request.app.state.metrics.documents.labels(name).inc(result.added + result.updated)
    return IngestOut(collection=name, **vars(result))


@router.post("/{name}/documents", response_model=IngestOut, openapi_extra=_INGEST_BODY)
async def ingest_documents(name: str, request: Request, who: Caller):
    """Add or replace documents: a JSON ``{"documents": [...]}`` body, or NDJSON (one
    document per line). Unchanged documents are skipped."""
    who.check(name)
    request.app.state.engine.writable_collection(name)  # 404 / 409 before reading a large body
    body = await request.body()
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype in _NDJSON_TYPES:
        docs = parse_ndjson(body)
    elif ctype in ("application/json", ""):
        docs = parse_json_documents(body)
    else:
        raise InvalidInput(
            f"unsupported content type {ctype!r}; send application/json or application/x-ndjson"
        )
    return await _ingest(request, name, docs)


@router.post("/{name}/files", response_model=IngestOut)
async def upload_files(name: str, request: Request, files: Annotated[list[UploadFile], File()], who: Caller):
    """Add or replace documents from uploaded files (multipart): .json, .jsonl/.ndjson,
    .csv/.tsv (columns id, text, title; the rest becomes metadata), .txt/.md/.html (one
    document per file, id = file name)."""
    who.check(name)
    request.app.state.engine.writable_collection(name)
    docs = []
    for f in files:
        docs.extend(documents_from_upload(f.filename or "", await f.read()))
    return await _ingest(request, name, docs)


@router.post("/{name}/delete", response_model=DeleteOut)
async def delete_documents(name: str, body: DeleteIn, request: Request, who: Caller):
    """Delete documents by id and/or by a metadata filter."""
    who.check(name)
    coll = request.app.state.engine.writable_collection(name)
    n = await run_in_threadpool(coll.delete, body.ids, body.filter)
    return DeleteOut(collection=name, deleted=n)


@router.delete("/{name}/documents/{doc_id:path}", response_model=DeleteOut)
async def delete_document(name: str, doc_id: str, request: Request, who: Caller):
    who.check(name)
    coll = request.app.state.engine.writable_collection(name)
    n = await run_in_threadpool(coll.delete, [doc_id])
    return DeleteOut(collection=name, deleted=n)


@router.get("/{name}/documents/{doc_id:path}")
async def get_document(name: str, doc_id: str, request: Request, who: Caller):
    who.check(name)
    return request.app.state.engine.collection(name).get_document(doc_id)


@router.post("/{name}/compact")
async def compact(name: str, request: Request, who: Caller):
    """Merge every segment into one now (normally compaction runs by itself)."""
    who.check(name)
    coll = request.app.state.engine.writable_collection(name)
    merged = await run_in_threadpool(coll.compact, True)
    return {"collection": name, "compacted": merged, "segments": len(coll.info()["segments"])}


@router.post("/{name}/snapshots", status_code=status.HTTP_201_CREATED, response_model=SnapshotOut)
async def create_snapshot(name: str, request: Request, who: Caller):
    """Archive the collection at its current commit (searches and writes go on meanwhile)."""
    who.check(name)
    info = await run_in_threadpool(request.app.state.engine.snapshot, name)
    return info.to_json()


@router.get("/{name}/snapshots", response_model=SnapshotList)
async def list_snapshots(name: str, request: Request, who: Caller):
    who.check(name)
    snaps = request.app.state.engine.snapshots.list(name)
    return {"collection": name, "snapshots": [s.to_json() for s in snaps]}


@router.post("/{name}/snapshots/{snapshot}/restore", response_model=CollectionInfo)
async def restore_snapshot(name: str, snapshot: str, request: Request, who: Caller, body: RestoreIn | None = None):
    """Bring the snapshot back as ``name`` (replacing it atomically) or as ``body.name``; a
    damaged archive is refused (422) and nothing changes."""
    who.check(name)
    target = body.name if body is not None and body.name else name
    who.check(target)
    engine = request.app.state.engine
    return await run_in_threadpool(engine.restore, engine.snapshots.path(name, snapshot), target)
