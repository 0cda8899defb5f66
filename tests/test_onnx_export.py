"""ONNX export (conversion/export_onnx.py): the FFF as unrolled gathers, dynamic axes, onnxruntime parity."""

import pytest
import torch

from conftest import SHARED, tiny_config

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx's exporter needs it

from conversion import export_onnx as ex  # noqa: E402
from modeling_ultrafastbert import (  # noqa: E402
    UltraFastBertForMaskedLM,
    UltraFastBertForQuestionAnswering,
    UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification,
    UltraFastBertModel,
)
from modeling_ultrafastbert.fast_feedforward import FastFeedForward, fff_conditional_torch  # noqa: E402

SHIPPED = ex._REPO_ROOT / "checkpoints" / "ultrafastbert-sst2-small"
SST2_DEV = SHARED / "data" / "glue" / "SST-2" / "dev.tsv"


@pytest.mark.parametrize("trees,depth", [(1, 0), (2, 3), (3, 5)])
def test_gather_walk_is_the_conditional_fff(trees, depth):
    torch.manual_seed(depth)
    fff = FastFeedForward(24, depth, trees).eval()
    x = torch.randn(37, 24)
    want = fff_conditional_torch(x, fff.in_weight, fff.in_bias, fff.out_weight)
    got = ex.fff_gather_walk(x, fff.in_weight, fff.in_bias, fff.out_weight)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    residual, x3 = torch.randn(2, 19, 24), torch.randn(2, 19, 24)
    stand_in = ex.GatherWalkFeedForward(fff)
    torch.testing.assert_close(stand_in(x3, residual=residual), fff(x3, residual=residual), rtol=1e-5, atol=1e-6)


def _control_flow_model(op_type):
    from onnx import TensorProto, helper

    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])],
                             [helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [1])])
    inner = helper.make_node(op_type, ["x"], ["y"], body=body) if op_type == "Scan" else \
        helper.make_node("Loop", ["", "", "x"], ["y"], body=body)
    # nested one level down, inside an If branch, to check that subgraphs are searched too
    branch = helper.make_graph([inner], "branch", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    outer = helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([outer], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])])
    return helper.make_model(graph)


def test_forbidden_ops_sees_control_flow_in_subgraphs():
    assert set(ex.forbidden_ops(_control_flow_model("Loop"))) == {"If", "Loop"}  # both branches hold the Loop
    assert set(ex.forbidden_ops(_control_flow_model("Scan"))) == {"If", "Scan"}


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize(
    "model_class",
    [UltraFastBertModel, UltraFastBertForMaskedLM, UltraFastBertForSequenceClassification,
     UltraFastBertForTokenClassification, UltraFastBertForQuestionAnswering],
)
def test_export_tiny_model_every_head(model_class, tmp_path):
    torch.manual_seed(0)
    model = model_class(tiny_config(num_labels=3)).eval()
    out = tmp_path / "model.onnx"
    report = ex.export_onnx(model, out)
    assert report["max_abs_diff"] <= ex.TOLERANCE
    # the swap was undone: the PyTorch model still has its own FFF layers
    modules = list(model.modules())
    assert sum(isinstance(m, FastFeedForward) for m in modules) == model.config.num_hidden_layers
    assert not any(isinstance(m, ex.GatherWalkFeedForward) for m in modules)

    graph = onnx.load(str(out))
    assert ex.forbidden_ops(graph) == []
    ops = {node.op_type for node in graph.graph.node}
    assert "Gather" in ops and "Greater" in ops  # the walk: row gathers and the (z > 0) step
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.graph.output] == list(ex.OUTPUT_NAMES[model_class.__name__])
    for value_info in graph.graph.input:
        assert all(isinstance(d, str) for d in _dims(value_info)), _dims(value_info)  # batch and sequence dynamic

    # shapes the export never saw, with padding; compare_batches checks every output
    session = ex.onnx_session(out)
    generator = torch.Generator().manual_seed(1)
    batches = []
    for batch, length in ((5, 7), (2, model.config.max_position_embeddings), (1, 3)):
        ids = torch.randint(1, model.config.vocab_size, (batch, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[-1, length // 2 + 1:] = 0
        batches.append((ids, mask))
    result = ex.compare_batches(model, session, batches)
    assert result["max_abs_diff"] <= 1e-4
    assert result["sequences"] == 8


def test_failed_check_leaves_the_destination_alone(tmp_path):
    model = UltraFastBertForSequenceClassification(tiny_config()).eval()
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")
    with pytest.raises(ex.OnnxExportError, match="differs from PyTorch"):
        ex.export_onnx(model, out, tolerance=-1.0)  # no export can pass a negative tolerance
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary left behind
    with pytest.raises(ValueError, match="must end in .onnx"):
        ex.export_onnx(model, tmp_path / "model.bin")


def test_refuses_non_float32_and_foreign_models(tmp_path):
    model = UltraFastBertForSequenceClassification(tiny_config()).eval().to(torch.bfloat16)
    with pytest.raises(TypeError, match="float32"):
        ex.export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="expected one of"):
        ex.export_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx")


def _read_dev(limit):
    if not SST2_DEV.exists():
        pytest.skip(f"SST-2 dev set not found at {SST2_DEV}")
    return ex.read_tsv_sentences(SST2_DEV)[:limit]


def test_shipped_checkpoint_cli_parity_on_sst2_dev(tmp_path):
    """The command line on the shipped checkpoint, checked on SST-2 dev sentences; then re-checked independently."""
    sentences = _read_dev(160)
    tsv = tmp_path / "dev_subset.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{s}\t0\n" for s in sentences[:64]), encoding="utf-8")
    out = tmp_path / "sst2.onnx"
    assert ex.main([str(SHIPPED), str(out), "--verify-tsv", str(tsv), "--batch-size", "16"]) == 0

    graph = onnx.load(str(out))
    assert ex.forbidden_ops(graph) == []
    from transformers import AutoTokenizer

    model = ex.load_checkpoint(str(SHIPPED))
    tokenizer = AutoTokenizer.from_pretrained(str(SHIPPED))
    # sentences the CLI did not see, at another batch size
    batches = list(ex.sentence_batches(tokenizer, sentences[64:], 24, model.config.max_position_embeddings))
    result = ex.compare_batches(model, ex.onnx_session(out), batches)
    assert result["sequences"] == len(sentences) - 64
    assert result["max_abs_diff"] <= 1e-4
    assert result["same_predictions"] == result["sequences"]
