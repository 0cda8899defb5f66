# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Export an UltraFastBERT checkpoint to ONNX, with the conditional FFF walk as gathers, and check it in onnxruntime.

optimum's ONNX exporter (optimum-onnx 0.1.0) requires transformers < 4.58 and so cannot load a transformers 5 model;
this script uses torch.onnx (the torch.export-based exporter) directly and checks the result with onnxruntime.

The FFF layers are exported as their inference computation, unrolled over the fixed tree depth: per level, each
token's node index picks rows of the input weights, biases and output weights (ONNX ``Gather``), a multiply-and-sum
gives the logits, GELU times the gathered output rows is accumulated, and the next index is ``2n + 1 + (z > 0)``.
The graph has no ``Loop`` or ``If``; batch and sequence axes are dynamic (sequence up to max_position_embeddings).

Usage:
    python conversion/export_onnx.py CHECKPOINT OUT.onnx [--verify-tsv SST-2/dev.tsv] [--tolerance 1e-4]
        [--opset N]

CHECKPOINT is a local folder or a Hub repo id of any of our five model classes (the config's ``architectures`` picks
the head). Inputs are ``input_ids`` and ``attention_mask`` (int64, (batch, sequence)); outputs are named as in the
PyTorch model's output (``logits``; ``start_logits``/``end_logits``; ``last_hidden_state``). The exported model is
compared with the PyTorch model in onnxruntime on random inputs of several shapes (and on the sentences of
``--verify-tsv`` when given) before anything is written; OUT is written through a temporary file and moved into place.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

# running as a script puts conversion/ (not the repo root) on sys.path
_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

import modeling_ultrafastbert  # noqa: E402
from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertPreTrainedModel  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import FastFeedForward  # noqa: E402

# the ONNX outputs of each class, named as the fields of its PyTorch output
OUTPUT_NAMES = {
    "UltraFastBertModel": ("last_hidden_state",),
    "UltraFastBertForMaskedLM": ("logits",),
    "UltraFastBertForSequenceClassification": ("logits",),
    "UltraFastBertForTokenClassification": ("logits",),
    "UltraFastBertForQuestionAnswering": ("start_logits", "end_logits"),
}
INPUT_NAMES = ("input_ids", "attention_mask")
TOLERANCE = 1e-4
FORBIDDEN_OPS = ("Loop", "If", "Scan")  # the FFF walk must be unrolled gathers, not control flow


class OnnxExportError(ValueError):
    """The exported graph is malformed or does not reproduce the PyTorch model."""


# --------------------------------------------------------------------------------------------------------------------
# the FFF walk as gathers


def fff_gather_walk(
    x: torch.Tensor, in_weight: torch.Tensor, in_bias: torch.Tensor, out_weight: torch.Tensor
) -> torch.Tensor:
    """Conditional FFF of ``x`` (T, H), written for export: flat row gathers and batched matmuls, one step per level.

    Same function as ``fast_feedforward.fff_conditional_torch``; the trees' nodes are addressed in one flat table of
    ``trees * nodes`` rows so that each gather is a single ONNX ``Gather`` on axis 0.
    """
    trees, nodes, hidden = in_weight.shape
    depth = int(math.log2(nodes + 1)) - 1
    in_rows = in_weight.reshape(trees * nodes, hidden)
    out_rows = out_weight.reshape(trees * nodes, hidden)
    biases = in_bias.reshape(trees * nodes)
    tree_start = torch.arange(trees, device=x.device) * nodes  # flat index of each tree's root

    # level 0: every token is at the roots, so the logits are one dense (T, H) x (H, K) product
    logits = x @ _rows(in_rows, tree_start).t() + _rows(biases, tree_start)
    output = nn.functional.gelu(logits) @ _rows(out_rows, tree_start)
    node = 1 + (logits > 0).long()  # (T, K), heap index inside each tree
    for _ in range(depth):
        flat = node + tree_start
        # per-token dot products as multiply + sum: onnxruntime runs a batch of T (1, H) x (H, 1) MatMuls 2-5x slower
        logits = (_rows(in_rows, flat) * x.unsqueeze(1)).sum(-1) + _rows(biases, flat)  # (T, K)
        output = output + (nn.functional.gelu(logits).unsqueeze(-1) * _rows(out_rows, flat)).sum(1)
        node = 2 * node + 1 + (logits > 0).long()
    return output


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a tensor of row indices, as index_select (one ONNX Gather, not GatherND)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])


class GatherWalkFeedForward(nn.Module):
    """Stands in for a ``FastFeedForward`` during export: the same parameters, computed by ``fff_gather_walk``."""

    def __init__(self, fff: FastFeedForward):
        super().__init__()
        self.fff = fff
        # the layer writes these switches before each call; the export walk ignores them (it is always conditional)
        self.inference = fff.inference
        self.kernel = fff.kernel

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(-1, self.fff.hidden_size)
        output = fff_gather_walk(flat, self.fff.in_weight, self.fff.in_bias, self.fff.out_weight).view(x.shape)
        return output if residual is None else residual + output


@contextlib.contextmanager
def gather_walk_feedforwards(model: nn.Module):
    """Swap every ``FastFeedForward`` of ``model`` for a ``GatherWalkFeedForward`` on the same parameters; restore."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FastFeedForward):
                setattr(parent, name, GatherWalkFeedForward(child))
                swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


class _NamedOutputs(nn.Module):
    """Positional (input_ids, attention_mask) in, the class's output tensors out, as a tuple."""

    def __init__(self, model: UltraFastBertPreTrainedModel, output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


def output_names_of(model: nn.Module) -> tuple[str, ...]:
    name = type(model).__name__
    if name not in OUTPUT_NAMES:
        raise TypeError(f"export_onnx: expected one of {sorted(OUTPUT_NAMES)}, got a {name}")
    return OUTPUT_NAMES[name]


# --------------------------------------------------------------------------------------------------------------------
# export and checks


def export_to_onnx_program(model: UltraFastBertPreTrainedModel, opset: int | None = None):
    """torch.onnx export of ``model`` (eval mode, fp32) with dynamic batch and sequence axes; returns the ONNXProgram."""
    output_names = output_names_of(model)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise TypeError("export_onnx: export a float32 model (call model.float() first)")
    config = model.config
    # an example with batch and sequence > 1 (torch.export specialises sizes 0 and 1), some of it padding
    input_ids = torch.randint(1, config.vocab_size, (2, min(8, config.max_position_embeddings)))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -1] = 0
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=config.max_position_embeddings)
    dynamic_shapes = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}

    was_training = model.training
    model.eval()
    try:
        with gather_walk_feedforwards(model), torch.no_grad():
            program = torch.onnx.export(
                _NamedOutputs(model, output_names).eval(),
                (input_ids, attention_mask),
                input_names=list(INPUT_NAMES),
                output_names=list(output_names),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    return program


def forbidden_ops(onnx_model) -> list[str]:
    """Control-flow ops anywhere in the graph (including subgraphs and local functions)."""
    found = []

    def visit(graph):
        for node in graph.node:
            if node.op_type in FORBIDDEN_OPS:
                found.append(node.op_type)
            for attribute in node.attribute:
                if attribute.g is not None and attribute.g.node:
                    visit(attribute.g)
                for subgraph in attribute.graphs:
                    visit(subgraph)

    visit(onnx_model.graph)
    for function in onnx_model.functions:
        visit(function)
    return found


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_batches(model, session, batches) -> dict:
    """Run ``(input_ids, attention_mask)`` batches through the PyTorch model and the ORT session.

    Returns the largest absolute difference of any output, the number of sequences, and (for classifiers) how many
    predictions (argmax of the first output) agree.
    """
    output_names = output_names_of(model)
    max_diff, sequences, agreeing = 0.0, 0, 0
    for input_ids, attention_mask in batches:
        with torch.inference_mode():
            outputs = model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        expected = [outputs[name].float().numpy() for name in output_names]
        got = session.run(list(output_names), {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
        real = attention_mask.numpy().astype(bool)
        for want, have in zip(expected, got):
            if want.shape != have.shape:
                raise OnnxExportError(f"ONNX output has shape {have.shape}, PyTorch {want.shape}")
            if want.shape[:2] == real.shape:  # per-token outputs: padded positions are don't-cares
                want, have = want[real], have[real]
            if want.size:
                max_diff = max(max_diff, float(abs(want - have).max()))
        # a sequence's prediction: the argmax of the first output (per token for token-level heads, real tokens only)
        same = expected[0].argmax(-1) == got[0].argmax(-1)
        if same.ndim == 2:
            same = (same | ~real).all(axis=1)
        sequences += input_ids.shape[0]
        agreeing += int(same.sum())
    return {"max_abs_diff": max_diff, "sequences": sequences, "same_predictions": agreeing}


def random_batches(config: UltraFastBertConfig, seed: int = 0):
    """Random id batches of several shapes (batch 1 and 3, short and full length, with padding) to check the export."""
    generator = torch.Generator().manual_seed(seed)
    longest = config.max_position_embeddings
    batches = []
    for batch, length in ((1, 1), (3, min(17, longest)), (1, longest), (4, longest)):
        input_ids = torch.randint(1, config.vocab_size, (batch, length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        for row in range(1, batch):  # every row but the first is right-padded by a different amount
            attention_mask[row, max(1, length - 3 * row):] = 0
        input_ids = input_ids.masked_fill(attention_mask == 0, config.pad_token_id or 0)
        batches.append((input_ids, attention_mask))
    return batches


def read_tsv_sentences(path: str | os.PathLike) -> list[str]:
    """First column of a GLUE-style TSV with a header line (SST-2's ``sentence\\tlabel``)."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline()
        if not header:
            raise ValueError(f"{path} is empty")
        sentences = [line.rstrip("\n").split("\t")[0] for line in handle if line.strip()]
    if not sentences:
        raise ValueError(f"{path} has a header but no sentences")
    return sentences


def sentence_batches(tokenizer, sentences: list[str], batch_size: int, max_length: int):
    for start in range(0, len(sentences), batch_size):
        encoded = tokenizer(sentences[start : start + batch_size], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
        yield encoded["input_ids"].long(), encoded["attention_mask"].long()


def check_exported(model, path, tolerance: float = TOLERANCE, extra_batches=None) -> dict:
    """Load the ONNX file, refuse control flow, and compare it with ``model`` on random (and ``extra``) batches."""
    import onnx

    onnx_model = onnx.load(str(path), load_external_data=False)
    found = forbidden_ops(onnx_model)
    if found:
        raise OnnxExportError(f"the exported graph contains control flow ops {sorted(set(found))}")
    session = onnx_session(path)
    report = compare_batches(model, session, random_batches(model.config))
    if report["max_abs_diff"] > tolerance:
        raise OnnxExportError(
            f"onnxruntime differs from PyTorch by {report['max_abs_diff']:.3g} on random inputs (tolerance {tolerance})"
        )
    if extra_batches is not None:
        report = compare_batches(model, session, extra_batches)
        if report["max_abs_diff"] > tolerance or report["same_predictions"] != report["sequences"]:
            raise OnnxExportError(
                f"onnxruntime differs from PyTorch by {report['max_abs_diff']:.3g} on the given sentences "
                f"(tolerance {tolerance}); same prediction on {report['same_predictions']} of {report['sequences']}"
            )
    return report


def export_onnx(model, out: str | os.PathLike, tolerance: float = TOLERANCE, opset: int | None = None,
                extra_batches=None) -> dict:
    """Export ``model`` to ``out`` (.onnx), verified in onnxruntime first; ``out`` is only replaced on success."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"the output path must end in .onnx, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    program = export_to_onnx_program(model, opset=opset)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp_path = tmp_dir / out.name  # the final name, so that an external-data file (>2 GB models) is named right
        program.save(str(tmp_path))
        report = check_exported(model, tmp_path, tolerance, extra_batches)
        for written in sorted(tmp_dir.iterdir(), key=lambda p: p.suffix == ".onnx"):  # the .onnx itself last
            os.replace(written, out.parent / written.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return report


def load_checkpoint(checkpoint: str):
    """Our model class named by the checkpoint's config, loaded from safetensors, in eval mode."""
    config = UltraFastBertConfig.from_pretrained(checkpoint)
    architectures = config.architectures or ["UltraFastBertModel"]
    name = architectures[0]
    if name not in OUTPUT_NAMES:
        raise ValueError(f"{checkpoint}: config.architectures names {name!r}, expected one of {sorted(OUTPUT_NAMES)}")
    model_class = getattr(modeling_ultrafastbert, name)
    return model_class.from_pretrained(checkpoint, use_safetensors=True, dtype=torch.float32).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint folder or Hub repo id")
    parser.add_argument("out", help="output .onnx file (written only after the checks pass)")
    parser.add_argument("--verify-tsv", help="also compare on every sentence of this TSV (first column, header line)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size for --verify-tsv")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest allowed |ONNX - PyTorch|")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    args = parser.parse_args(argv)

    model = load_checkpoint(args.checkpoint)
    extra = None
    if args.verify_tsv:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
        sentences = read_tsv_sentences(args.verify_tsv)
        extra = list(sentence_batches(tokenizer, sentences, args.batch_size, model.config.max_position_embeddings))
    report = export_onnx(model, args.out, tolerance=args.tolerance, opset=args.opset, extra_batches=extra)
    what = f"{report['sequences']} sentences of {args.verify_tsv}" if args.verify_tsv else "random inputs"
    print(f"wrote {args.out}: max |onnxruntime - PyTorch| = {report['max_abs_diff']:.3g} on {what}, "
          f"same prediction on {report['same_predictions']}/{report['sequences']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
