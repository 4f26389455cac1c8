"""stelab.pack: quantized outputs saved for backward as packed codes, restored bit for bit.

Checked against independent computations: the bit layout against numpy's ``packbits`` of the codes' bit stream; the
restored levels against the quantizer's own output (``torch.equal``, so every bit); a training step (gradients and
weights after SGD) against the same step without packing, at every bit width, both forwards, both layouts, fixed and
learned resolutions, float32 and bfloat16 autocast.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stelab
from stelab.pack import PackSaved, PackSavedWarning, codes_of, find, pack_codes, packed_nbytes, unpack_codes
from stelab.pack.codes import round_is_exact


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [1, 7, 8, 29, 1000])
def test_bit_layout_is_the_little_endian_bit_stream_of_the_codes(bits, n):
    codes = torch.randint(0, 2**bits, (n,), generator=torch.Generator().manual_seed(bits * 100 + n),
                          dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    stream = ((codes.numpy()[:, None] >> np.arange(bits)) & 1).astype(np.uint8).ravel()  # code i at bits i*b..
    expected = np.packbits(stream, bitorder="little")
    assert packed.numel() == packed_nbytes(n, bits) and packed.dtype == torch.uint8
    np.testing.assert_array_equal(packed.numpy()[:len(expected)], expected)
    assert not packed.numpy()[len(expected):].any()  # padding of the last group is zero
    assert torch.equal(unpack_codes(packed, bits, n), codes)


def test_two_bit_codes_take_a_quarter_byte():
    assert packed_nbytes(1000, 2) == 250 and packed_nbytes(1000, 3) == 375 and packed_nbytes(1001, 1) == 126


@pytest.mark.parametrize("forward", ["staircase", "round", "sign"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_codes_restore_every_level_of_the_quantizer_bit_for_bit(forward, dtype):
    """The levels the quantizer itself writes (inputs spread over every step), at every width and several alphas."""
    from stelab.pack.codes import level_values
    from stelab.pack.saved import Grid, Packed

    for bits in ([1] if forward == "sign" else range(1, 9)):
        for alpha in (0.6511, 0.0123, 3.7, 1.0 / 3.0):
            levels = 2**bits - 1
            x = torch.linspace(-1.0, (levels + 2) * alpha, 4 * levels + 64, dtype=torch.float64).to(dtype)
            y = stelab.quantize(x, bits=bits, alpha=alpha, forward=forward, check_nan=False)
            a = torch.tensor(alpha, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
            mode = stelab.kernels.MODES[forward]
            packed = Packed(y, Grid(mode, levels, a, dtype), (dtype,))
            assert torch.equal(packed.restore(), y), (bits, alpha)
            assert packed.nbytes == packed_nbytes(y.numel(), bits)
            # and cast once more (autocast's bf16 copy of a float32 output), as rnd_bf16(rnd_fp32(k a))
            if dtype == torch.float32:
                for to in (torch.bfloat16, torch.float16):
                    cast = y.to(to)
                    restored = Packed(cast, Grid(mode, levels, a, dtype), (dtype, to)).restore()
                    assert torch.equal(restored, cast), (bits, alpha, to)
            table = level_values(torch.arange(levels + 1, dtype=torch.uint8), a, mode, dtype)
            assert torch.equal(level_values(codes_of(table, a, levels, mode, (dtype,)), a, mode, dtype), table)


@pytest.mark.parametrize("forward", ["staircase", "round", "sign"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_the_cpp_kernel_and_the_torch_path_give_the_same_bytes(forward, dtype, monkeypatch):
    """pack_levels/restore_levels and pack_state/restore_state: the one-pass C++ kernel against the torch ops, on
    the quantizer's own levels (odd lengths: the last partial group), and the restore equals the saved tensor."""
    from stelab.kernels import cpu
    from stelab.pack import codes

    if not cpu.available():
        pytest.skip("no C++ compiler: only the torch path exists here")
    mode = stelab.kernels.MODES[forward]
    for bits in ([1] if forward == "sign" else range(1, 9)):
        levels, alpha = 2**bits - 1, 0.37
        x = torch.linspace(-1.0, (levels + 2) * alpha, 6 * levels + 61, dtype=torch.float64).to(dtype)
        y = stelab.quantize(x, bits=bits, alpha=alpha, forward=forward, check_nan=False)
        a = torch.tensor(alpha, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        state = torch.randint(0, 2**bits, (y.numel(),), dtype=torch.uint8)
        fast = (codes.pack_levels(y, a, levels, mode, (dtype,), bits), codes.pack_state(state, bits))
        with monkeypatch.context() as m:
            m.setattr(cpu, "available", lambda: False)
            slow = (codes.pack_levels(y, a, levels, mode, (dtype,), bits), codes.pack_state(state, bits))
            assert torch.equal(codes.restore_levels(slow[0], y.numel(), a, mode, (dtype,), bits), y)
            assert torch.equal(codes.restore_state(slow[1], bits, y.numel()), state)
        assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1]), bits
        assert torch.equal(codes.restore_levels(fast[0], y.numel(), a, mode, (dtype,), bits), y), bits
        assert torch.equal(codes.restore_state(fast[1], bits, y.numel()), state), bits


def test_rounding_path_bound():
    """bf16 levels recover by rounding up to 7 bits (L * 2^-8 < 1/2), not at 8; float32 always; float16 never."""
    assert round_is_exact(127, (torch.bfloat16,)) and not round_is_exact(255, (torch.bfloat16,))
    assert round_is_exact(255, (torch.float32,)) and round_is_exact(127, (torch.float32, torch.bfloat16))
    assert not round_is_exact(1, (torch.float16,))


class Net(nn.Module):
    """Every kind of consumer of a quantized output: conv, max pool, a residual add of two quantized outputs,
    linear after a flatten, and (under autocast) a float32 output cast to bfloat16 by the conv."""

    def __init__(self, config: stelab.QuantConfig) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.5))
        self.act0 = stelab.QuantReLU(config=config)  # sees gain * x: float32 even under autocast
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = stelab.QuantReLU(config=config)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.act2 = stelab.QuantReLU(config=config)
        self.act3 = stelab.QuantReLU(config=config)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y0 = self.act0(x * self.gain)
        y1 = F.max_pool2d(self.act1(self.bn1(self.conv1(y0))), 2)
        y2 = self.act2(self.bn2(self.conv2(y1)))
        return self.fc(self.act3(y1 + y2).flatten(1))


def train_step(config, channels_last, precision, pack, recompute=False, bias=False):
    torch.manual_seed(0)
    model = Net(config)
    if bias:  # conv1 with a bias that learns, conv2 with one that does not (not recomputable: passed through)
        model.conv1.bias = nn.Parameter(torch.randn(8))
        model.conv2.bias = nn.Parameter(torch.randn(8), requires_grad=False)
    x, target = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    packer = PackSaved(model, recompute=recompute) if pack else None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        with packer if pack else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            loss = F.cross_entropy(model(x), target)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    opt.step()
    return grads, model.state_dict(), packer


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("forward", ["staircase", "round"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("learn_alpha", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_training_step_is_bit_identical(bits, forward, channels_last, learn_alpha, recompute):
    config = stelab.QuantConfig(bits=bits, forward=forward, ste="clipped_relu", learn_alpha=learn_alpha,
                                check_nan=False)
    for precision in ("fp32", "bf16") if bits in (2, 8) else ("fp32",):
        grads, weights, _ = train_step(config, channels_last, precision, pack=False)
        packed_grads, packed_weights, packer = train_step(config, channels_last, precision, True, recompute)
        assert_identical(grads, packed_grads)
        assert_identical(weights, packed_weights)
        # saved and packed: act0 by conv1, act1 by the max pool, its pool by conv2, act3 by fc (not y1 + y2)
        assert packer.last.packed == 4, precision
        # the four STE states: a fixed resolution's (clipped relu: a mask, 1 bit), or a learned one's (the mean rule:
        # the regions of 0 and top, 2 bits)
        assert packer.last.states == 4
        # conv1's and conv2's outputs (saved by the BNs) and the max pool's indices
        assert packer.last.recomputed == (3 if recompute else 0)
        assert packer.last.saved_bytes < packer.last.unpacked_bytes


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_recomputing_a_convolution_with_a_bias_is_bit_identical(precision, channels_last):
    """A learned bias is found through the graph (under autocast: through its cast); one that needs no gradient is
    not reachable, so that convolution's output is kept as it is."""
    config = stelab.QuantConfig(bits=2, ste="relu", check_nan=False)
    grads, weights, _ = train_step(config, channels_last, precision, pack=False, bias=True)
    packed_grads, packed_weights, packer = train_step(config, channels_last, precision, True, True, bias=True)
    assert_identical(grads, packed_grads)
    assert_identical(weights, packed_weights)
    assert packer.last.recomputed == 2  # conv1 and the max pool's indices


def test_a_recompute_limit_recomputes_only_the_cheap_convolutions():
    """conv1 costs 3 * 9 = 27 multiply-adds per output element, conv2 8 * 9 = 72: a limit of 30 takes conv1 only."""
    from stelab.pack.recompute import cost_per_element

    config = stelab.QuantConfig(bits=2, ste="clipped_relu", check_nan=False)
    conv = nn.Conv2d(8, 6, 3, groups=2)
    assert cost_per_element(conv(torch.randn(1, 8, 5, 5)).grad_fn) == 4 * 9
    tconv = nn.ConvTranspose2d(8, 6, 3, groups=2)
    assert cost_per_element(tconv(torch.randn(1, 8, 5, 5)).grad_fn) == 4 * 9
    grads, weights, _ = train_step(config, True, "fp32", pack=False)
    torch.manual_seed(0)
    model = Net(config).to(memory_format=torch.channels_last)
    x, target = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last), torch.randint(0, 5, (4,))
    packer = PackSaved(model, recompute=True, recompute_limit=30)
    with packer:
        loss = F.cross_entropy(model(x), target)
    loss.backward()
    assert packer.last.recomputed == 2  # conv1 and the max pool's indices
    assert_identical(grads, {n: p.grad for n, p in model.named_parameters()})
    for bad in (0, -3, 2.5, True, "300"):
        with pytest.raises(ValueError, match="recompute_limit must be a positive int"):
            PackSaved(model, recompute=True, recompute_limit=bad)


def test_a_region_state_packs_in_its_bits():
    """hardtanh on the staircase has a mask; a three-valued mu' keeps the region index: 2 bits."""
    stelab.ste.register("three_valued_test", piecewise=stelab.ste.Piecewise(breaks=(0.0, 1.0), values=(0.0, 1.0, 0.25)),
                        overwrite=True)
    try:
        config = stelab.QuantConfig(bits=2, ste="three_valued_test", check_nan=False)
        grads, weights, _ = train_step(config, True, "fp32", pack=False)
        packed_grads, packed_weights, packer = train_step(config, True, "fp32", True, True)
        assert_identical(grads, packed_grads)
        assert_identical(weights, packed_weights)
        assert packer.last.states == 4
    finally:
        stelab.ste.unregister("three_valued_test")


def test_sign_forward_and_a_smooth_ste_are_bit_identical():
    for config in (stelab.QuantConfig(bits=1, forward="sign", ste="hardtanh", alpha=1.0, check_nan=False),
                   stelab.QuantConfig(bits=3, ste="log_tailed_relu", check_nan=False)):
        grads, weights, _ = train_step(config, True, "fp32", pack=False)
        packed_grads, packed_weights, packer = train_step(config, True, "fp32", pack=True)
        assert_identical(grads, packed_grads) or assert_identical(weights, packed_weights)
        assert packer.last.packed == 4


def test_what_is_not_a_quantized_output_passes_through_untouched():
    q = stelab.QuantReLU(bits=2, check_nan=False)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    packer = PackSaved()
    with packer:
        y = q(x)
        assert find(y) is not None and find(y[:, :1].flatten()) is not None  # the output and its views
        others = [torch.randn(5), x * 2, y + y, F.avg_pool2d(y, 2), F.pad(y, (1, 1)), y.detach()]
        for t in others:
            assert find(t) is None and packer._pack(t) is t
        z = q(x)
        z.mul_(2)  # changed in place: its node is replaced, the values are no longer levels
        assert find(z) is None
        with torch.no_grad():
            w = q(x)  # no graph: marked on the tensor, with its version
            assert find(w) is not None
            w.add_(1)
            assert find(w) is None


def test_outside_the_block_nothing_is_marked_or_packed():
    q = stelab.QuantReLU(bits=2, check_nan=False)
    y = q(torch.randn(4, requires_grad=True))
    assert find(y) is None


def test_a_model_without_quantized_activations_is_said_once():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        packer = PackSaved(model)
        for _ in range(3):
            with packer:
                model(torch.randn(2, 4)).sum().backward()
    messages = [str(w.message) for w in caught if issubclass(w.category, PackSavedWarning)]
    assert len(messages) == 1 and "no quantized activation" in messages[0]
    with warnings.catch_warnings(record=True) as caught:  # without a model: said after the first forward, once
        warnings.simplefilter("always")
        packer = PackSaved()
        for _ in range(3):
            with packer:
                model(torch.randn(2, 4)).sum().backward()
    assert sum(issubclass(w.category, PackSavedWarning) for w in caught) == 1
    assert packer.total.forwards == 3 and packer.total.packed == 0 and packer.total.ratio == 1.0


def test_compiled_models_and_reentry_are_refused():
    model = nn.Sequential(stelab.QuantReLU(bits=2))
    with pytest.raises(ValueError, match="torch.compile"):
        PackSaved(torch.compile(model))
    packer = PackSaved(model)
    with packer, pytest.raises(RuntimeError, match="re-entrant"):
        with packer:
            pass


def test_stats_count_what_autograd_keeps():
    """One 2-bit output of 4096 elements saved by a linear layer: 1024 bytes instead of 16384, and its 1-byte STE
    state (clipped relu: a mask) in 512 bytes instead of 4096."""
    q, fc = stelab.QuantReLU(bits=2, check_nan=False), nn.Linear(64, 1, bias=False)
    x = torch.randn(64, 64, requires_grad=True)
    packer = PackSaved()
    with packer:
        out = fc(q(x))
    out.sum().backward()
    stats = packer.last
    assert stats.packed == 1 and stats.states == 1
    assert stats.unpacked_bytes - stats.saved_bytes == (64 * 64 * 4 - 64 * 64 // 4) + (64 * 64 - 64 * 64 // 8)
