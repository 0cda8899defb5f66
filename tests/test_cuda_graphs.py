"""Automatic CUDA graphs of repeated inference calls (modeling_ultrafastbert/cuda_graphs.py).

Every behaviour test runs twice: on CUDA (skipped without a GPU; run on the GPU machine) and on the CPU through an
emulation of CUDA graphs' contract (a recording runs the call twice, a replay recomputes from the recorded input
buffers and overwrites the recorded output tensors in place), which checks the bookkeeping around the graphs on any
machine: when calls record and replay, inputs copied in, outputs cloned out, weights and settings followed, the range
check, the size limit, and which calls stay eager."""

import inspect

import pytest
import torch

from modeling_ultrafastbert import (
    UltraFastBertConfig,
    UltraFastBertForMaskedLM,
    UltraFastBertForQuestionAnswering,
    UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification,
    UltraFastBertModel,
)
from modeling_ultrafastbert import cuda_graphs

CLASSES = [UltraFastBertModel, UltraFastBertForMaskedLM, UltraFastBertForSequenceClassification,
           UltraFastBertForTokenClassification, UltraFastBertForQuestionAnswering]
VOCAB = 500


class _NoEvent:
    def record(self):
        pass

    def synchronize(self):
        pass


class EmulatedCudaGraphs(cuda_graphs.CudaGraphBackend):
    device_type = "cpu"

    def handles(self, tensor):
        return tensor.device.type == "cpu"

    def capturing(self):
        return False

    def new_pool(self):
        return object()

    def record(self, run, pool):
        run()  # the warm-up run
        output = run()
        return (run, output), output

    def replay(self, graph):
        run, output = graph
        fresh = run()
        for name, value in output.items():
            value.copy_(fresh[name])

    def host_buffer(self):
        return torch.empty(2, dtype=torch.int64)

    def event(self):
        return _NoEvent()


@pytest.fixture(params=["cuda", "cpu-emulated"])
def device(request, monkeypatch):
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("CUDA graphs need a CUDA GPU")
        return "cuda"
    monkeypatch.setattr(cuda_graphs, "_BACKEND", EmulatedCudaGraphs())
    return "cpu"


def _config(**overrides):
    options = dict(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, fff_depth=6,
                   max_position_embeddings=64, attn_implementation="sdpa", num_labels=3, cuda_graphs="auto")
    options.update(overrides)
    return UltraFastBertConfig(**options)


def _inputs(device, batch=4, seq=24, padding="right"):
    ids = torch.randint(1, VOCAB, (batch, seq), device=device)
    mask = torch.ones_like(ids)
    if padding == "right":
        mask[0, seq // 2:] = 0
    elif padding == "left":
        mask[-1, : seq // 3] = 0
    return ids, mask


def _eager(model, **kwargs):
    model.config.cuda_graphs = "off"
    try:
        return model(**kwargs)
    finally:
        model.config.cuda_graphs = "auto"


def _tensors(output):
    return [value for value in output.values()] if hasattr(output, "values") else list(output)


def _assert_same(got, expected, tol=1e-5):
    got, expected = _tensors(got), _tensors(expected)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_config_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="cuda_graphs"):
        _config(cuda_graphs="on")
    assert UltraFastBertConfig().cuda_graphs == "auto"  # the default since its GPU tests passed on an H100


@pytest.mark.parametrize("cls", CLASSES)
def test_decorated_forwards_keep_their_signatures(cls):
    parameters = inspect.signature(cls.forward).parameters
    assert "input_ids" in parameters and "attention_mask" in parameters and "kwargs" in parameters
    assert cls.forward.__wrapped__ is not None


def test_cpu_calls_run_eagerly():
    model = UltraFastBertForSequenceClassification(_config()).eval()
    ids, mask = _inputs("cpu")
    with torch.no_grad():
        for _ in range(4):
            model(input_ids=ids, attention_mask=mask)
    assert "_cuda_graphs" not in model.__dict__


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("padding", ["right", "left"])
def test_repeated_calls_replay_a_graph_and_match_eager(device, cls, padding):
    torch.manual_seed(0)
    model = cls(_config()).to(device).eval()
    with torch.inference_mode():
        for call in range(5):
            ids, mask = _inputs(device, padding=padding)
            got = model(input_ids=ids, attention_mask=mask)
            _assert_same(got, _eager(model, input_ids=ids, attention_mask=mask))
    cache = model._cuda_graphs
    assert (cache.recordings, cache.replays) == (1, 3)  # calls 1-2 eager, 3 records and replays, 4-5 replay


def test_outputs_stay_valid_after_the_next_call(device):
    model = UltraFastBertForSequenceClassification(_config()).to(device).eval()
    with torch.no_grad():
        outputs = []
        for _ in range(6):
            ids, mask = _inputs(device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            outputs.append((logits, logits.clone(), ids, mask))
        assert model._cuda_graphs.replays == 4
        for logits, copy, ids, mask in outputs:
            assert torch.equal(logits, copy)
            _assert_same([logits], [_eager(model, input_ids=ids, attention_mask=mask).logits])


def test_changed_or_replaced_weights_are_followed(device):
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(_config()).to(device).eval()
    other = UltraFastBertForSequenceClassification(_config()).to(device).eval()
    ids, mask = _inputs(device)
    with torch.no_grad():
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask)
        assert model._cuda_graphs.replays == 1
        model.ultrafastbert.layers[0].feedforward.out_weight.mul_(3.0)  # in place: a new version
        model.classifier.weight.mul_(-1.0)
        for _ in range(4):
            got = model(input_ids=ids, attention_mask=mask).logits
            _assert_same([got], [_eager(model, input_ids=ids, attention_mask=mask).logits])
        # the change dropped the old graph: two eager calls, then a new recording
        assert (model._cuda_graphs.recordings, model._cuda_graphs.replays) == (2, 3)
        model.load_state_dict(other.state_dict(), assign=True)  # new tensor objects (and storage)
        for _ in range(4):
            got = model(input_ids=ids, attention_mask=mask).logits
            _assert_same([got], [other(input_ids=ids, attention_mask=mask).logits])
        assert (model._cuda_graphs.recordings, model._cuda_graphs.replays) == (3, 5)
        model.config.fff_kernel = "torch"  # an inference setting: a new signature
        got = model(input_ids=ids, attention_mask=mask).logits
        _assert_same([got], [_eager(model, input_ids=ids, attention_mask=mask).logits])
        model.config.fff_kernel = "auto"


def test_ids_out_of_range_raise_and_the_model_recovers(device):
    model = UltraFastBertForMaskedLM(_config()).to(device).eval()
    ids, mask = _inputs(device)
    with torch.no_grad():
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask)
        assert model._cuda_graphs.replays == 1
        for bad in (VOCAB, -1):
            wrong = ids.clone()
            wrong[1, 3] = bad
            with pytest.raises(ValueError, match="outside the vocabulary"):
                model(input_ids=wrong, attention_mask=mask)
        assert model._cuda_graphs.replays == 1
        got = model(input_ids=ids, attention_mask=mask).logits
        if device == "cuda":
            torch.cuda.synchronize()  # no device-side assert was left behind
        _assert_same([got], [_eager(model, input_ids=ids, attention_mask=mask).logits])


def test_each_shape_gets_its_own_graph_up_to_the_limit(device):
    model = UltraFastBertForTokenClassification(_config()).to(device).eval()
    lengths = range(8, 8 + cuda_graphs.MAX_GRAPHS_PER_MODEL + 3)
    with torch.no_grad():
        for seq in lengths:
            for _ in range(3):
                ids, mask = _inputs(device, seq=seq)
                got = model(input_ids=ids, attention_mask=mask)
            _assert_same(got, _eager(model, input_ids=ids, attention_mask=mask))
        # no mask at all is a signature of its own
        for _ in range(3):
            got = model(input_ids=ids)
        _assert_same(got, _eager(model, input_ids=ids))
    cache = model._cuda_graphs
    assert cache.recordings == len(lengths) + 1
    assert len(cache.graphs) == cuda_graphs.MAX_GRAPHS_PER_MODEL


@pytest.mark.parametrize("case", ["training", "grad", "labels", "hidden_states", "attentions", "off", "positions"])
def test_calls_that_cannot_be_recorded_run_eagerly(device, case):
    model = UltraFastBertForSequenceClassification(_config()).to(device).eval()
    ids, mask = _inputs(device)
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if case == "labels":
        kwargs["labels"] = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
    elif case == "hidden_states":
        kwargs["output_hidden_states"] = True
    elif case == "attentions":
        kwargs["output_attentions"] = True
    elif case == "positions":
        kwargs["position_ids"] = torch.arange(ids.shape[1], device=device).expand_as(ids)
    elif case == "off":
        model.config.cuda_graphs = "off"
    if case == "training":
        model.config.hidden_dropout_prob = 0.0
        model.train()
    with torch.set_grad_enabled(case in ("grad", "training")):
        for _ in range(4):
            model(**kwargs)
    cache = model.__dict__.get("_cuda_graphs")
    assert cache is None or cache.recordings == 0


def test_bfloat16_and_tuple_outputs(device):
    model = UltraFastBertForQuestionAnswering(_config()).to(device).to(torch.bfloat16).eval()
    with torch.no_grad():
        for _ in range(4):
            ids, mask = _inputs(device, batch=8, seq=40)
            got = model(ids, attention_mask=mask, return_dict=False)
            assert isinstance(got, tuple) and len(got) == 2
            _assert_same(got, _eager(model, input_ids=ids, attention_mask=mask, return_dict=False), tol=1e-2)
    assert model._cuda_graphs.replays == 2
