"""Framework adapters over :mod:`cascade.api.client`, one optional extra each; importing this
package loads no framework, importing a module without its extra raises MissingDependency.

- :mod:`cascade.api.adapters.langchain` (``cascade-search[langchain]``): ``CascadeRetriever``
  (a ``BaseRetriever``) and ``CascadeRerank`` (a ``BaseDocumentCompressor`` over ``/v1/rerank``).
- :mod:`cascade.api.adapters.llamaindex` (``cascade-search[llamaindex]``): ``CascadeRetriever``
  (a ``BaseRetriever`` returning ``NodeWithScore``) and ``CascadeRerank`` (a ``BaseNodePostprocessor``).
- :mod:`cascade.api.adapters.haystack` (``cascade-search[haystack]``): ``CascadeRetriever``, a
  pipeline component ``run(query, top_k, filters) -> {"documents": [...]}``.

Every adapter maps a :class:`~cascade.api.client.Hit` the same way: the framework's id is
``hit.id``, its score ``hit.score``, its text ``hit.text``; its metadata is the document's
metadata plus ``doc_id``, ``title`` and ``rank`` (see :func:`hit_metadata`).
"""
