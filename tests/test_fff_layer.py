"""FastFeedForward: conditional == masked dense == an independent loop reference; gradients; memory; bad input."""

import itertools
import math
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from modeling_ultrafastbert import FastFeedForward, fff_conditional_torch, fff_masked
from modeling_ultrafastbert.fast_feedforward import fff_conditional, fff_paths_torch


def reference_loop(x, in_weight, in_bias, out_weight):
    """The FFF as DEVELOPERS.md states it, token by token and level by level, in float64."""
    x, in_weight, in_bias, out_weight = (t.double() for t in (x, in_weight, in_bias, out_weight))
    trees, nodes, _ = in_weight.shape
    depth = int(math.log2(nodes + 1)) - 1
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for k in range(trees):
            n = 0
            for _ in range(depth + 1):
                z = float(x[t] @ in_weight[k, n] + in_bias[k, n])
                out[t] += torch.nn.functional.gelu(torch.tensor(z, dtype=torch.float64)) * out_weight[k, n]
                n = 2 * n + 2 if z > 0 else 2 * n + 1
    return out


def masked_paths(x, in_weight, in_bias):
    """Nodes chosen from the DENSE logits (all nodes computed by one matmul), to compare decisions across paths."""
    trees, nodes, hidden = in_weight.shape
    depth = int(math.log2(nodes + 1)) - 1
    logits = (x @ in_weight.reshape(-1, hidden).t() + in_bias.reshape(-1)).view(-1, trees, nodes)
    node = torch.zeros(x.shape[0], trees, 1, dtype=torch.long)
    visited, chosen = [node], [logits.gather(2, node)]
    for _ in range(depth):
        node = 2 * node + 1 + (chosen[-1] > 0).long()
        visited.append(node)
        chosen.append(logits.gather(2, node))
    return torch.cat(visited, -1), torch.cat(chosen, -1)


def assert_same_decisions(x, layer, margin=1e-4):
    """Conditional and masked computations visit the same nodes; tokens with a logit within rounding of 0 are the
    only ones allowed to differ, and they must be rare."""
    nodes_cond, logits_cond = fff_paths_torch(x, layer.in_weight, layer.in_bias)
    nodes_dense, _ = masked_paths(x, layer.in_weight, layer.in_bias)
    ambiguous = (logits_cond.abs() < margin).flatten(1).any(1)
    assert int(ambiguous.sum()) <= max(1, ambiguous.numel() // 20)
    assert torch.equal(nodes_cond[~ambiguous], nodes_dense[~ambiguous])
    return ambiguous


def make_layer(hidden, depth, trees, seed=0):
    torch.manual_seed(seed)
    layer = FastFeedForward(hidden, depth, trees, kernel="torch").eval()
    with torch.no_grad():  # spread the biases so that both children are taken often
        layer.in_bias.normal_(0, 0.5)
    return layer


@pytest.mark.parametrize(
    "trees,depth,hidden", [(k, d, h) for k, d in itertools.product((1, 2, 4), (0, 1, 3, 7, 11)) for h in (37,)]
    + [(2, 3, 50), (1, 5, 90), (4, 2, 13)],
)
@pytest.mark.parametrize("shape", [(1,), (0,), (3, 7), (2, 1, 5)])
def test_conditional_equals_masked(trees, depth, hidden, shape):
    layer = make_layer(hidden, depth, trees, seed=hash((trees, depth, hidden)) % 1000)
    x = torch.randn(*shape, hidden)
    with torch.no_grad():
        layer.inference = "conditional"
        conditional = layer(x)
        layer.inference = "dense"
        dense = layer(x)
    assert conditional.shape == x.shape
    flat = x.reshape(-1, hidden)
    ambiguous = assert_same_decisions(flat, layer)
    keep = ~ambiguous
    torch.testing.assert_close(
        conditional.reshape(-1, hidden)[keep], dense.reshape(-1, hidden)[keep], rtol=1e-5, atol=1e-5
    )


def test_exactly_zero_logits_go_left():
    hidden, depth = 8, 4
    layer = make_layer(hidden, depth, 2)
    with torch.no_grad():
        layer.in_bias.zero_()
    x = torch.zeros(3, hidden)  # every logit is exactly 0.0 on both paths
    nodes, logits = fff_paths_torch(x, layer.in_weight, layer.in_bias)
    assert torch.all(logits == 0)
    leftmost = torch.tensor([2**level - 1 for level in range(depth + 1)])
    assert torch.equal(nodes, leftmost.expand(3, 2, depth + 1))
    dense_nodes, _ = masked_paths(x, layer.in_weight, layer.in_bias)
    assert torch.equal(dense_nodes, nodes)
    # a node whose logit is exactly zero from a real input: zero its input row and bias
    x = torch.randn(5, hidden)
    with torch.no_grad():
        layer.in_weight[:, 0].zero_()
    nodes, logits = fff_paths_torch(x, layer.in_weight, layer.in_bias)
    assert torch.all(logits[:, :, 0] == 0) and torch.all(nodes[:, :, 1] == 1)
    with torch.no_grad():
        torch.testing.assert_close(
            fff_conditional_torch(x, layer.in_weight, layer.in_bias, layer.out_weight),
            fff_masked(x, layer.in_weight, layer.in_bias, layer.out_weight),
            rtol=1e-5, atol=1e-6,
        )
        torch.testing.assert_close(
            fff_conditional_torch(x, layer.in_weight, layer.in_bias, layer.out_weight),
            reference_loop(x, layer.in_weight, layer.in_bias, layer.out_weight).float(),
            rtol=1e-5, atol=1e-6,
        )


@pytest.mark.parametrize("trees,depth,hidden", [(1, 0, 5), (1, 3, 11), (3, 4, 9), (2, 6, 16)])
def test_layer_matches_independent_loop(trees, depth, hidden):
    layer = make_layer(hidden, depth, trees, seed=depth)
    x = torch.randn(9, hidden)
    expected = reference_loop(x, layer.in_weight, layer.in_bias, layer.out_weight).float()
    with torch.no_grad():
        for inference in ("conditional", "dense"):
            layer.inference = inference
            torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    layer.train()
    torch.testing.assert_close(layer(x).detach(), expected, rtol=1e-5, atol=1e-5)


def test_training_gradients_reach_exactly_the_visited_nodes():
    hidden, depth, trees = 12, 4, 2
    layer = make_layer(hidden, depth, trees).train()
    x = torch.randn(6, hidden, requires_grad=True)
    layer(x).square().sum().backward()
    nodes, _ = fff_paths_torch(x.detach(), layer.in_weight, layer.in_bias)
    visited = torch.zeros(trees, layer.num_nodes, dtype=torch.bool)
    for k in range(trees):
        visited[k, nodes[:, k].flatten()] = True
    for grad in (layer.in_weight.grad, layer.out_weight.grad):
        touched = grad.abs().sum(-1) > 0
        assert torch.equal(touched, visited)
    assert torch.equal(layer.in_bias.grad != 0, visited)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_eval_mode_with_autograd_is_conditional_and_differentiable():
    layer = make_layer(10, 3, 1)
    x = torch.randn(4, 10, requires_grad=True)
    out = layer(x)  # eval mode, grad enabled: the differentiable pure-PyTorch walk
    out.sum().backward()
    expected = reference_loop(x.detach(), layer.in_weight, layer.in_bias, layer.out_weight).float()
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-5)
    assert x.grad is not None


def test_default_is_conditional_auto_and_bad_arguments():
    layer = FastFeedForward(16, 3)
    assert (layer.inference, layer.kernel, layer.trees, layer.num_nodes) == ("conditional", "auto", 1, 15)
    for kwargs, message in [
        (dict(hidden_size=16, depth=-1), "depth"),
        (dict(hidden_size=16, depth=40), "depth"),
        (dict(hidden_size=16, depth=2, trees=0), "trees"),
        (dict(hidden_size=0, depth=2), "hidden_size"),
        (dict(hidden_size=16, depth=2, inference="sparse"), "fff_inference"),
        (dict(hidden_size=16, depth=2, kernel="cuda"), "fff_kernel"),
    ]:
        with pytest.raises(ValueError, match=message):
            FastFeedForward(**kwargs)
    with pytest.raises(ValueError, match="last dimension 16"):
        layer.eval()(torch.randn(2, 15))
    with pytest.raises(ValueError, match="fff_kernel"):
        fff_conditional(torch.randn(2, 16), layer.in_weight, layer.in_bias, layer.out_weight, kernel="gpu")


def test_auto_kernel_never_falls_back_to_dense(monkeypatch):
    from modeling_ultrafastbert import fast_feedforward

    layer = make_layer(16, 5, 1)
    layer.kernel = "auto"

    def forbidden(*args, **kwargs):
        raise AssertionError("the dense masked path must not run in conditional eval mode")

    monkeypatch.setattr(fast_feedforward, "fff_masked", forbidden)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = layer(torch.randn(3, 16))
    assert out.shape == (3, 16)


MEMORY_SCRIPT = """
import resource, sys, torch, warnings
warnings.simplefilter("ignore")
from modeling_ultrafastbert import FastFeedForward
torch.manual_seed(0)
tokens, hidden, depth = 4096, 16, 16
layer = FastFeedForward(hidden, depth, 1, kernel=sys.argv[1]).eval()
x = torch.randn(tokens, hidden)
with torch.no_grad():
    layer(x[:8])  # warm up (kernel build / allocator pools)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    y = layer(x)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


@pytest.mark.parametrize("kernel", ["torch", "auto"])
def test_conditional_memory_stays_far_below_the_masked_floor(kernel):
    # the masked path needs tokens x nodes floats for the logits alone: 4096 x 131071 x 4 B = 2.1 GB (and as much again
    # for activations and mask); the conditional path needs per-level (tokens x trees x hidden) gathers only.
    masked_floor = 4096 * (2**17 - 1) * 4
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, kernel], capture_output=True, text=True, timeout=300, check=True
    )
    peak_growth = int(result.stdout.strip().splitlines()[-1])
    assert peak_growth < masked_floor / 20, f"peak RSS grew by {peak_growth / 2**20:.1f} MiB"


@pytest.mark.parametrize("training,inference,kernel", [
    (True, "conditional", "auto"), (False, "dense", "auto"), (False, "conditional", "torch"),
    (False, "conditional", "auto"),
])
def test_residual_is_added_in_every_mode(training, inference, kernel):
    # the block passes its skip connection to the layer (the GPU kernel adds it while writing its output);
    # every mode must return exactly residual + FFF(x)
    layer = FastFeedForward(24, depth=4, trees=2, inference=inference, kernel=kernel).train(training)
    x, residual = torch.randn(3, 7, 24), torch.randn(3, 7, 24)
    with torch.no_grad():
        plain = layer(x)
        fused = layer(x, residual=residual)
    torch.testing.assert_close(fused, residual + plain, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="residual has shape"):
        layer(x, residual=residual[:, :5])
