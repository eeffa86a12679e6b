"""The `semcolor` command tree: version, help, and every subcommand parses."""

import subprocess
import sys

import pytest

from semcolor import __version__
from semcolor.cli import HANDLERS, build_parser, main


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "semcolor.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"semcolor {__version__}"
    out = subprocess.run([sys.executable, "-m", "semcolor.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in HANDLERS:
        assert command in out.stdout


def test_every_subcommand_has_help():
    parser = build_parser()
    for command in HANDLERS:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([command, "--help"])
        assert e.value.code == 0


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bad_choice_is_explained(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--arch", "vgg"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err
