# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Conversion of original crammedBERT UltraFastBERT checkpoints, and the model card generator."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not put the repo root on sys.path
    sys.path.insert(0, str(REPO_ROOT))

from conversion.convert_original_checkpoint import (  # noqa: E402
    ConversionError,
    build_model,
    convert_checkpoint,
    convert_config,
    convert_state_dict,
)
from model_cards.generate import render_model_card  # noqa: E402

FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "original-crammed-fff-tiny"
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "mlm").is_dir(), reason=f"shared fixtures not found at {FIXTURES} (CI clones shared/ beside the repo)"
)
TOL = 1e-5


def _remote_model(folder: Path):
    """Load the converted folder through its own remote-code files (not the installed package)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = json.loads((folder / "config.json").read_text())
    class_name = config["architectures"][0]
    cls = get_class_from_dynamic_module(f"modeling_ultrafastbert.{class_name}", str(folder))
    assert cls.__module__.startswith("transformers_modules"), cls.__module__
    model = cls.from_pretrained(str(folder)).eval()
    model.config.fff_kernel = "torch"  # native kernels are tested elsewhere; this checks the weight mapping
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not (FIXTURES / "mlm").is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    root = tmp_path_factory.mktemp("converted")
    return {
        "mlm": convert_checkpoint(FIXTURES / "mlm", root / "mlm"),
        "cls": convert_checkpoint(FIXTURES / "sequence_classification", root / "cls"),
        "cls_orig": convert_checkpoint(FIXTURES / "sequence_classification", root / "cls_orig",
                                       pool_includes_padding=True),
    }


# ---------------------------------------------------------------------------------------------------------------------
# reference outputs of the original code


@needs_fixtures
@pytest.mark.parametrize("mode", ["conditional", "dense"])
def test_mlm_reproduces_reference_outputs(converted, mode):
    ref = load_file(str(FIXTURES / "mlm" / "reference_outputs.safetensors"))
    assert ref["attention_mask"].min() == 0, "the reference batch should contain a padded row"
    model = _remote_model(converted["mlm"])
    model.config.fff_inference = mode
    with torch.no_grad():
        out = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], output_hidden_states=True)
    torch.testing.assert_close(out.logits, ref["mlm_logits"], atol=TOL, rtol=0)
    torch.testing.assert_close(out.hidden_states[-1], ref["last_hidden_state"], atol=TOL, rtol=0)


@needs_fixtures
@pytest.mark.parametrize("mode", ["conditional", "dense"])
def test_classifier_reproduces_reference_outputs(converted, mode):
    ref = load_file(str(FIXTURES / "sequence_classification" / "reference_outputs.safetensors"))
    ids, mask, rows = ref["input_ids"], ref["attention_mask"], ref["unpadded_rows"].tolist()

    model = _remote_model(converted["cls"])
    assert model.config.classifier_pool_includes_padding is False and model.config.num_labels == 2
    model.config.fff_inference = mode
    with torch.no_grad():
        for j, row in enumerate(rows):
            n = int(mask[row].sum())
            alone = model(input_ids=ids[row:row + 1, :n], attention_mask=mask[row:row + 1, :n]).logits[0]
            torch.testing.assert_close(alone, ref["logits_unpadded_rows"][j], atol=TOL, rtol=0)
        # default pooling ignores padding: a padded row scores as if it were alone
        padded_row = int((mask.sum(1) < mask.shape[1]).nonzero()[0])
        n = int(mask[padded_row].sum())
        batch = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[padded_row:padded_row + 1, :n]).logits[0]
        torch.testing.assert_close(batch[padded_row], alone, atol=TOL, rtol=0)

    original = _remote_model(converted["cls_orig"])
    assert original.config.classifier_pool_includes_padding is True
    original.config.fff_inference = mode
    with torch.no_grad():
        logits = original(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, ref["logits_as_original"], atol=TOL, rtol=0)
    # and the padding really matters for the original pooler: the option is not a no-op
    assert (logits[padded_row] - batch[padded_row]).abs().max() > 1e-4


@needs_fixtures
def test_written_checkpoint_is_complete(converted):
    for key in ("mlm", "cls"):
        folder = converted[key]
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "ultrafastbert"
        assert {"AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification"} <= set(
            config["auto_map"])
        for name in ("model.safetensors", "README.md", "modeling_ultrafastbert.py", "configuration_ultrafastbert.py",
                     "fast_feedforward.py"):
            assert (folder / name).is_file(), name
        assert not list(folder.parent.glob(".*tmp*")), "temporary folders left behind"
    assert json.loads((converted["mlm"] / "config.json").read_text())["architectures"] == ["UltraFastBertForMaskedLM"]
    card = (converted["cls_orig"] / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "classifier_pool_includes_padding=True" in card


# ---------------------------------------------------------------------------------------------------------------------
# full-size layout


def _original_config(layers=16, hidden=768, heads=12, vocab=32768, trees=1, depth=11, seq=128, num_labels=None,
                      architectures=("ScriptableLMForPreTraining",)):
    return {
        "model_type": "crammedBERT",
        "architectures": list(architectures),
        "arch": {
            "num_transformer_layers": layers, "hidden_size": hidden, "intermed_type": "fff",
            "intermed_size": trees, "intermed_depth": depth, "norm": "LayerNorm", "norm_eps": 1e-12,
            "norm_scheme": "pre", "nonlin": "GELU", "use_bias": False, "final_norm": True, "decoder_bias": False,
            "skip_head_transform": True, "tie_weights": True, "hidden_dropout_prob": 0.1, "ffn_layer_frequency": 1,
            "num_labels": num_labels,
            "attention": {"type": "self-attention", "num_attention_heads": heads, "causal_attention": False,
                          "qkv_bias": False, "rotary_embedding": False, "skip_output_projection": False,
                          "sequence_op": "torch-softmax", "dropout_prob": 0.1},
            "embedding": {"vocab_size": vocab, "embedding_dim": hidden, "max_seq_length": seq, "pad_token_id": 0,
                          "pos_embedding": "scaled-sinusoidal", "normalization": True, "dropout_prob": 0.1},
            "classification_head": {"pooler": "avg", "head_dim": hidden, "include_ff_layer": True, "nonlin": "Tanh",
                                    "classifier_dropout": 0.1},
        },
    }


def _original_state(layers, hidden, heads, vocab, trees, depth, generator):
    n = trees * (2 ** (depth + 1) - 1)
    r = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    state = {
        "encoder.embedding.word_embedding.weight": r(vocab, hidden),
        "encoder.embedding.pos_embedding.scale_factor": r(1),
        "encoder.embedding.norm.weight": r(hidden), "encoder.embedding.norm.bias": r(hidden),
        "encoder.final_norm.weight": r(hidden), "encoder.final_norm.bias": r(hidden),
    }
    for i in range(layers):
        p = f"encoder.layers.{i}."
        state.update({
            p + "norm1.weight": r(hidden), p + "norm1.bias": r(hidden),
            p + "norm2.weight": r(hidden), p + "norm2.bias": r(hidden),
            p + "attn.self_attention.query_key_value.weight": r(3 * hidden, hidden),
            p + "attn.self_attention.norm_factor": torch.tensor((hidden // heads) ** -0.5),
            p + "attn.dense.weight": r(hidden, hidden),
            p + "ffn.linear_in.weight": r(n, hidden), p + "ffn.linear_in.bias": r(n),
            p + "ffn.linear_out.weight": r(hidden, n),
        })
    return state


def test_full_size_1x11_config_and_tensor_layout():
    original = _original_config()
    config = convert_config(original, sequence_classification=False)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.vocab_size) == (
        16, 768, 12, 32768)
    assert (config.fff_trees, config.fff_depth, config.fff_num_nodes) == (1, 11, 4095)
    assert config.position_embedding_type == "scaled_sinusoidal" and config.max_position_embeddings == 128
    assert config.layer_norm_eps == 1e-12 and config.pad_token_id == 0 and config.tie_word_embeddings

    state = _original_state(16, 768, 12, 32768, 1, 11, torch.Generator().manual_seed(0))
    keep = {k: state[k].clone() for k in ("encoder.layers.7.attn.self_attention.query_key_value.weight",
                                          "encoder.layers.7.ffn.linear_in.weight", "encoder.layers.7.ffn.linear_in.bias",
                                          "encoder.layers.7.ffn.linear_out.weight",
                                          "encoder.embedding.word_embedding.weight")}
    model = build_model(original, state)
    sd = model.state_dict()
    qkv = keep["encoder.layers.7.attn.self_attention.query_key_value.weight"]
    # the fused projection keeps the original's per-head (q, k, v) row layout; the attention splits it that way
    assert torch.equal(sd["ultrafastbert.layers.7.attention.query_key_value.weight"], qkv)
    ff = "ultrafastbert.layers.7.feedforward."
    assert sd[ff + "in_weight"].shape == (1, 4095, 768) and sd[ff + "out_weight"].shape == (1, 4095, 768)
    assert torch.equal(sd[ff + "in_weight"][0, 1234], keep["encoder.layers.7.ffn.linear_in.weight"][1234])
    assert torch.equal(sd[ff + "in_bias"][0], keep["encoder.layers.7.ffn.linear_in.bias"])
    assert torch.equal(sd[ff + "out_weight"][0, 4094], keep["encoder.layers.7.ffn.linear_out.weight"][:, 4094])
    word = keep["encoder.embedding.word_embedding.weight"]
    assert torch.equal(sd["ultrafastbert.embeddings.word_embeddings.weight"], word)
    assert model.decoder.weight.data_ptr() == model.ultrafastbert.embeddings.word_embeddings.weight.data_ptr()
    model.config.fff_kernel = "torch"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[2, 100, 30000, 3]])).logits
    assert logits.shape == (1, 4, 32768) and torch.isfinite(logits).all()


def test_classifier_config_mapping():
    original = _original_config(layers=1, hidden=32, heads=2, vocab=50, depth=2, num_labels=3,
                                architectures=["ScriptableLMForSequenceClassification"])
    original["arch"]["classification_head"].update(pooler="zero_index", head_dim=24, classifier_dropout=0.2)
    original["id2label"] = {"0": "entailment", "1": "neutral", "2": "contradiction"}
    config = convert_config(original, sequence_classification=True, pool_includes_padding=True)
    assert config.classifier_pooling == "cls" and config.classifier_hidden_size == 24
    assert config.classifier_dropout == 0.2 and config.num_labels == 3 and config.classifier_pool_includes_padding
    assert config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("intermed_type", "linear", "only fast-feedforward"),
        ("norm_scheme", "post", "arch.norm_scheme"),
        ("final_norm", False, "arch.final_norm"),
        ("use_bias", True, "arch.use_bias"),
        ("decoder_bias", True, "arch.decoder_bias"),
        ("skip_head_transform", False, "arch.skip_head_transform"),
        ("nonlin", "ReLU", "arch.nonlin"),
        ("attention.qkv_bias", True, "arch.attention.qkv_bias"),
        ("attention.rotary_embedding", True, "arch.attention.rotary_embedding"),
        ("embedding.normalization", False, "arch.embedding.normalization"),
        ("embedding.pos_embedding", "rotary", "pos_embedding"),
    ],
)
def test_unsupported_original_options_are_rejected(path, value, message):
    original = _original_config(layers=1, hidden=32, heads=2, vocab=50, depth=2)
    node = original["arch"]
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConversionError, match=message):
        convert_config(original, sequence_classification=False)


def test_missing_config_field_is_named():
    original = _original_config(layers=1, hidden=32, heads=2, vocab=50, depth=2)
    del original["arch"]["attention"]["num_attention_heads"]
    with pytest.raises(ConversionError, match="arch.attention.num_attention_heads"):
        convert_config(original, sequence_classification=False)


# ---------------------------------------------------------------------------------------------------------------------
# corrupted inputs: clear error, OUT untouched


def _corrupt_copy(tmp_path: Path, edit) -> Path:
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "mlm", src)
    edit(src)
    return src


def _edit_state(fn):
    def edit(src: Path):
        state = load_file(str(src / "model.safetensors"))
        fn(state)
        save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    return edit


def _truncate(src: Path):
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])


def _perturb_reference(src: Path):
    ref = load_file(str(src / "reference_outputs.safetensors"))
    ref["mlm_logits"][0, 3, 5] += 1e-3
    save_file(ref, str(src / "reference_outputs.safetensors"))


CORRUPTIONS = {
    "missing tensor": (_edit_state(lambda s: s.pop("encoder.layers.1.ffn.linear_in.bias")),
                       r"missing tensors: encoder\.layers\.1\.ffn\.linear_in\.bias"),
    "wrong shape": (_edit_state(lambda s: s.update({"encoder.layers.0.attn.dense.weight": torch.zeros(64, 32)})),
                    r"encoder\.layers\.0\.attn\.dense\.weight: expected \(64, 64\), found \(64, 32\)"),
    "unknown key": (_edit_state(lambda s: s.update({"encoder.layers.0.ffn.extra.weight": torch.zeros(3)})),
                    r"unknown or unused keys.*encoder\.layers\.0\.ffn\.extra\.weight"),
    "truncated safetensors": (_truncate, r"cannot be read as safetensors \(truncated or corrupted"),
    "reference mismatch": (_perturb_reference, r"(?s)verification of the converted checkpoint failed.*mlm_logits: max \|diff\| 0.001"),
}


@needs_fixtures
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupted_input_gives_clear_error_and_leaves_out_untouched(tmp_path, case):
    edit, message = CORRUPTIONS[case]
    src = _corrupt_copy(tmp_path, edit)
    parent = tmp_path / "outputs"
    out = parent / "converted"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("previous content")
    before = sorted(p.name for p in parent.iterdir())
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(src, out)
    assert sorted(p.name for p in parent.iterdir()) == before, "temporary folders left next to OUT"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "previous content"


@needs_fixtures
def test_pickle_needs_opt_in(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(FIXTURES / "mlm" / "config.json", src / "config.json")
    shutil.copy(FIXTURES / "mlm" / "reference_outputs.safetensors", src / "reference_outputs.safetensors")
    torch.save(load_file(str(FIXTURES / "mlm" / "model.safetensors")), src / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="--allow-pickle"):
        convert_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    out = convert_checkpoint(src, tmp_path / "out", allow_pickle=True)  # verified against the reference outputs
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()


@needs_fixtures
def test_unconvertible_model_state_mutations_are_caught_by_state_mapping():
    original = json.loads((FIXTURES / "mlm" / "config.json").read_text())
    state = load_file(str(FIXTURES / "mlm" / "model.safetensors"))
    config = convert_config(original, sequence_classification=False)
    bad = copy.copy(state)
    bad["encoder.layers.0.attn.self_attention.norm_factor"] = torch.tensor(0.5)
    with pytest.raises(ConversionError, match="norm_factor"):
        convert_state_dict(bad, config, sequence_classification=False)
    bad = copy.copy(state)
    bad["decoder.weight"] = state["encoder.embedding.word_embedding.weight"] + 1
    with pytest.raises(ConversionError, match="decoder.weight"):
        convert_state_dict(bad, config, sequence_classification=False)


@needs_fixtures
def test_cli(tmp_path):
    script = REPO_ROOT / "conversion" / "convert_original_checkpoint.py"
    out = tmp_path / "cli_out"
    done = subprocess.run([sys.executable, str(script), str(FIXTURES / "sequence_classification"), str(out),
                           "--pool-includes-padding", "--model-name", "tiny-cls"],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["classifier_pool_includes_padding"] is True
    assert config["architectures"] == ["UltraFastBertForSequenceClassification"]
    assert "# tiny-cls" in (out / "README.md").read_text()
    failed = subprocess.run([sys.executable, str(script), str(tmp_path / "nowhere" / "x"), str(tmp_path / "o2")],
                            capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert failed.returncode == 1 and "error:" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "o2").exists()


# ---------------------------------------------------------------------------------------------------------------------
# model card


def test_model_card_metadata_and_architecture():
    yaml = pytest.importorskip("yaml")
    from modeling_ultrafastbert import UltraFastBertConfig

    config = UltraFastBertConfig(num_labels=2, architectures=["UltraFastBertForSequenceClassification"])
    text = render_model_card(
        config, model_name="ultrafastbert-1x11-sst2", base_model="pbelcak/UltraFastBERT-1x11-long",
        metrics={"sst2": {"accuracy": 0.8312}}, speed=[{"device": "CPU", "conditional": "1.2 ms", "dense": "9 ms"}],
        repo_id="me/ultrafastbert-1x11-sst2",
    )
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "mit" and front["language"] == "en" and front["library_name"] == "transformers"
    assert front["pipeline_tag"] == "text-classification"
    assert {"ultrafastbert", "fast-feedforward"} <= set(front["tags"])
    assert front["base_model"] == "pbelcak/UltraFastBERT-1x11-long" and front["datasets"] == ["nyu-mll/glue"]
    result = front["model-index"][0]["results"][0]
    assert result["dataset"]["config"] == "sst2" and result["metrics"][0] == {"type": "accuracy", "value": 0.8312}
    assert "12 of 4095" in text and "1 x 11" in text
    assert 'from_pretrained("me/ultrafastbert-1x11-sst2", trust_remote_code=True)' in text
    assert "| CPU | 1.2 ms | 9 ms |" in text
    assert "arXiv:2311.10770" in text and "Belcak, Peter and Wattenhofer, Roger" in text

    mlm = render_model_card(UltraFastBertConfig(fff_trees=4, fff_depth=5, architectures=["UltraFastBertForMaskedLM"]),
                            model_name="m")
    front = yaml.safe_load(mlm.split("---\n")[1])
    assert front["pipeline_tag"] == "fill-mask" and "model-index" not in front
    assert "24 of 252" in mlm  # K*(D+1) of K*(2^(D+1)-1)
