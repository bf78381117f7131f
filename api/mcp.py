"""``cascade mcp``: the service engine as a Model Context Protocol server.

MCP clients (Claude Desktop, IDE agents, ``mcp`` SDK sessions) call six tools over stdio or
streamable HTTP: ``search``, ``get_document``, ``rerank``, ``context``, ``list_collections``
and ``evaluate_run``. They run in this process on the same :class:`Engine` that
``cascade serve`` builds (:func:`cascade.api.app.build_engine`), so a collection answers an
MCP ``search`` exactly as it answers ``POST /v1/search``.

Errors the user can fix (the :class:`CascadeError` tree: unknown collection, bad filter,
unknown metric ...) come back as MCP tool errors (``isError``) carrying the one-line
message; the server keeps serving. Logs go to stderr only: over stdio, stdout is the wire.

Example (an MCP client's server entry)::

    {"mcpServers": {"cascade": {"command": "cascade",
                                "args": ["mcp", "--data-dir", "/abs/path/cascade-data"]}}}
"""

import argparse
import contextlib
import inspect
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from cascade.eval.metrics import DEFAULT_METRICS
from cascade.rerank.registry import RERANKERS
from cascade.retrieval.errors import CascadeError, InvalidInput, MissingDependency, NotFound

if TYPE_CHECKING:
    from cascade.api.service.engine import Engine

log = logging.getLogger("cascade.mcp")

_T = TypeVar("_T")

METRICS_DEFAULT = ",".join(DEFAULT_METRICS)

#: What the MCP client shows the model about this server.
INSTRUCTIONS = (
    "Cascade: retrieval and reranking over the collections of one data directory. "
    "Call list_collections first; search returns ranked passages with ids and scores; "
    "context packs the best passages into a token budget with numbered citations; "
    "get_document returns a document's record; rerank scores texts against a query; "
    "evaluate_run scores a TREC run against relevance judgments."
)

# -- tool results (each one's JSON schema is the tool's output schema) ------------------------


class Hit(BaseModel):
    id: str = Field(description="chunk id (a passage of the document)")
    doc_id: str = Field(description="the document the chunk belongs to")
    score: float
    title: str = ""
    text: str = Field("", description="the chunk's text, cut to snippet_chars")
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResult(BaseModel):
    collection: str
    pipeline: str = Field(description="the pipeline that ran")
    query: str
    hits: list[Hit] = Field(description="best first")


class DocumentRecord(BaseModel):
    id: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    num_chunks: int = Field(description="passages the document was split into")
    segment: int | None = Field(None, description="the segment holding it (None for a read-only index)")


class RerankItem(BaseModel):
    index: int = Field(description="position in the documents given")
    score: float
    text: str


class RerankResult(BaseModel):
    results: list[RerankItem] = Field(description="best first")


class Citation(BaseModel):
    marker: int = Field(description="the [n] marker in the context text")
    id: str = Field(description="chunk id")
    doc_id: str
    title: str
    start: int | None = Field(description="character offset of the passage in the document")
    end: int | None
    score: float
    tokens: int


class ContextResult(BaseModel):
    context: str = Field(description="numbered passages, '[n] title\\ntext', separated by blank lines")
    tokens: int = Field(description="tokens the context uses (at most max_tokens)")
    citations: list[Citation]
    duplicates_removed: int
    skipped_for_budget: int


class CollectionSummary(BaseModel):
    name: str
    num_documents: int
    num_chunks: int
    pipeline: str = Field(description="the pipeline a search uses when it names none")
    read_only: bool


class CollectionsResult(BaseModel):
    collections: list[CollectionSummary]


class EvaluationResult(BaseModel):
    metrics: dict[str, float] = Field(description="mean over the judged queries (a query the run lacks counts 0)")
    num_queries: int = Field(description="judged queries")
    num_run_queries: int = Field(description="queries in the run")
    relevance_level: int
    per_query: dict[str, dict[str, float]] | None = None


# -- the tools ------------------------------------------------------------------------------

MetricsArg = Annotated[
    str | list[str],
    Field(description="comma-separated or a list: ndcg, recall, mrr, map, p, each optionally @k (ndcg@10)"),
]
RunArg = Annotated[
    str,
    Field(
        description="a TREC run as text (lines 'qid Q0 docid rank score tag') or the path of a run file",
        min_length=1,
    ),
]
RerankerName = Annotated[
    str | None,
    Field(
        description="a reranker this server serves (an alias of `cascade mcp --reranker ALIAS=FAMILY:CHECKPOINT`, "
        f"or its checkpoint) or a family ({', '.join(RERANKERS.names())}); default: the first served"
    ),
]
QrelsArg = Annotated[
    str,
    Field(
        description="TREC qrels as text (lines 'qid 0 docid relevance'), the path of a qrels file (TREC, "
        "or BEIR's query-id/corpus-id/score .tsv), or a BEIR / MS MARCO dataset directory",
        min_length=1,
    ),
]


def _call(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)``, with the project's errors as MCP tool errors carrying their one line."""
    from mcp.server.mcpserver.exceptions import ToolError

    try:
        return fn(*args, **kwargs)
    except CascadeError as e:
        raise ToolError(_one_line(e)) from e


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _snippet(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rstrip() + " …"


def _existing_path(value: str, what: str, min_fields: int, allow_paths: bool) -> Path | None:
    """The file or directory ``value`` names, or ``None`` when ``value`` is the content itself
    (several lines, or one line of at least ``min_fields`` fields that names no file).

    Raises:
        InvalidInput: a path when paths are not allowed (nothing is looked up then).
        NotFound: a path that does not exist.
    """
    if "\n" in value.strip():
        return None
    if allow_paths:
        with contextlib.suppress(OSError, ValueError):
            path = Path(value).expanduser()
            if path.exists():
                return path
    if len(value.split()) >= min_fields:
        return None
    if not allow_paths:
        raise InvalidInput(f"this server reads no files (streamable HTTP without --allow-paths): give the {what} as text")
    raise NotFound(f"{what} {value!r}: no such file or directory (or give the {what} itself as text)")


@contextlib.contextmanager
def _as_file(value: str, what: str, min_fields: int, allow_paths: bool) -> Iterator[Path]:
    """A run or qrels argument as a file: the path it names, or its text in a temporary file
    (whose name becomes ``what`` in error messages)."""
    path = _existing_path(value, what, min_fields, allow_paths)
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="cascade-mcp-") as tmp:
        path = Path(tmp) / what
        path.write_text(value if value.endswith("\n") else value + "\n", encoding="utf-8")
        try:
            yield path
        except CascadeError as e:
            raise type(e)(str(e).replace(str(path), what)) from None


def _read_qrels(path: Path, split: str) -> tuple[dict, int]:
    """Qrels and the relevance level of a dataset directory, a TREC file or a BEIR .tsv file."""
    from cascade.eval.datasets import load_dataset, read_qrels_trec, read_qrels_tsv

    if path.is_dir():
        dataset = load_dataset(path, split)
        return dataset.qrels, dataset.relevance_level
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    trec = len(first.split()) == 4
    return (read_qrels_trec(path) if trec else read_qrels_tsv(path)), 1


def evaluate_text(
    run: str,
    qrels: str,
    metrics: str | list[str] = METRICS_DEFAULT,
    split: str = "test",
    relevance_level: int | None = None,
    per_query: bool = False,
    allow_paths: bool = True,
) -> EvaluationResult:
    """What the ``evaluate_run`` tool answers (see there)."""
    from cascade.eval import metrics as m
    from cascade.eval.trec import read_run

    names = m.parse_metrics(metrics)
    with _as_file(run, "run", 6, allow_paths) as run_file:
        ranked = read_run(run_file)
    with _as_file(qrels, "qrels", 3, allow_paths) as qrels_file:
        judged, level = _read_qrels(qrels_file, split)
    if not judged:
        raise InvalidInput("the qrels judge no query")
    level = level if relevance_level is None else relevance_level
    scores = m.evaluate(ranked, judged, names, level)
    pq = m.per_query(ranked, judged, names, level) if per_query else None
    return EvaluationResult(
        metrics=scores, num_queries=len(judged), num_run_queries=len(ranked), relevance_level=level, per_query=pq
    )


def build_server(engine: "Engine", allow_paths: bool = True, name: str = "cascade"):
    """An ``mcp`` :class:`MCPServer` whose tools call ``engine`` (which stays the caller's to close).

    Args:
        allow_paths: whether ``evaluate_run`` may read files named by the client (a run, qrels,
            a dataset directory); off, both are given as text.
    """
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    # the tools' annotations are evaluated here, at definition: they are the input schemas
    from cascade.api.schemas import MAX_K, CollectionName, Filter, PipelineArg, QueryText

    server = MCPServer(name, instructions=INSTRUCTIONS, log_level="WARNING")
    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    def tool(fn: Callable) -> Callable:
        """Register ``fn`` as a tool: its signature is the input schema, its docstring the description."""
        server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), annotations=reads)
        return fn

    @tool
    def search(
        collection: CollectionName,
        query: QueryText,
        k: Annotated[int, Field(ge=1, le=MAX_K, description="hits to return")] = 10,
        pipeline: PipelineArg = None,
        filter: Annotated[
            Filter | None,
            Field(description='metadata filter, MongoDB-style: {"year": {"$gte": 2020}, "lang": {"$in": ["en"]}}'),
        ] = None,
        snippet_chars: Annotated[int, Field(ge=0, le=100_000, description="text kept per hit")] = 500,
    ) -> SearchResult:
        """Search a collection: the top k passages for the query, best first, with their scores,
        titles, text snippets and metadata. The pipeline defaults to the collection's own."""
        spec, out = _call(engine.search, collection, [query], pipeline=pipeline, k=k, where=filter)
        hits = []
        for h in out.hits[0]:
            doc = h.document
            hits.append(
                Hit(
                    id=h.id, doc_id=h.doc_id, score=float(h.score),
                    title=doc.title if doc else "", text=_snippet(doc.text, snippet_chars) if doc else "",
                    metadata=dict(doc.metadata) if doc else {},
                )  # fmt: skip
            )
        return SearchResult(collection=collection, pipeline=spec.name, query=query, hits=hits)

    @tool
    def get_document(
        collection: CollectionName,
        id: Annotated[str, StringConstraints(min_length=1, max_length=512), Field(description="document id")],
    ) -> DocumentRecord:
        """One document's record in a collection: title, metadata and how many passages it was split
        into. Its text is in the passages that search and context return."""
        record = _call(lambda: engine.collection(collection).get_document(id))
        return DocumentRecord.model_validate(record)

    @tool
    def rerank(
        query: QueryText,
        documents: Annotated[list[str], Field(min_length=1, max_length=1000, description="texts to score")],
        model: RerankerName = None,
        top_n: Annotated[int | None, Field(ge=1, description="keep the best n (default: all)")] = None,
    ) -> RerankResult:
        """Score texts against a query with a reranker model and return them best first, each with its
        index in the input and its score. The models are the server's configuration."""
        ranked = _call(engine.rerank, model, query, documents, top_n=top_n)
        return RerankResult(results=[RerankItem(index=i, score=s, text=documents[i]) for i, s in ranked])

    @tool
    def context(
        collection: CollectionName,
        query: QueryText,
        max_tokens: Annotated[int, Field(ge=16, le=128_000, description="token budget of the context")] = 1024,
        k: Annotated[int, Field(ge=1, le=MAX_K, description="passages to consider")] = 20,
        pipeline: PipelineArg = None,
        filter: Annotated[Filter | None, Field(description="metadata filter, as for search")] = None,
        tokenizer: Annotated[
            str | None, Field(description="whitespace (default) or a tokenizer model the server allows")
        ] = None,
    ) -> ContextResult:
        """Context for answering a question: the best passages for the query, near-duplicates
        removed, packed into max_tokens and numbered [1], [2], ... Each citation maps a marker
        back to the document id, title and character span it came from."""
        ctx = _call(
            engine.context, collection, query, pipeline=pipeline, k=k, where=filter, max_tokens=max_tokens,
            tokenizer=tokenizer,
        )  # fmt: skip
        citations = [
            Citation(marker=p.marker, id=p.id, doc_id=p.doc_id, title=p.title, start=p.start, end=p.end,
                     score=float(p.score), tokens=p.tokens)  # fmt: skip
            for p in ctx.passages
        ]
        return ContextResult(
            context=ctx.text, tokens=ctx.tokens, citations=citations,
            duplicates_removed=ctx.duplicates_removed, skipped_for_budget=ctx.skipped_for_budget,
        )  # fmt: skip

    @tool
    def list_collections() -> CollectionsResult:
        """The collections this server searches, with their sizes and default pipelines."""

        def summaries() -> list[CollectionSummary]:
            out = []
            for n in engine.collection_names():
                try:
                    coll = engine.collection(n)
                except NotFound:  # dropped meanwhile
                    continue
                info = coll.info()
                out.append(
                    CollectionSummary(
                        name=n, num_documents=info["num_documents"], num_chunks=info["num_chunks"],
                        pipeline=coll.pipeline.name, read_only=bool(coll.read_only),
                    )  # fmt: skip
                )
            return out

        return CollectionsResult(collections=_call(summaries))

    @tool
    def evaluate_run(
        run: RunArg,
        qrels: QrelsArg,
        metrics: MetricsArg = METRICS_DEFAULT,
        split: Annotated[str, Field(description="the split of a dataset directory's qrels")] = "test",
        relevance_level: Annotated[
            int | None, Field(ge=0, description="lowest relevant grade for binary metrics (default: 1, or the dataset's)")
        ] = None,
        per_query: Annotated[bool, Field(description="also return each query's values")] = False,
    ) -> EvaluationResult:
        """Score a TREC run against relevance judgments (nDCG, recall, MRR, MAP, precision) with
        trec_eval's definitions; runs are scored in their rank order."""
        return _call(evaluate_text, run, qrels, metrics, split, relevance_level, per_query, allow_paths)

    return server


# -- cascade mcp ----------------------------------------------------------------------------


def _require_sdk() -> None:
    """Raises: MissingDependency naming the ``mcp`` extra (also for an ``mcp`` older than 2)."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "the MCP server needs the mcp package, which is not installed: pip install 'cascade-search[mcp]'"
        ) from None
    try:
        import mcp.server.mcpserver  # noqa: F401
    except ImportError:
        from importlib.metadata import version

        raise MissingDependency(
            f"the MCP server needs mcp 2 or later (installed: {version('mcp')}): pip install -U 'cascade-search[mcp]'"
        ) from None


def cmd_mcp(args) -> int:
    from .app import build_engine
    from .server import parse_indexes, parse_models
    from .settings import Settings

    _require_sdk()
    transport: Literal["stdio", "http"] = args.transport
    try:
        settings = Settings(
            data_dir=Path(args.data_dir).resolve(),
            indexes=parse_indexes(args.index),
            index_pipeline=args.index_pipeline,
            rerankers=parse_models(args.reranker, "--reranker", with_family=True),
        )
    except ValidationError as e:
        raise InvalidInput(f"invalid settings: {e.errors()[0]['msg']}") from None
    engine = build_engine(settings)
    try:
        if not engine.collection_names():
            log.warning("no collections in %s (create them with `cascade collection create`)", settings.data_dir)
        server = build_server(engine, allow_paths=transport == "stdio" or args.allow_paths)
        if transport == "stdio":
            log.info("serving MCP over stdio for %s", settings.data_dir)
            server.run("stdio")
        else:
            print(f"cascade mcp: serving http://{args.host}:{args.port}{args.path}", file=sys.stderr, flush=True)
            server.run("streamable-http", host=args.host, port=args.port, streamable_http_path=args.path)
    finally:
        engine.close()
    return 0


def add_mcp_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cascade mcp`` on the CLI's subparsers."""
    m = subparsers.add_parser(
        "mcp", help="run an MCP server (stdio or streamable HTTP): search, context, rerank, evaluate tools"
    )
    m.add_argument("--data-dir", type=Path, default=Path("cascade-data"), help="where collections live")
    m.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                   help="stdio (an MCP client starts this command) or streamable HTTP")  # fmt: skip
    m.add_argument("--host", default="127.0.0.1", help="HTTP: interface to bind (default: loopback only)")
    m.add_argument("--port", type=int, default=8000, help="HTTP: port")
    m.add_argument("--path", default="/mcp", help="HTTP: the endpoint's path")
    m.add_argument(
        "--index", action="append", metavar="NAME=DIR",
        help="serve a `cascade index` directory as read-only collection NAME (repeatable)",
    )  # fmt: skip
    m.add_argument("--index-pipeline", default="bm25", help="preset the --index collections search by default")
    m.add_argument(
        "--reranker", action="append", metavar="ALIAS=FAMILY:CHECKPOINT",
        help="a reranker for the rerank tool, e.g. ce=cross-encoder:/models/ce (repeatable; the first is the default)",
    )  # fmt: skip
    m.add_argument(
        "--allow-paths", action="store_true",
        help="HTTP: let evaluate_run read run, qrels and dataset paths on this machine (stdio always may)",
    )  # fmt: skip
    m.set_defaults(func=cmd_mcp)
    return m
