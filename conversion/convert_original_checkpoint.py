# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Convert an original crammedBERT UltraFastBERT checkpoint (pbelcak/UltraFastBERT) into a checkpoint of ours.

The original release stores `config.json` with `model_type: "crammedBERT"` and the architecture in an `arch` dict, and
`model.safetensors` with the `cramming` package's parameter names. The result is a transformers checkpoint
(`UltraFastBertForMaskedLM` or `UltraFastBertForSequenceClassification`) with remote code, loadable anywhere with
`AutoModel...from_pretrained(path, trust_remote_code=True)`.

Usage:
    python conversion/convert_original_checkpoint.py SRC OUT [--push-to-hub REPO_ID] [--private]
        [--allow-pickle] [--pool-includes-padding]

SRC is a local folder or a Hub repo id. Nothing is written to OUT unless conversion and verification succeed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

# running as a script puts conversion/ (not the repo root) on sys.path; the repo root holds model_cards/
_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from conversion.checkpoint_files import move_into_place  # noqa: E402
from modeling_ultrafastbert import (  # noqa: E402
    UltraFastBertConfig,
    UltraFastBertForMaskedLM,
    UltraFastBertForSequenceClassification,
)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
REFERENCE_FILE = "reference_outputs.safetensors"
REMOTE_CODE_FILES = ("configuration_ultrafastbert.py", "modeling_ultrafastbert.py", "fast_feedforward.py")
TOLERANCE = 1e-5


class ConversionError(ValueError):
    """The source checkpoint cannot be converted faithfully (unsupported option, bad or missing tensors, ...)."""


# --------------------------------------------------------------------------------------------------------------------
# config


def _lookup(arch: dict, dotted: str, default=KeyError):
    node = arch
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is KeyError:
                raise ConversionError(f"original config: `arch.{dotted}` is missing")
            return default
        node = node[part]
    return node


def _require(arch: dict, dotted: str, expected, default, why: str):
    value = _lookup(arch, dotted, default)
    if value != expected:
        raise ConversionError(
            f"unsupported original config: arch.{dotted} = {value!r}, only {expected!r} is supported ({why})"
        )


def is_sequence_classification(original_config: dict, keys=()) -> bool:
    architectures = original_config.get("architectures") or []
    if any("SequenceClassification" in name for name in architectures):
        return True
    return any(k.startswith(("head.", "pooler.")) for k in keys)


def convert_config(original_config: dict, *, sequence_classification: bool, num_labels: int | None = None,
                   pool_includes_padding: bool = False) -> UltraFastBertConfig:
    """Map an original crammedBERT config (the dict read from config.json) to an `UltraFastBertConfig`."""
    if original_config.get("model_type") != "crammedBERT":
        raise ConversionError(
            f"expected an original checkpoint with model_type 'crammedBERT', got {original_config.get('model_type')!r}"
        )
    arch = original_config.get("arch")
    if not isinstance(arch, dict):
        raise ConversionError("original config has no `arch` dict (is this a crammedBERT checkpoint?)")

    intermed_type = _lookup(arch, "intermed_type", None)
    if intermed_type != "fff":
        raise ConversionError(
            f"arch.intermed_type is {intermed_type!r}: only fast-feedforward ('fff') UltraFastBERT checkpoints can be "
            "converted (a dense-FFN crammedBERT is not an UltraFastBERT model)"
        )
    _require(arch, "norm_scheme", "pre", "pre", "UltraFastBERT blocks are pre-LayerNorm")
    _require(arch, "norm", "LayerNorm", "LayerNorm", "only LayerNorm is implemented")
    _require(arch, "final_norm", True, True, "the encoder ends with a final LayerNorm")
    _require(arch, "use_bias", False, False, "attention and dense layers have no biases")
    _require(arch, "decoder_bias", False, False, "the MLM decoder has no bias")
    _require(arch, "skip_head_transform", True, True, "there is no MLM head transform")
    _require(arch, "tie_weights", True, True, "the MLM decoder is tied to the word embeddings")
    _require(arch, "nonlin", "GELU", "GELU", "FFF neurons use GELU")
    _require(arch, "ffn_layer_frequency", 1, 1, "every block has a feedforward layer")
    _require(arch, "attention.type", "self-attention", "self-attention", "plain multi-head self-attention")
    _require(arch, "attention.causal_attention", False, False, "the encoder is bidirectional")
    _require(arch, "attention.qkv_bias", False, False, "query/key/value have no biases")
    _require(arch, "attention.rotary_embedding", False, False, "rotary embeddings are not implemented")
    _require(arch, "attention.skip_output_projection", False, False, "attention has an output projection")
    _require(arch, "attention.sequence_op", "torch-softmax", "torch-softmax", "softmax attention")
    _require(arch, "embedding.normalization", True, True, "embeddings are LayerNorm-ed")

    hidden_size = _lookup(arch, "hidden_size")
    embedding_dim = _lookup(arch, "embedding.embedding_dim", hidden_size)
    if embedding_dim != hidden_size:
        raise ConversionError(
            f"arch.embedding.embedding_dim ({embedding_dim}) != arch.hidden_size ({hidden_size}): factorised "
            "embeddings are not supported"
        )
    pos = _lookup(arch, "embedding.pos_embedding")
    pos_map = {"scaled-sinusoidal": "scaled_sinusoidal", "learned": "learned"}
    if pos not in pos_map:
        raise ConversionError(f"arch.embedding.pos_embedding = {pos!r} is not supported (supported: {list(pos_map)})")

    kwargs = dict(
        vocab_size=_lookup(arch, "embedding.vocab_size"),
        hidden_size=hidden_size,
        num_hidden_layers=_lookup(arch, "num_transformer_layers"),
        num_attention_heads=_lookup(arch, "attention.num_attention_heads"),
        fff_trees=_lookup(arch, "intermed_size"),
        fff_depth=_lookup(arch, "intermed_depth"),
        max_position_embeddings=_lookup(arch, "embedding.max_seq_length"),
        position_embedding_type=pos_map[pos],
        pad_token_id=_lookup(arch, "embedding.pad_token_id", 0),
        layer_norm_eps=_lookup(arch, "norm_eps"),
        hidden_dropout_prob=_lookup(arch, "hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=_lookup(arch, "attention.dropout_prob", 0.1),
        embedding_dropout_prob=_lookup(arch, "embedding.dropout_prob", 0.1),
        initializer_range=_lookup(arch, "init.std", 0.02),
        tie_word_embeddings=True,
    )
    if sequence_classification:
        head = _lookup(arch, "classification_head")
        pooler = head.get("pooler")
        pooler_map = {"avg": "avg", "zero_index": "cls"}
        if pooler not in pooler_map:
            raise ConversionError(
                f"arch.classification_head.pooler = {pooler!r} is not supported (supported: {list(pooler_map)})"
            )
        _require(arch, "classification_head.include_ff_layer", True, True, "the pooler has a dense layer")
        _require(arch, "classification_head.nonlin", "Tanh", "Tanh", "the pooler activation is Tanh")
        if num_labels is None:
            num_labels = arch.get("num_labels") or original_config.get("num_labels")
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ConversionError(f"cannot determine num_labels of the classification checkpoint (got {num_labels!r})")
        kwargs.update(
            classifier_pooling=pooler_map[pooler],
            classifier_hidden_size=_lookup(arch, "classification_head.head_dim"),
            classifier_dropout=_lookup(arch, "classification_head.classifier_dropout", 0.1),
            classifier_pool_includes_padding=bool(pool_includes_padding),
            num_labels=num_labels,
        )
        id2label = original_config.get("id2label")
        if isinstance(id2label, dict) and len(id2label) == num_labels:
            kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
            kwargs["label2id"] = {v: int(k) for k, v in id2label.items()}
        kwargs["architectures"] = ["UltraFastBertForSequenceClassification"]
    else:
        kwargs["architectures"] = ["UltraFastBertForMaskedLM"]
    try:
        return UltraFastBertConfig(**kwargs)
    except ValueError as err:
        raise ConversionError(f"the original config maps to an invalid UltraFastBertConfig: {err}") from err


# --------------------------------------------------------------------------------------------------------------------
# tensors


def convert_state_dict(original: dict[str, torch.Tensor], config: UltraFastBertConfig, *,
                       sequence_classification: bool) -> dict[str, torch.Tensor]:
    """Map every original tensor to our names/layouts. Every source key must be used exactly once."""
    remaining = dict(original)
    missing: list[str] = []
    wrong_shape: list[str] = []
    H, heads, K, depth = config.hidden_size, config.num_attention_heads, config.fff_trees, config.fff_depth
    N = config.fff_num_nodes
    head_dim = H // heads

    def take(key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        if key not in remaining:
            missing.append(key)
            return None
        tensor = remaining.pop(key)
        if tuple(tensor.shape) != tuple(shape):
            wrong_shape.append(f"{key}: expected {tuple(shape)}, found {tuple(tensor.shape)}")
            return None
        return tensor.to(torch.float32)

    out: dict[str, torch.Tensor | None] = {}
    p = "ultrafastbert."
    word = take("encoder.embedding.word_embedding.weight", (config.vocab_size, H))
    out[p + "embeddings.word_embeddings.weight"] = word
    if config.position_embedding_type == "scaled_sinusoidal":
        out[p + "embeddings.position_embeddings.scale_factor"] = take("encoder.embedding.pos_embedding.scale_factor", (1,))
    else:
        out[p + "embeddings.position_embeddings.weight"] = take(
            "encoder.embedding.pos_embedding.embedding.weight", (config.max_position_embeddings, H)
        )
        # a persistent arange buffer in the original; nothing to carry, but it must be what we assume
        ids = remaining.pop("encoder.embedding.pos_embedding.position_ids", None)
        if ids is not None and not torch.equal(ids.reshape(-1).long(), torch.arange(ids.numel())):
            wrong_shape.append("encoder.embedding.pos_embedding.position_ids: expected arange(max_seq_length)")
    out[p + "embeddings.LayerNorm.weight"] = take("encoder.embedding.norm.weight", (H,))
    out[p + "embeddings.LayerNorm.bias"] = take("encoder.embedding.norm.bias", (H,))

    for i in range(config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"{p}layers.{i}."
        for ours, theirs in (("attention_norm", "norm1"), ("feedforward_norm", "norm2")):
            out[f"{dst}{ours}.weight"] = take(f"{src}{theirs}.weight", (H,))
            out[f"{dst}{ours}.bias"] = take(f"{src}{theirs}.bias", (H,))
        # same layout as ours (the rows of each head hold its q, k and v blocks one after another): a plain copy
        out[f"{dst}attention.query_key_value.weight"] = take(f"{src}attn.self_attention.query_key_value.weight",
                                                             (3 * H, H))
        norm_factor_key = f"{src}attn.self_attention.norm_factor"
        if norm_factor_key in remaining:
            # the original's attention scale, a buffer; ours is fixed at 1/sqrt(head_dim), so they must agree
            norm_factor = remaining.pop(norm_factor_key)
            if norm_factor.numel() != 1 or not math.isclose(float(norm_factor), head_dim**-0.5, rel_tol=1e-5):
                wrong_shape.append(
                    f"{norm_factor_key}: expected the scalar 1/sqrt(head_dim) = {head_dim**-0.5:.6g}, "
                    f"found {norm_factor.flatten()[:4].tolist()}"
                )
        out[f"{dst}attention.dense.weight"] = take(f"{src}attn.dense.weight", (H, H))
        w_in = take(f"{src}ffn.linear_in.weight", (K * N, H))
        b_in = take(f"{src}ffn.linear_in.bias", (K * N,))
        w_out = take(f"{src}ffn.linear_out.weight", (H, K * N))
        out[f"{dst}feedforward.in_weight"] = None if w_in is None else w_in.reshape(K, N, H).clone()
        out[f"{dst}feedforward.in_bias"] = None if b_in is None else b_in.reshape(K, N).clone()
        out[f"{dst}feedforward.out_weight"] = None if w_out is None else w_out.t().reshape(K, N, H).contiguous()
    out[p + "final_norm.weight"] = take("encoder.final_norm.weight", (H,))
    out[p + "final_norm.bias"] = take("encoder.final_norm.bias", (H,))

    if sequence_classification:
        C = config.classifier_hidden_size
        out["pooler.dense.weight"] = take("pooler.dense.weight", (C, H))
        out["pooler.dense.bias"] = take("pooler.dense.bias", (C,))
        out["classifier.weight"] = take("head.weight", (config.num_labels, C))
        out["classifier.bias"] = take("head.bias", (config.num_labels,))
    else:
        # the decoder is tied: normally stored only as the word embedding; accept an explicit identical copy
        decoder = remaining.pop("decoder.weight", None)
        if decoder is not None and (word is None or not torch.equal(decoder.to(torch.float32), word)):
            wrong_shape.append("decoder.weight: present but not identical to the (tied) word embedding")
        out["decoder.weight"] = word

    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing))
    if wrong_shape:
        problems.append("wrong shapes/values: " + "; ".join(wrong_shape))
    if remaining:
        problems.append("unknown or unused keys in the source checkpoint: " + ", ".join(sorted(remaining)))
    if problems:
        raise ConversionError("cannot convert the checkpoint's weights:\n  " + "\n  ".join(problems))
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------------
# reading the source


def resolve_source(src: str | os.PathLike) -> Path:
    path = Path(src)
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError(f"SRC {src} is a file; pass the checkpoint folder (or a Hub repo id)")
    if str(src).count("/") != 1 or str(src).startswith((".", "/")):
        raise ConversionError(f"SRC {src!r} is neither a local folder nor a Hub repo id of the form 'owner/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(src), allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"]))
    except Exception as err:  # network / missing repo: say what we tried
        raise ConversionError(f"could not download {src!r} from the Hub ({type(err).__name__}: {err})") from err


def load_original(src_dir: Path, *, allow_pickle: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    config_path = src_dir / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{src_dir} has no config.json")
    try:
        original_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{config_path} is not valid JSON: {err}") from err

    st_path = src_dir / "model.safetensors"
    bin_path = src_dir / "pytorch_model.bin"
    if st_path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(st_path))
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise ConversionError(
                f"{st_path} cannot be read as safetensors (truncated or corrupted file?): {err}"
            ) from err
    elif bin_path.is_file():
        if not allow_pickle:
            raise ConversionError(
                f"{src_dir} has only pytorch_model.bin (a pickle); pass --allow-pickle to load it "
                "(with torch.load(weights_only=True)) if you trust its origin"
            )
        try:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConversionError(f"{bin_path} cannot be loaded with weights_only=True: {err}") from err
        if isinstance(state, dict) and "model_state" in state and isinstance(state["model_state"], dict):
            state = state["model_state"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ConversionError(f"{bin_path} does not hold a flat state dict of tensors")
    else:
        raise ConversionError(f"{src_dir} has no model.safetensors (nor pytorch_model.bin)")
    # some saves prefix everything with "model."
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    return original_config, state


def build_model(original_config: dict, state: dict[str, torch.Tensor], *, pool_includes_padding: bool = False):
    seq_cls = is_sequence_classification(original_config, state.keys())
    num_labels = None
    if seq_cls and isinstance(state.get("head.weight"), torch.Tensor):
        num_labels = original_config.get("arch", {}).get("num_labels") or state["head.weight"].shape[0]
    config = convert_config(original_config, sequence_classification=seq_cls, num_labels=num_labels,
                            pool_includes_padding=pool_includes_padding)
    converted = convert_state_dict(state, config, sequence_classification=seq_cls)
    model_class = UltraFastBertForSequenceClassification if seq_cls else UltraFastBertForMaskedLM
    model = model_class(config)
    result = model.load_state_dict(converted, strict=False)
    # non-persistent buffers never appear; anything else left over is a mapping bug
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(
            f"internal mapping error: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    if not seq_cls:
        model.tie_weights()
    return model.eval()


# --------------------------------------------------------------------------------------------------------------------
# verification


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _probe_inputs(config: UltraFastBertConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    length = min(16, config.max_position_embeddings)
    ids = torch.randint(0, config.vocab_size, (3, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, length // 2:] = 0
    return ids, mask


def _is_classifier(model) -> bool:
    # class-name based: the reloaded model is the remote-code class, not the one imported here
    return type(model).__name__.endswith("ForSequenceClassification")


def _outputs(model, ids, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if _is_classifier(model):
            return {"logits": model(input_ids=ids, attention_mask=mask).logits}
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return {"logits": out.logits, "last_hidden_state": out.hidden_states[-1]}


def compare_to_reference(model, reference: dict[str, torch.Tensor], tolerance: float = TOLERANCE) -> list[str]:
    """Compare `model` (eval) with the original code's outputs. Returns a list of mismatch descriptions."""
    ids, mask = reference["input_ids"], reference["attention_mask"]
    pairs = []  # (name, ours, theirs)
    with torch.no_grad():
        if not _is_classifier(model):
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            pairs.append(("mlm_logits", out.logits, reference["mlm_logits"]))
            pairs.append(("last_hidden_state", out.hidden_states[-1], reference["last_hidden_state"]))
        else:
            for j, row in enumerate(reference["unpadded_rows"].long().tolist()):
                # the reference ran these rows alone, cut to their real tokens: no padding at all
                length = int(mask[row].sum())
                logits = model(input_ids=ids[row:row + 1, :length], attention_mask=mask[row:row + 1, :length]).logits
                pairs.append((f"logits_unpadded_rows[{j}]", logits[0], reference["logits_unpadded_rows"][j]))
            if model.config.classifier_pool_includes_padding:
                logits = model(input_ids=ids, attention_mask=mask).logits
                pairs.append(("logits_as_original", logits, reference["logits_as_original"]))
    problems = []
    for name, ours, theirs in pairs:
        diff = _max_diff(ours, theirs)
        if not diff <= tolerance:
            problems.append(f"{name}: max |diff| {diff:.3g} > {tolerance}")
    return problems


def verify_written(tmp_dir: Path, model, src_dir: Path, tolerance: float = TOLERANCE) -> list[str]:
    """Reload the written folder as remote code and check it against the in-memory model and the reference."""
    missing = [name for name in REMOTE_CODE_FILES if not (tmp_dir / name).is_file()]
    if missing:
        return [f"remote-code files missing from the written checkpoint: {missing}"]
    # Load the class from the copied remote-code files (as a user without the package would), not the installed one.
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    class_name = type(model).__name__
    remote_class = get_class_from_dynamic_module(f"modeling_ultrafastbert.{class_name}", str(tmp_dir))
    if not remote_class.__module__.startswith("transformers_modules"):
        return [f"reloaded class comes from {remote_class.__module__}, not from the checkpoint's remote code"]
    reloaded = remote_class.from_pretrained(str(tmp_dir)).eval()
    reference = None
    if (src_dir / REFERENCE_FILE).is_file():
        from safetensors.torch import load_file

        reference = load_file(str(src_dir / REFERENCE_FILE))
    problems = []
    ids, mask = _probe_inputs(model.config)
    saved_kernel = model.config.fff_kernel
    for mode in ("conditional", "dense"):
        for m in (model, reloaded):
            # the mapping is what is checked here; the pure-PyTorch path needs no compiler (kernels have own tests)
            m.config.fff_inference, m.config.fff_kernel = mode, "torch"
        ours, theirs = _outputs(model, ids, mask), _outputs(reloaded, ids, mask)
        for name in ours:
            diff = _max_diff(ours[name], theirs[name])
            if not diff <= tolerance:
                problems.append(f"[{mode}] reloaded vs in-memory {name}: max |diff| {diff:.3g}")
        if reference is not None:
            problems += [f"[{mode}] vs {REFERENCE_FILE}: {p}" for p in compare_to_reference(reloaded, reference, tolerance)]
    for m in (model, reloaded):
        m.config.fff_inference, m.config.fff_kernel = "conditional", saved_kernel
    return problems


# --------------------------------------------------------------------------------------------------------------------
# the whole conversion


def convert_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    pool_includes_padding: bool = False,
    push_to_hub: str | None = None,
    private: bool = False,
    verify: bool = True,
    model_name: str | None = None,
) -> Path:
    """Convert SRC (folder or Hub repo id) into OUT. OUT is replaced only after everything succeeded."""
    out = Path(out).resolve()
    src_dir = resolve_source(src)
    original_config, state = load_original(src_dir, allow_pickle=allow_pickle)
    model = build_model(original_config, state, pool_includes_padding=pool_includes_padding)
    del state

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(str(tmp_dir))
        for name in TOKENIZER_FILES:
            if (src_dir / name).is_file():
                shutil.copy2(src_dir / name, tmp_dir / name)
        from model_cards.generate import write_model_card

        seq_cls = isinstance(model, UltraFastBertForSequenceClassification)
        write_model_card(
            tmp_dir,
            model.config,
            model_name=model_name or out.name,
            base_model=str(src) if not Path(src).exists() else None,
            task="text-classification" if seq_cls else "fill-mask",
            converted_from=str(src),
        )
        if verify:
            problems = verify_written(tmp_dir, model, src_dir)
            if problems:
                raise ConversionError("verification of the converted checkpoint failed:\n  " + "\n  ".join(problems))
        move_into_place(tmp_dir, out)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)

    if push_to_hub:
        from conversion.push_to_hub import push_checkpoint

        push_checkpoint(out, push_to_hub, private=private,
                        commit_message=f"Convert original UltraFastBERT checkpoint {src}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert an original crammedBERT UltraFastBERT checkpoint into a transformers checkpoint "
        "(remote code, safetensors, model card). MLM checkpoints become UltraFastBertForMaskedLM, GLUE-style "
        "classifiers UltraFastBertForSequenceClassification.",
    )
    parser.add_argument("src", help="original checkpoint: a local folder or a Hub repo id (e.g. pbelcak/UltraFastBERT-1x11-long)")
    parser.add_argument("out", help="output folder (replaced only when conversion and verification succeed)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also push the converted checkpoint to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow reading pytorch_model.bin (torch.load with weights_only=True) when there is no safetensors file")
    parser.add_argument(
        "--pool-includes-padding", action="store_true",
        help="classifiers only: reproduce the original 'avg' pooler exactly, which averages over ALL positions "
        "including padding (config.classifier_pool_includes_padding=True). Default: average over real tokens only, "
        "so a sentence's prediction does not depend on how much it is padded.",
    )
    parser.add_argument("--model-name", help="name shown in the model card (default: OUT's folder name)")
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(
            args.src, args.out, allow_pickle=args.allow_pickle, pool_includes_padding=args.pool_includes_padding,
            push_to_hub=args.push_to_hub, private=args.private, model_name=args.model_name,
        )
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"converted {args.src} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
