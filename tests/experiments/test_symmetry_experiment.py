"""The ``stelab symmetry`` experiment's configuration: bad settings fail at once, with the valid choices."""

from __future__ import annotations

import pytest

from stelab.experiments.symmetry import SymmetryConfig


@pytest.mark.parametrize("fields, match", [
    ({"stes": ("nope",)}, "relu"),
    ({"lr": -1.0}, "lr"),
    ({"tilt": 1.0}, "tilt"),
    ({"samples": 10}, "samples"),
])
def test_bad_settings_raise_clear_errors(fields, match):
    with pytest.raises(ValueError, match=match):
        SymmetryConfig(**fields)


def test_default_stes_are_every_registered_ste():
    from stelab import ste

    assert SymmetryConfig().ste_names() == ste.names()
    assert SymmetryConfig(stes=("relu",)).ste_names() == ["relu"]
