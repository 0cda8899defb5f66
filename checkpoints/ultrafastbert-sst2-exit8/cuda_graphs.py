# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Automatic CUDA graphs for repeated inference calls.

At hidden 768 a forward of the 16-layer model is ~170 small kernels; launched one by one from Python, the host needs
more time to queue them than the GPU needs to run them. So the GPU inference path records each call signature (shapes,
dtypes, which inputs are given) once it has been seen a few times, and later calls with that signature copy their inputs
into the recorded buffers and replay the graph: one launch instead of ~170. The outputs are cloned, so they stay valid
after the next call.

A call is recorded only when nothing in it depends on values read back to the host: eval mode, no autograd, CUDA
inputs, no labels, no extra outputs (attentions, hidden states, exit logits), no early exit, no adaptive spans, no
explicit position ids or embeddings. Anything else runs eagerly, unchanged. A recorded graph is dropped when a parameter
or buffer changes (in place, moved, or replaced) or an inference setting of the config changes. The input ids are
range-checked outside the graph without stalling the host: their min/max go to pinned memory before the replay and are
read after it has been queued; inside the graph the ids are clamped so that a bad id cannot fault the lookup kernel.

On by default (``config.cuda_graphs = "auto"``); ``"off"`` launches every kernel from Python.
"""

import functools
import threading
import warnings
from collections import OrderedDict

import torch

EAGER_CALLS_BEFORE_RECORDING = 2  # the first calls also warm up what a recording must not do (compiles, allocations)
MAX_GRAPHS_PER_MODEL = 8  # least recently used graphs beyond this are dropped (their memory goes back to the pool)

# keyword arguments a recorded call may carry, and the values they must have (anything else runs eagerly)
_MUST_BE_NONE = ("inputs_embeds", "labels", "start_positions", "end_positions", "position_ids")
_MUST_BE_FALSY = ("output_attentions", "output_hidden_states", "output_exit_logits")
_ACCEPTED = {"input_ids", "attention_mask", "token_type_ids", "return_dict", *_MUST_BE_NONE, *_MUST_BE_FALSY}
# config fields that change what an inference forward computes (recorded graphs are keyed on their values)
_CONFIG_FIELDS = ("fff_kernel", "fff_inference", "_attn_implementation", "classifier_pooling",
                  "classifier_pool_includes_padding", "early_exit_entropy", "adaptive_span", "problem_type",
                  "output_attentions", "output_hidden_states", "cuda_graphs")

_state = threading.local()  # per thread: how deep in graph-aware forwards we are, and whether a call is recording
_registrations = [0]  # bumped whenever any module registers a parameter, buffer or submodule (see _watch_registrations)
_watching = False


def _watch_registrations() -> None:
    """Count parameter/buffer/submodule (re)registrations process-wide: a replaced tensor (e.g. load_state_dict with
    assign=True) keeps the old one's version, so only this tells a recorded graph that its tensors are stale."""
    global _watching
    if _watching:
        return

    def bump(*args):
        _registrations[0] += 1

    module = torch.nn.modules.module
    module.register_module_parameter_registration_hook(bump)
    module.register_module_buffer_registration_hook(bump)
    module.register_module_module_registration_hook(bump)
    _watching = True


def recording_graph() -> bool:
    """True while a call is being recorded (its warm-up run included): the model must then take the path it takes
    inside a capture (no reads back to the host), and clamp the ids, which the replaying caller range-checks."""
    return getattr(_state, "recording", False)


class _RecordedCall:
    def __init__(self, graph, static_inputs, static_output, bounds_host, bounds_event):
        self.graph = graph
        self.static_inputs = static_inputs
        self.static_output = static_output
        self.bounds_host = bounds_host  # pinned (2,) int64: min and max of the call's input ids
        self.bounds_event = bounds_event


class CudaGraphCache:
    """The recorded graphs of one model, by call signature, and how often each signature was seen."""

    def __init__(self):
        self.graphs: OrderedDict = OrderedDict()
        self.seen: dict = {}
        self.failed: set = set()
        self.pool = None
        self.tensors: list = []
        self.tensors_generation = -1
        self.tensors_key = None
        self.recordings = 0
        self.replays = 0

    def clear(self) -> None:
        self.graphs.clear()
        self.seen.clear()
        self.failed.clear()
        self.pool = None  # with every graph gone, their memory pool can go too

    def check_tensors(self, model) -> None:
        """Drop every graph if a parameter or buffer of ``model`` moved, changed in place or was replaced."""
        if self.tensors_generation != _registrations[0]:
            self.tensors = [*model.parameters(), *model.buffers()]
            self.tensors_generation = _registrations[0]
        key = (tuple([t.data_ptr() for t in self.tensors]), tuple([t._version for t in self.tensors]),
               tuple([id(t) for t in self.tensors]))
        if key != self.tensors_key:
            self.clear()
            self.tensors_key = key


class CudaGraphBackend:
    """What recording and replaying needs from the device: CUDA graphs. (tests/test_cuda_graphs.py swaps in a CPU
    emulation to test the bookkeeping around them on machines without a GPU.)"""

    device_type = "cuda"

    def handles(self, tensor: torch.Tensor) -> bool:
        return tensor.is_cuda

    def capturing(self) -> bool:
        return torch.cuda.is_current_stream_capturing()

    def new_pool(self):
        return torch.cuda.graph_pool_handle()  # one pool per model: its graphs replay one at a time

    def record(self, run, pool):
        """Record ``run()`` (after one run outside the recording, on a side stream as PyTorch advises): the graph and
        the output tensors its replays overwrite."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = run()
        return graph, output

    def replay(self, graph) -> None:
        graph.replay()

    def host_buffer(self) -> torch.Tensor:
        return torch.empty(2, dtype=torch.int64, pin_memory=True)

    def event(self):
        return torch.cuda.Event()


_BACKEND = CudaGraphBackend()


def _graphable_inputs(model, args, kwargs):
    """The call's tensors by name if it may be recorded (see the module docstring), else None."""
    if model.training or torch.is_grad_enabled() or model.config.cuda_graphs != "auto":
        return None
    if len(args) > 1 or not _ACCEPTED.issuperset(kwargs):
        return None
    input_ids = args[0] if args else kwargs.get("input_ids")
    if not isinstance(input_ids, torch.Tensor) or not _BACKEND.handles(input_ids) or input_ids.dim() != 2:
        return None
    if input_ids.numel() == 0 or input_ids.dtype.is_floating_point or input_ids.dtype.is_complex:
        return None  # the eager forward deals with these (empty outputs, or an error naming the problem)
    if input_ids.dtype == torch.bool:
        return None
    if any(kwargs.get(name) is not None for name in _MUST_BE_NONE) or any(kwargs.get(name) for name in _MUST_BE_FALSY):
        return None
    config = model.config
    if config.output_attentions or config.output_hidden_states or config.early_exit_entropy is not None:
        return None
    if config.adaptive_span or torch.is_autocast_enabled(_BACKEND.device_type) or _BACKEND.capturing():
        return None
    inputs = {"input_ids": input_ids}
    mask = kwargs.get("attention_mask")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.device != input_ids.device or mask.shape != input_ids.shape:
            return None
        inputs["attention_mask"] = mask
    return inputs


def _signature(model, inputs, return_dict):
    tensors = tuple((name, tuple(t.shape), t.dtype, t.device.index) for name, t in inputs.items())
    config = tuple(getattr(model.config, name, None) for name in _CONFIG_FIELDS)
    return tensors, config, return_dict, torch.is_inference_mode_enabled()


def _clone_output(output):
    return type(output)(**{name: value.clone() if isinstance(value, torch.Tensor) else value
                           for name, value in output.items()})


def _record(model, forward, inputs, cache):
    static_inputs = {name: tensor.clone() for name, tensor in inputs.items()}
    if cache.pool is None:
        cache.pool = _BACKEND.new_pool()

    def run():
        _state.recording = True
        try:
            return forward(model, **static_inputs, return_dict=True)
        finally:
            _state.recording = False

    graph, static_output = _BACKEND.record(run, cache.pool)
    cache.recordings += 1
    return _RecordedCall(graph, static_inputs, static_output, _BACKEND.host_buffer(), _BACKEND.event())


def _replay(model, recorded, inputs):
    ids = inputs["input_ids"]
    # the range check: min/max copied to the host without waiting, read once the replay is queued
    low, high = torch.aminmax(ids)
    recorded.bounds_host.copy_(torch.stack([low, high]).to(torch.int64), non_blocking=True)
    recorded.bounds_event.record()
    for name, tensor in inputs.items():
        recorded.static_inputs[name].copy_(tensor)
    _BACKEND.replay(recorded.graph)
    output = _clone_output(recorded.static_output)
    recorded.bounds_event.synchronize()
    low, high = recorded.bounds_host.tolist()
    vocab_size = model.config.vocab_size
    if low < 0 or high >= vocab_size:
        raise ValueError(f"input_ids contain ids outside the vocabulary [0, {vocab_size}): min {low}, max {high}")
    return output


def _call_with_graphs(model, forward, args, kwargs, inputs):
    """A graphable call: eager while its signature is new, then recorded once and replayed."""
    return_dict = kwargs.get("return_dict")
    return_dict = model.config.return_dict if return_dict is None else return_dict
    _watch_registrations()
    cache = model.__dict__.get("_cuda_graphs")
    if cache is None:
        cache = model.__dict__["_cuda_graphs"] = CudaGraphCache()
    cache.check_tensors(model)
    signature = _signature(model, inputs, return_dict)
    recorded = cache.graphs.get(signature)
    if recorded is None:
        seen = cache.seen[signature] = cache.seen.pop(signature, 0) + 1
        if len(cache.seen) > 8 * MAX_GRAPHS_PER_MODEL:  # many distinct shapes: forget the oldest counts
            cache.seen.pop(next(iter(cache.seen)))
        if seen <= EAGER_CALLS_BEFORE_RECORDING or signature in cache.failed:
            return forward(model, *args, **kwargs)
        try:
            recorded = _record(model, forward, inputs, cache)
        except Exception as error:  # noqa: BLE001 - any failure: this signature runs eagerly from now on
            cache.failed.add(signature)
            warnings.warn(f"UltraFastBERT: could not record a CUDA graph for this call ({type(error).__name__}: "
                          f"{error}); it runs eagerly. Set config.cuda_graphs='off' to skip the attempt.")
            return forward(model, *args, **kwargs)
        cache.graphs[signature] = recorded
        while len(cache.graphs) > MAX_GRAPHS_PER_MODEL:
            cache.graphs.popitem(last=False)
    cache.graphs.move_to_end(signature)
    output = _replay(model, recorded, inputs)
    cache.replays += 1
    return output if return_dict else output.to_tuple()


def cuda_graph_inference(forward):
    """Decorator for a model's ``forward``: repeated graphable inference calls on CUDA replay a recorded graph."""

    @functools.wraps(forward)
    def graph_aware_forward(self, *args, **kwargs):
        if torch.compiler.is_compiling():  # torch.compile makes graphs of its own
            return forward(self, *args, **kwargs)
        depth = getattr(_state, "depth", 0)
        # only the outermost model call is recorded: a head's inner encoder call runs inside the head's graph
        inputs = _graphable_inputs(self, args, kwargs) if depth == 0 else None
        _state.depth = depth + 1
        try:
            if inputs is None:
                return forward(self, *args, **kwargs)
            return _call_with_graphs(self, forward, args, kwargs, inputs)
        finally:
            _state.depth = depth

    return graph_aware_forward
