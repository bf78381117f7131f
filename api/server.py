"""``cascade serve``: the REST API under uvicorn, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cascade.retrieval.errors import InvalidInput, require

log = logging.getLogger("cascade.serve")


def parse_api_keys(values: list[str] | None, keys_file: Path | None) -> dict[str, list[str]] | None:
    """``KEY`` (all collections) or ``KEY:coll1,coll2``; a JSON file maps key -> list."""
    keys: dict[str, list[str]] = {}
    if keys_file is not None:
        try:
            data = json.loads(Path(keys_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InvalidInput(f"cannot read API keys from {keys_file}: {e}") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise InvalidInput(f'{keys_file}: expected {{"KEY": ["collection" or "*", ...]}}')
        keys.update(data)
    for v in values or []:
        key, _, scopes = v.partition(":")
        keys[key] = [s for s in scopes.split(",") if s] if scopes else ["*"]
    return keys or None


def parse_indexes(values: list[str] | None) -> dict[str, Path]:
    """``NAME=DIR`` pairs: index directories served as read-only collections (absolute paths,
    so replicas on other processes or machines find them)."""
    out: dict[str, Path] = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise InvalidInput(f"--index expects NAME=DIR, got {v!r}")
        if name in out:
            raise InvalidInput(f"--index {name} is given twice")
        out[name] = Path(path).resolve()
    return out


def parse_models(values: list[str] | None, flag: str, with_family: bool = False) -> dict:
    """``ALIAS=CHECKPOINT`` pairs (``--embedder``, ``--sparse-embedder``), or with ``with_family``
    ``ALIAS=FAMILY:CHECKPOINT`` (``--reranker``: FAMILY a reranker of the registry) -> alias ->
    checkpoint, or alias -> {"family", "checkpoint"}. Checkpoints that are paths are made absolute.

    Raises:
        InvalidInput: a malformed value, an unknown family or an alias given twice, in one line.
    """
    from cascade.rerank.registry import RERANKERS

    shape = "ALIAS=FAMILY:CHECKPOINT" if with_family else "ALIAS=CHECKPOINT"
    out: dict = {}
    for v in values or []:
        alias, sep, rest = v.partition("=")
        family, checkpoint = rest.partition(":")[::2] if with_family else (None, rest)
        if not sep or not alias or not checkpoint or (with_family and not family):
            example = " (e.g. ce=cross-encoder:/models/ce)" if with_family else ""
            raise InvalidInput(f"{flag} expects {shape}{example}, got {v!r}")
        if with_family and family not in RERANKERS:
            raise InvalidInput(f"{flag} {v}: unknown reranker family {family!r}; families: {', '.join(RERANKERS.names())}")
        if alias in out:
            raise InvalidInput(f"{flag} {alias} is given twice")
        if Path(checkpoint).expanduser().is_dir():
            checkpoint = str(Path(checkpoint).expanduser().resolve())
        out[alias] = {"family": family, "checkpoint": checkpoint} if with_family else checkpoint
    return out


def cmd_serve(args) -> int:
    from .app import create_app
    from .settings import Settings

    uvicorn = require("uvicorn", "serve")
    from pydantic import ValidationError

    from cascade.retrieval.threads import resolve_threads

    if args.ray and args.threads is not None:
        raise InvalidInput("--threads sets this process's threads; with --ray each replica's follow --replica-cpus")  # fmt: skip
    threads = None if args.ray else resolve_threads(args.threads)  # Ray sizes each replica's own
    try:
        settings = Settings(
            data_dir=Path(args.data_dir).resolve(),
            indexes=parse_indexes(args.index),
            index_pipeline=args.index_pipeline,
            api_keys=parse_api_keys(args.api_key, args.api_keys_file),
            max_request_bytes=int(args.max_request_mb * 1024 * 1024),
            search_threads=args.search_threads,
            threads=threads,
            max_queued=args.max_queued,
            request_timeout_s=args.request_timeout,
            llm_base_url=args.llm_base_url,
            llm_model=args.llm_model,
            llm_api_key=args.llm_api_key,
            rerankers=parse_models(args.reranker, "--reranker", with_family=True),
            embedders=parse_models(args.embedder, "--embedder"),
            sparse_embedders=parse_models(args.sparse_embedder, "--sparse-embedder"),
        )
    except ValidationError as e:
        raise InvalidInput(f"invalid settings: {e.errors()[0]['msg']}") from None
    if args.ray:
        from .ray_serve import RayServeConfig, run

        config = RayServeConfig(args.shard_replicas, args.reranker_replicas, args.reranker_gpus, args.replica_cpus)
        run(settings, config, args.host, args.port, args.ray_address)
        return 0
    app = create_app(settings)
    log.info("serving %s on http://%s:%d; threads %d %s", settings.data_dir, args.host, args.port, threads,
             app.state.library_threads)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cascade serve`` on the CLI's subparsers."""
    s = subparsers.add_parser("serve", help="run the REST API (collections, search, rerank, RAG)")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--data-dir", type=Path, default=Path("cascade-data"), help="where collections live")
    s.add_argument(
        "--api-key", action="append", metavar="KEY[:COLL,...]", help="require this key (repeatable)"
    )
    s.add_argument("--api-keys-file", type=Path, help="JSON file: {KEY: [collections or '*']}")
    s.add_argument("--max-request-mb", type=float, default=32.0)
    s.add_argument("--search-threads", type=int, default=4, help="searches and model calls run at once (~cores)")
    s.add_argument("--threads", metavar="N",
                   help="CPU threads for torch, numba and faiss (default: all cores this process may use)")  # fmt: skip
    s.add_argument("--max-queued", type=int, default=64, help="searches and model calls that may wait; more get 503")
    s.add_argument("--request-timeout", type=float, default=60.0, help="seconds a search or model call may run (504)")
    s.add_argument(
        "--llm-base-url", help="OpenAI-compatible server for /v1/answer, e.g. http://127.0.0.1:8001/v1"
    )
    s.add_argument("--llm-model")
    s.add_argument("--llm-api-key")
    s.add_argument("--log-level", default="warning")
    s.add_argument("--access-log", action="store_true")
    s.add_argument(
        "--index", action="append", metavar="NAME=DIR",
        help="serve a `cascade index` directory (plain or --shards) as read-only collection NAME (repeatable)",
    )  # fmt: skip
    s.add_argument("--index-pipeline", default="bm25", help="preset the --index collections search by default")
    m = s.add_argument_group(
        "served models (OpenAI /v1/embeddings, Cohere /v1|v2/rerank and /v2/embed, TEI /embed /embed_sparse /rerank)"
    )
    m.add_argument(
        "--embedder", action="append", metavar="ALIAS=CHECKPOINT",
        help="serve a dense embedding model (hub id or directory) as ALIAS (repeatable; the first is TEI's default)",
    )  # fmt: skip
    m.add_argument(
        "--sparse-embedder", action="append", metavar="ALIAS=CHECKPOINT",
        help="serve a SPLADE masked-LM checkpoint as ALIAS for TEI's /embed_sparse (repeatable)",
    )  # fmt: skip
    m.add_argument(
        "--reranker", action="append", metavar="ALIAS=FAMILY:CHECKPOINT",
        help="serve a reranker, e.g. ce=cross-encoder:/models/ce (repeatable; families as in pipeline specs)",
    )  # fmt: skip
    r = s.add_argument_group("Ray Serve (--ray)")
    r.add_argument("--ray", action="store_true", help="serve through Ray Serve: shard and reranker replicas")
    r.add_argument("--ray-address", help="Ray cluster to join (`auto`: the one `ray start` runs); default: a local one")
    r.add_argument("--shard-replicas", type=int, default=1, help="replicas of each shard searcher")
    r.add_argument("--reranker-replicas", type=int, default=1)
    r.add_argument("--reranker-gpus", type=float, help="GPUs per reranker replica (default: 1 if the cluster has GPUs)")
    r.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs reserved per replica (fractions share)")
    s.set_defaults(func=cmd_serve)
    return s


# -- cascade collection ----------------------------------------------------------------------


def cmd_collection(args) -> int:
    from cascade.api.service.engine import Engine
    from cascade.indexing.corpus import read_corpus
    from cascade.retrieval.progress import progress

    if args.action != "list" and not args.name:
        what = "the archive to restore" if args.action == "restore" else "a collection name"
        raise InvalidInput(f"cascade collection {args.action} needs {what}")
    engine = Engine(args.data_dir, background_compaction=False)
    try:
        if args.action in ("snapshot", "restore"):
            out = _snapshot_or_restore(engine, args)
        elif args.action == "list":
            out = {"collections": [engine.collection(n).info() for n in engine.collection_names()]}
            for c in out["collections"]:
                c.pop("config")
        else:
            if args.action == "create":
                chunking = {"max_tokens": args.max_tokens, "overlap": args.overlap}
                engine.create_collection(args.name, args.pipeline, chunking)
            coll = engine.writable_collection(args.name) if args.corpus is not None else engine.collection(args.name)
            totals = {"added": 0, "updated": 0, "unchanged": 0}
            if args.corpus is not None:
                if not args.corpus.exists():
                    raise InvalidInput(f"corpus {args.corpus} does not exist")
                batch: list = []
                docs = progress(read_corpus(args.corpus, args.format), f"ingest {args.name}")
                for doc in docs:
                    batch.append(doc)
                    if len(batch) >= args.batch_size:
                        _add(totals, coll.upsert(batch))
                        batch = []
                if batch:
                    _add(totals, coll.upsert(batch))
                coll.compact(full=True)
            out = {**coll.info(), **totals}
            out.pop("config")
    finally:
        engine.close()
    from .stdout import print_json

    print_json(out) if args.json else print(json.dumps(out, indent=2))
    return 0


def _snapshot_or_restore(engine, args) -> dict:
    """``snapshot NAME [--out FILE]`` (default: the data directory's snapshot store) or
    ``restore ARCHIVE [--name NEW]``."""
    from cascade.api.service.snapshots import write_snapshot

    if args.action == "restore":
        out = engine.restore(Path(args.name), args.target)
        out.pop("config")
        return out
    if args.out is None:
        return engine.snapshot(args.name).to_json()
    coll = engine.writable_collection(args.name)
    return write_snapshot(coll, args.out, args.out.stem).to_json()


def _add(totals: dict, result) -> None:
    for k in totals:
        totals[k] += getattr(result, k)


def add_collection_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cascade collection create|ingest|list|snapshot|restore`` (the service's
    collections, offline)."""
    c = subparsers.add_parser(
        "collection", help="create, fill, list, snapshot or restore the server's collections (server stopped)"
    )
    c.add_argument("action", choices=["create", "ingest", "list", "snapshot", "restore"])
    c.add_argument("name", nargs="?", help="collection name (create, ingest, snapshot); the archive (restore)")
    c.add_argument("--out", type=Path, help="snapshot: write the archive here (default: DATA_DIR/snapshots/NAME/)")
    c.add_argument("--name", dest="target", help="restore: as this collection (default: the archive's own)")
    c.add_argument("--data-dir", type=Path, default=Path("cascade-data"))
    c.add_argument("--pipeline", default="bm25", help="preset whose retriever stages the collection indexes")
    c.add_argument("--corpus", type=Path, help="documents to add: BEIR dir, .jsonl/.csv/.tsv file or folder")
    c.add_argument(
        "--format", default="auto", choices=["auto", "beir", "jsonl", "csv", "tsv", "msmarco", "folder"]
    )
    c.add_argument("--max-tokens", type=int, default=256, help="chunk size in whitespace tokens")
    c.add_argument("--overlap", type=int, default=32)
    c.add_argument("--batch-size", type=int, default=5000, help="documents per segment while ingesting")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_collection)
    return c
