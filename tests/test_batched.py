"""The flat buffer behind DNW, STR, DST and CS: latents adopted as views in memory order,
updates through the Parameters visible to the batch, plain weights of their own after
removal, and the latents' gradients handed over once per backward."""

import torch
from torch import nn

from benchsuite.pruning.batched import FlatLayout, channels_last


def test_adopted_parameters_are_views_of_one_buffer_in_memory_order() -> None:
    conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    linear = nn.Linear(5, 2)
    params = [conv.weight, linear.weight]
    values = [p.detach().clone() for p in params]
    layout = FlatLayout(params)
    layout.adopt(params)
    assert params[0] is conv.weight and params[1] is linear.weight  # the same Parameters
    assert layout.adopted(params) and layout.buffer is not None
    assert channels_last(conv.weight)  # the layout the convolution runs with is kept
    for p, v in zip(params, values):
        assert torch.equal(p, v)
    # conv's (O, H, W, I) block first, then linear's rows
    expected = torch.cat([values[0].permute(0, 2, 3, 1).reshape(-1), values[1].reshape(-1)])
    assert torch.equal(layout.buffer, expected)
    for p in params:
        p.grad = torch.ones_like(p)
    torch.optim.SGD(params, lr=0.5).step()  # in-place updates land in the buffer
    assert torch.equal(layout.buffer, expected - 0.5)
    assert torch.equal(layout.flat(params), layout.buffer)
    assert [r.shape for r in layout.rows(layout.buffer)] == [(4, 27), (2, 5)]
    assert layout.sums(torch.ones(layout.numel)).tolist() == [108.0, 10.0]


def test_tensors_that_were_not_adopted_are_copied() -> None:
    a, b = torch.randn(3, 2), torch.randn(4)
    layout = FlatLayout([a, b])
    flat = layout.flat([a, b])
    assert torch.equal(flat, torch.cat([a.flatten(), b]))
    flat.zero_()
    assert a.abs().sum() > 0  # a copy, not the tensors' memory
    out = layout.unflatten(torch.arange(10.0))
    assert out[0].tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert out[1].tolist() == [6.0, 7.0, 8.0, 9.0]


def test_constants_are_made_once_per_dtype_and_device() -> None:
    layout = FlatLayout([torch.zeros(2, 3)])
    sizes = layout.constant(layout.sizes, torch.int64, torch.device("cpu"))
    assert sizes.tolist() == [6] and sizes.dtype == torch.int64
    assert layout.constant(layout.sizes, torch.int64, torch.device("cpu")) is sizes
    assert layout.constant(layout.sizes, torch.float32, torch.device("cpu")) is not sizes


def test_latent_gradients_across_zero_grad_forms_and_replaced_leaf_gradients() -> None:
    """The loop's contract: after_backward gives the latents this backward's gradient once,
    whatever zero_grad did before it, and nothing when no backward ran."""
    from benchsuite.core.budget import Budget
    from benchsuite.pruning.masks import latent_weight
    from benchsuite_methods.dnw import DNW
    from tests.handmade import hand_state

    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    method, state = hand_state(net, DNW, DNW.Hparams(), 0.0, Budget(1, 10), lr=0.1, wd=0.0)
    x = torch.tensor([[1.0, 2.0, 3.0]])
    expected = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]  # straight through: ∂Σ(Wx)/∂W
    latent = latent_weight(net[0])

    def step() -> list[list[float]]:
        net(x).sum().backward()
        method.on_backward(state)
        return latent.grad.tolist()

    assert step() == expected
    state.optimizer.zero_grad(set_to_none=False)  # zeroes last step's gradient in place
    assert step() == expected  # not doubled
    state.optimizer.zero_grad(set_to_none=True)
    net[0].weight.grad = None  # the leaf's gradient dropped: autograd makes a new one
    assert step() == expected
    state.optimizer.zero_grad(set_to_none=True)
    method.on_backward(state)  # no backward since: nothing to add
    assert latent.grad is None


def test_a_prepared_model_moved_to_another_dtype_computes_there() -> None:
    """A move replaces the latents' storage: the batch adopts them again, its buffers follow."""
    from benchsuite.core.budget import Budget
    from benchsuite_methods.str import STR
    from tests.handmade import hand_state
    from tests.oracles import soft_threshold_reference

    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    method, state = hand_state(net, STR, STR.Hparams(), 0.5, Budget(1, 10), lr=0.1, wd=0.0)
    net.double()
    s = method.thresholds(net)
    out = net(torch.ones(1, 4, dtype=torch.float64))
    assert out.dtype == torch.float64
    for i, layer in enumerate(net):
        assert layer.weight.dtype == torch.float64
        expected = soft_threshold_reference(
            layer.parametrizations.weight.original.detach(), torch.sigmoid(s.detach()[i])
        )
        assert torch.equal(layer.weight.detach(), expected)
    out.sum().backward()
    method.on_backward(state)
    assert layer.parametrizations.weight.original.grad.dtype == torch.float64


def test_logit_gradients_from_a_kept_buffer_are_not_double_counted() -> None:
    """CS hands out its logits' gradients as views of a buffer it rewrites every step."""
    from benchsuite.core.budget import Budget
    from benchsuite_methods.cs import CS
    from tests.handmade import hand_state

    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    method, state = hand_state(net, CS, CS.Hparams(), 0.5, Budget(1, 10), lr=0.1, wd=0.0)
    logits = net[0].parametrizations.weight[0].logits
    x = torch.tensor([[1.0, 2.0, 3.0]])

    def step() -> torch.Tensor:
        net(x).sum().backward()
        method.on_backward(state)
        return logits.grad.clone()

    first = step()
    state.optimizer.zero_grad(set_to_none=False)
    torch.testing.assert_close(step(), first)
