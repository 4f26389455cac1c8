"""``scripts/weight_growth.py`` (REPRODUCTION.md's runaway-scale table): it finds block outputs far past the ends of
the staircase exactly when BN2's scale is large, and only there."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from stelab import QuantConfig, models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("weight_growth", ROOT / "scripts" / "weight_growth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _far(script, scale: float) -> dict[str, float]:
    torch.manual_seed(0)
    model = models.build("resnet20", QuantConfig(bits=2, ste="identity"), num_classes=10).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bn2.weight"):
                p.fill_(scale)
        seen = script.quantizer_inputs(model, torch.randn(16, 3, 32, 32))
    return {g: float((torch.cat(v) > 10).float().mean()) for g, v in seen.items()}


def test_block_outputs_are_far_only_with_a_large_bn2_scale(script) -> None:
    normal, runaway = _far(script, 1.0), _far(script, 1e6)
    assert normal["block outputs"] < 0.01 and normal["standardised"] < 0.01
    # BN2's output is standardised times the scale: with a scale of 1e6 about all of it is more than 10 L alpha from 0
    assert runaway["block outputs"] > 0.9
    assert runaway["standardised"] < 0.01  # the affine-free BNs before them do not see the scale


def test_hooks_are_removed(script) -> None:
    model = models.build("resnet20", QuantConfig(bits=2), num_classes=10).train()
    script.quantizer_inputs(model, torch.randn(2, 3, 32, 32))
    assert all(not m._forward_hooks for m in model.modules())


def test_table_leaves_a_float_run_blank(script) -> None:
    text = script.table([{"run": "float", "bits": None, "max_bn_gamma": 1.5},
                         {"run": "q", "bits": 2, "max_bn_gamma": 2e6, "block outputs: far": 0.46}])
    header, rule, float_row, q_row = text.splitlines()
    assert header == "| run | bits | max_bn_gamma | block outputs: far |" and rule == "|---|---|---|---|"
    assert float_row == "| float | None | 1.5 |  |" and q_row == "| q | 2 | 2e+06 | 0.46 |"
