"""Decoder-LLM embedders: last-token / mean pooling over causal models, left padding, EOS and
instruction prompts, checked against sentence-transformers; RoPE context extension."""

from __future__ import annotations

import numpy as np
import pytest

# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
st = pytest.importorskip("sentence_transformers")

from dense_models import TEXTS, tiny_decoder_dir  # noqa: E402

from cascade.retrieval.encoders.dense import PROMPT_PRESETS, DenseEncoder, EncoderConfig  # noqa: E402
from cascade.retrieval.errors import InvalidInput  # noqa: E402

torch.set_num_threads(2)

SHORT = [t for t in TEXTS if t and len(t) < 100]  # no truncation: EOS position is unambiguous


def _sentence_transformer(path, pooling):
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    module = Transformer(str(path), processor_kwargs={"padding_side": "left"})
    pool = Pooling(module.get_embedding_dimension(), pooling_mode=pooling)
    return st.SentenceTransformer(modules=[module, pool, Normalize()], device="cpu")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("pooling", ["lasttoken", "mean"])
def test_matches_sentence_transformers_with_left_padding(family, pooling):
    path = tiny_decoder_dir(family, adds_eos=True)  # the tokenizer ends sequences with </s> itself
    ours = DenseEncoder(str(path), pooling=pooling, device="cpu", show_progress=False, max_tokens=96)
    assert ours.config.padding_side == "left" and ours.config.append_eos is False  # nothing to add
    assert ours.max_length == 64
    ref = _sentence_transformer(path, pooling)
    np.testing.assert_allclose(ours.encode(TEXTS), ref.encode(TEXTS, batch_size=3), atol=1e-5)


@pytest.mark.parametrize("pooling", ["lasttoken", "mean"])
def test_eos_appended_and_instruction_prompt_for_queries(pooling):
    path = tiny_decoder_dir("qwen2", adds_eos=False, max_positions=256)  # <s> only; room for the instruction
    ours = DenseEncoder(str(path), pooling=pooling, prompts="instruct", device="cpu", show_progress=False)
    assert ours.config.append_eos is True
    ids = ours.tokenize(["stem cells"])[0]
    assert ids[0] == ours.tokenizer.bos_token_id and ids[-1] == ours.tokenizer.eos_token_id
    ref = _sentence_transformer(path, pooling)
    instruction = PROMPT_PRESETS["instruct"][0]
    assert instruction.startswith("Instruct: ") and instruction.endswith("\nQuery: ")
    # the reference reads the EOS written out, which the tokenizer maps to the special token
    np.testing.assert_allclose(ours.encode_queries(SHORT), ref.encode([instruction + t + "</s>" for t in SHORT]),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(
        ours.encode_documents(SHORT), ref.encode([t + "</s>" for t in SHORT]), atol=1e-5
    )
    # without EOS the last token is the text's own: other vectors
    bare = DenseEncoder(str(path), pooling=pooling, append_eos=False, device="cpu", show_progress=False)
    np.testing.assert_allclose(bare.encode(SHORT), ref.encode(SHORT), atol=1e-5)
    assert not np.allclose(bare.encode(SHORT), ours.encode(SHORT), atol=1e-3)


def test_left_and_right_padding_give_the_same_vectors():
    path = str(tiny_decoder_dir("llama", adds_eos=True))
    left = DenseEncoder(path, pooling="lasttoken", device="cpu", show_progress=False).encode(TEXTS)
    right = DenseEncoder(path, pooling="lasttoken", padding_side="right", device="cpu", show_progress=False)
    assert right.config.padding_side == "right"
    np.testing.assert_allclose(right.encode(TEXTS), left, atol=1e-5)  # RoPE sees relative positions only


def _reference_last_token(path, text, rope_parameters):
    """One text alone through a model whose config was changed by hand."""
    config = transformers.AutoConfig.from_pretrained(path)
    config.rope_parameters = {**config.rope_parameters, **rope_parameters}
    model = transformers.AutoModel.from_pretrained(path, config=config).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ids = tok(text)["input_ids"] + [tok.eos_token_id]
    with torch.inference_mode():
        h = model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].numpy()
    return h / np.linalg.norm(h)


# position interpolation divides positions by 4; NTK-aware scaling raises the base by 4^(d/(d-2)),
# d = the rotary dimension, 32 hidden / 4 heads = 8
EXPECTED_ROPE = {
    "linear": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    "ntk": {"rope_type": "default", "rope_theta": 10000.0 * 4 ** (8 / 6)},
}


@pytest.mark.parametrize("rope_type", ["linear", "ntk"])
def test_rope_scaling_changes_the_config_and_runs_past_the_trained_length(rope_type):
    path = str(tiny_decoder_dir("llama", adds_eos=False))
    long_text = " ".join(f"x{i}" for i in range(60))  # about 230 tokens; the model was built for 64
    plain = DenseEncoder(path, pooling="lasttoken", max_length=512, device="cpu", show_progress=False)
    assert 150 < len(plain.tokenize([long_text])[0]) < 256
    enc = DenseEncoder(path, pooling="lasttoken", rope_scaling={"rope_type": rope_type, "factor": 4},
                       device="cpu", show_progress=False)  # fmt: skip
    params = enc.model.config.rope_parameters
    assert {k: params.get(k) for k in EXPECTED_ROPE[rope_type]} == pytest.approx(EXPECTED_ROPE[rope_type])
    assert enc.max_length == 256  # 64 positions stretched 4-fold
    assert enc.config.rope_scaling == {"rope_type": rope_type, "factor": 4.0}
    assert len(enc.tokenize([long_text])[0]) == len(plain.tokenize([long_text])[0])  # not cut at 64
    short_before = enc.encode(SHORT[1:2])
    got = enc.encode([long_text])[0]
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(
        got, _reference_last_token(path, long_text, EXPECTED_ROPE[rope_type]), atol=1e-5
    )
    assert not np.allclose(got, plain.encode([long_text])[0], atol=1e-3)  # the scaling acts
    np.testing.assert_array_equal(enc.encode(SHORT[1:2]), short_before)  # no state left by the long text


def test_rope_scaling_round_trips_and_is_validated():
    cfg = EncoderConfig(model="m", pooling="lasttoken", rope_scaling={"type": "linear", "factor": 2})
    assert cfg.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert EncoderConfig.from_json(cfg.to_json()) == cfg
    legacy = {k: v for k, v in cfg.to_json().items() if k not in ("padding_side", "append_eos")}
    assert EncoderConfig.from_json(legacy).padding_side == "right"  # old manifests padded right
    with pytest.raises(InvalidInput, match="depend on the texts encoded before"):
        EncoderConfig(model="m", rope_scaling={"rope_type": "dynamic", "factor": 2})
    for bad in ({"rope_type": "yarn", "factor": 2}, {"rope_type": "linear", "factor": 0.5}, {"factor": 2}, 3):
        with pytest.raises(InvalidInput, match="rope_scaling"):
            EncoderConfig(model="m", rope_scaling=bad)
    with pytest.raises(InvalidInput, match="padding_side"):
        EncoderConfig(model="m", padding_side="middle")
    from dense_models import tiny_bert_dir

    with pytest.raises(InvalidInput, match="no rotary position embeddings"):
        DenseEncoder(str(tiny_bert_dir()), rope_scaling={"rope_type": "linear", "factor": 2}, device="cpu")


def test_dense_index_records_the_decoder_settings(tmp_path):
    from cascade.retrieval.dense.retriever import DenseRetriever
    from cascade.retrieval.types import Document, Query

    path = str(tiny_decoder_dir("qwen2", adds_eos=False))
    docs = [Document(f"d{i}", t) for i, t in enumerate(SHORT)]
    settings = {"pooling": "lasttoken", "rope_scaling": {"rope_type": "ntk", "factor": 2}}
    built = DenseRetriever.build(
        docs, model=path, prompts="instruct", encoder_settings=settings, show_progress=False
    )
    built.save(tmp_path / "idx")
    loaded = DenseRetriever.load(tmp_path / "idx")
    assert loaded.config == built.config and loaded.config.append_eos and loaded.config.padding_side == "left"
    queries = [Query("q0", SHORT[0]), Query("q1", SHORT[2])]
    assert loaded.search(queries, k=3) == built.search(queries, k=3)
    direct = DenseEncoder(path, prompts="instruct", device="cpu", show_progress=False, **settings)
    np.testing.assert_allclose(loaded.encoder.encode_queries([SHORT[0]]), direct.encode_queries([SHORT[0]]),
                               atol=1e-6)  # fmt: skip
