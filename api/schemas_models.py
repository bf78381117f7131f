"""Bodies of the model endpoints, in the wire formats of the clients people already have:
OpenAI (``/v1/embeddings``, ``/v1/models``), Cohere (``/v1/rerank``, ``/v2/rerank``, ``/v2/embed``)
and Hugging Face Text Embeddings Inference (``/embed``, ``/embed_sparse``, ``/rerank``,
``/similarity``, ``/info``, and ``POST /`` as the ``InferenceClient(base_url)`` calls it).

Requests ignore fields Cascade does not use (clients send ``user``, ``priority``...), so a
client's newer fields never break a call; responses carry the fields the clients parse.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    model_validator,
)

from cascade.api.schemas import QueryText

MAX_TEXT_CHARS = 100_000
MAX_INPUTS = 2048

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
Texts = Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)]
#: one text or a list, always read as a list (one shape to validate, so errors name one place)
OneOrMoreTexts = Annotated[Texts, BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]
Dimensions = Annotated[int | None, Field(None, ge=1, description="Matryoshka: keep this many coordinates")]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- OpenAI ----------------------------------------------------------------------------------


class EmbeddingsIn(_Lenient):
    input: OneOrMoreTexts = Field(description="one text or a list (token-id inputs are not accepted)")
    model: ModelName
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes (the openai client's default)"
    )
    dimensions: Dimensions = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "cascade"
    type: str = Field(description="embedding, sparse-embedding or reranking")
    root: str | None = Field(None, description="the checkpoint loaded")
    family: str | None = Field(None, description="a reranker's family")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- Cohere ----------------------------------------------------------------------------------


class RerankIn(_Lenient):
    """Cohere's rerank body, v1 and v2. A document is a string or an object: its ``text``, or
    with ``rank_fields`` (v1) those fields as ``name: value`` lines, in that order."""

    model: ModelName | None = Field(
        None, description="alias, checkpoint or family; default: the first served"
    )
    query: QueryText
    documents: list[Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] | dict[str, Any]] = Field(
        min_length=1, max_length=1000
    )
    top_n: int | None = Field(None, ge=1, le=1000)
    rank_fields: list[str] | None = Field(None, min_length=1)
    return_documents: bool = False
    max_tokens_per_doc: int | None = Field(None, ge=1, description="cut each document to this many tokens")

    @model_validator(mode="after")
    def _texts(self) -> RerankIn:
        for i, d in enumerate(self.documents):
            if isinstance(d, dict):
                fields = self.rank_fields or ["text"]
                if not any(isinstance(d.get(f), str) for f in fields):
                    raise ValueError(f"documents[{i}] has no string field among {fields}")
        return self

    def texts(self) -> list[str]:
        """The text each document is ranked by."""
        out = []
        for d in self.documents:
            if isinstance(d, str):
                out.append(d)
            elif self.rank_fields is None:
                out.append(d["text"])
            else:
                out.append("\n".join(f"{f}: {d[f]}" for f in self.rank_fields if isinstance(d.get(f), str)))
        return out

    def returned(self, i: int) -> dict[str, Any]:
        d = self.documents[i]
        return {"text": d} if isinstance(d, str) else d


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankOut(BaseModel):
    id: str
    results: list[RerankResult]
    meta: dict[str, Any] = {}


CohereInputType = Literal["search_document", "search_query", "classification", "clustering"]
EmbeddingTypeName = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]


class CohereEmbedIn(_Lenient):
    model: ModelName
    texts: Texts
    input_type: CohereInputType | None = Field(
        None,
        description="search_query: the model's query prompt; search_document, classification, "
        "clustering: its document prompt; absent: no prompt",
    )
    embedding_types: list[EmbeddingTypeName] = Field(["float"], min_length=1)
    output_dimension: Dimensions = None
    max_tokens: int | None = Field(None, ge=2, description="cut each text to this many tokens")
    truncate: Literal["NONE", "END"] = Field("END", description="NONE: refuse a text over the model's limit")


class CohereEmbeddings(BaseModel):
    float_: list[list[float]] | None = Field(None, serialization_alias="float")
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None
    base64: list[str] | None = None


class CohereEmbedOut(BaseModel):
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"
    id: str
    embeddings: CohereEmbeddings
    texts: list[str]
    meta: dict[str, Any] = {}


# -- Text Embeddings Inference -----------------------------------------------------------------

TeiInputs = OneOrMoreTexts
Direction = Literal["Left", "Right", "left", "right"]
_MODEL = Field(
    None, description="a served alias or checkpoint (Cascade's addition); default: the first served"
)


class TeiEmbedIn(_Lenient):
    inputs: TeiInputs
    normalize: bool = True
    truncate: bool | None = Field(
        None, description="false: refuse inputs over the model's limit; default: cut"
    )
    truncation_direction: Direction = "Right"
    prompt_name: str | None = None
    dimensions: Dimensions = None
    model: ModelName | None = _MODEL


class TeiSparseIn(_Lenient):
    inputs: TeiInputs
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    model: ModelName | None = _MODEL


class TeiRerankIn(_Lenient):
    query: QueryText
    texts: Annotated[
        list[Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]],
        Field(min_length=1, max_length=1000),
    ]
    return_text: bool = False
    truncate: bool | None = Field(None, description="accepted; pairs are always cut to the reranker's limit")
    raw_scores: bool = Field(False, description="accepted; scores are the checkpoint's own activation")
    model: ModelName | None = _MODEL


class SimilarityInputs(BaseModel):
    source_sentence: Text
    sentences: Texts


class TeiSimilarityIn(_Lenient):
    inputs: SimilarityInputs
    parameters: dict[str, Any] | None = Field(None, description="prompt_name is read; the rest accepted")
    model: ModelName | None = _MODEL


class TeiClassifyIn(_Lenient):
    """``text_classification``'s body (``inputs`` + ``parameters``): answered with a clear error."""

    inputs: Any = None
    parameters: dict[str, Any] | None = None


class SparseValue(BaseModel):
    index: int
    value: float


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class TeiInfo(BaseModel):
    model_id: str
    model_sha: str | None = None
    model_dtype: str = "float32"
    model_type: dict[str, Any]
    max_concurrent_requests: int
    max_input_length: int | None
    max_batch_tokens: int | None = None
    max_batch_requests: int | None = None
    max_client_batch_size: int = MAX_INPUTS
    auto_truncate: bool = True
    tokenization_workers: int | None = None
    version: str
    sha: str | None = None
    docker_label: str | None = None


def _tei_kind(body: Any) -> str:
    if not isinstance(body, dict):
        return "embed"
    if "query" in body and "texts" in body:
        return "rerank"
    if isinstance(body.get("inputs"), dict):
        return "similarity"
    if "parameters" in body:
        return "classify"
    return "embed"


#: ``POST /``: what TEI answers at its root, told apart by the body's shape.
TeiRootIn = Annotated[
    Annotated[TeiEmbedIn, Tag("embed")]
    | Annotated[TeiRerankIn, Tag("rerank")]
    | Annotated[TeiSimilarityIn, Tag("similarity")]
    | Annotated[TeiClassifyIn, Tag("classify")],
    Discriminator(_tei_kind),
]
