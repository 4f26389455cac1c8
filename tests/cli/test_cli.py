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


@pytest.mark.parametrize("command", [["reproduce", "table1"], ["diagnose"], ["classify"], ["symmetry"]])
def test_ste_lists_take_one_syntax_everywhere(command, capsys):
    # space-separated specs are what every command takes; the old comma form is refused with the fix
    with pytest.raises(SystemExit):
        main([*command, "--stes", "relu,clipped_relu"])
    assert "STEs are separated by spaces, not commas: --stes relu clipped_relu" in capsys.readouterr().err
