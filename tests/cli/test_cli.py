import pytest

from stelab.cli import main


def test_info_lists_registered_stes(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("identity", "relu", "clipped_relu", "staircase", "0.6508"):
        assert name in out


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit) as err:
        main(["no-such-command"])
    assert err.value.code == 2
