"""The package root: every public name resolves, and importing it (or asking the command line for its version)
loads neither torch nor scipy; they come with the first name that needs them (PEP 562)."""

import importlib
import json
import subprocess
import sys

import stelab


def test_every_public_name_resolves_to_its_module():
    assert set(stelab.__all__) == set(stelab._EXPORTS)
    for name in stelab.__all__:
        module = stelab._EXPORTS[name]
        if module is None:  # a module itself
            assert getattr(stelab, name) is importlib.import_module(f"stelab.{name}")
        else:
            assert getattr(stelab, name) is getattr(importlib.import_module(f"stelab{module}"), name)
    assert set(stelab.__all__) <= set(dir(stelab))


def test_an_unknown_name_is_an_attribute_error():
    try:
        stelab.QuantRelu  # noqa: B018
    except AttributeError as err:
        assert "QuantRelu" in str(err)
    else:
        raise AssertionError("no AttributeError")


def _loaded(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in ('torch', 'scipy') if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_stelab_the_version_and_the_help_load_no_torch():
    assert _loaded("import stelab") == []
    assert _loaded("import sys\nfrom stelab.cli import main\nassert main(['--version']) == 0") == []
    assert _loaded("from stelab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass") == []
    assert _loaded("import stelab\nstelab.QuantReLU") == ["torch"]  # and no scipy until a resolution is computed


def test_objects_pickled_under_the_old_module_names_still_load():
    """Before the folders became the layers, QuantReLU lived in stelab.modules, the STE registry in stelab.ste (a
    module), the weights' LSQ in stelab.weights.lsq: pickles name those modules, and they still load, as the same
    classes."""
    import pickle

    import torch

    from stelab.activations.modules import QuantReLU

    layer = stelab.QuantReLU(bits=2, ste="leaky_relu(slope=0.2)")
    data = pickle.dumps(layer, protocol=2)
    assert b"stelab.activations.modules\nQuantReLU" in data and b"stelab.ste.registry\n_get_with" in data
    old = data.replace(b"stelab.activations.modules\n", b"stelab.modules\n").replace(
        b"stelab.ste.registry\n_get_with", b"stelab.ste\n_get_with")
    loaded = pickle.loads(old)
    assert isinstance(loaded, QuantReLU) and loaded.ste.label == "leaky_relu(slope=0.2)"
    x = torch.randn(50)
    assert torch.equal(loaded(x), layer(x))
