"""Cascade: retrieval and reranking you run yourself.

Layers, bottom to top (imports only run downward; ``lint-imports`` checks it):

- :mod:`cascade.retrieval`: core types, errors, storage, the retriever registry, fusion,
  the pipeline, partition and merge; ``encoders/`` (text to vectors) and one subpackage per
  index family (``sparse/``, ``dense/``, ``late/``).
- :mod:`cascade.rerank` and :mod:`cascade.indexing`: rerankers; the offline write side.
- :mod:`cascade.eval`: datasets, metrics, runs, benchmarks, presets, reproduction.
- :mod:`cascade.api`: the CLI, the REST app and the collection service.
"""

__version__ = "0.1.0"
