"""The `semcolor` command tree: version, help, every option documented with its default, one line per bad input."""

import argparse
import importlib
import pkgutil
import subprocess
import sys
from dataclasses import MISSING

import pytest

import semcolor
from semcolor import __version__
from semcolor.cli import COMMANDS, _load, build_parser, main
from semcolor.options import option_specs


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "semcolor.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"semcolor {__version__}"
    out = subprocess.run([sys.executable, "-m", "semcolor.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_of_every_subcommand_gives_each_option_its_meaning_and_default(capsys):
    """Walk the whole tree: every option has help text, and every option with a default shows it in --help."""
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"])
        assert e.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"semcolor {name} {action.dest}: no help text"
            if action.default not in (None, argparse.SUPPRESS) and not action.required:
                shown = " ".join(f"(default: {action.default})".split())
                assert shown in text, f"semcolor {name} --help does not show the default of {action.dest}"


def test_each_option_is_declared_once_in_its_config():
    """The parser's options are exactly the fields the commands' config classes declare, with their defaults."""
    parser = build_parser()
    subs = _subparsers(parser)
    for name, command in COMMANDS.items():
        refs = list(command.options) + (["semcolor.ray_env:RayOptions"] if command.ray else [])
        specs = [s for ref in refs for s in option_specs(_load(ref))]
        declared = {s.dest: s for s in specs}
        dests = [a.dest for a in subs[name]._actions if not isinstance(a, argparse._HelpAction)]
        assert len(dests) == len(set(dests)) == len(specs), f"{name}: two options share a destination"
        actions = {a.dest: a for a in subs[name]._actions}
        assert set(dests) == set(declared), name
        for dest, spec in declared.items():
            if spec.default is not MISSING:
                assert actions[dest].default == spec.default, (name, dest)


def test_every_public_module_imports_by_its_path():
    names = [m.name for m in pkgutil.walk_packages(semcolor.__path__, "semcolor.")]
    for package in ("core", "model", "data", "train", "bulk", "serve", "demo", "evaluation", "benchmarks"):
        assert f"semcolor.{package}" in names
    for name in names:
        importlib.import_module(name)
    assert callable(importlib.import_module("semcolor.serve").app)  # `semcolor.serve:app` keeps working


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bad_choice_is_explained(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--arch", "vgg"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err


def test_bad_input_is_one_line_that_names_it(tmp_path, capsys):
    missing = tmp_path / "no-such-checkpoint"
    assert main(["colorize", str(tmp_path), str(tmp_path / "out"), "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "config.json" in err
    assert main(["colorize", "a", "b", "--checkpoint", "c", "--actors", "3:1"]) == 2
    assert "MIN:MAX" in capsys.readouterr().err


def test_bench_colorize_on_cuda_without_a_gpu_is_one_line_before_any_work(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda would run the benchmark")
    assert main(["bench", "colorize", "--device", "cuda", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--device cuda" in err and "CUDA" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written


def test_a_checkout_in_the_working_directory_is_detected_as_shadowing(tmp_path, monkeypatch):
    """Ray puts the driver's working directory first on workers' paths; a `semcolor` folder there that is not the
    package (a checkout named semcolor) is what init_ray guards against (tests/test_serve.py runs the real case)."""
    from semcolor.ray_env import _cwd_shadows_package, _package_root

    (tmp_path / "semcolor").symlink_to(_package_root(), target_is_directory=True)  # the checkout, not the package
    monkeypatch.chdir(tmp_path)
    assert _cwd_shadows_package()
    monkeypatch.chdir(_package_root())  # the checkout itself: its semcolor/ is the package
    assert not _cwd_shadows_package()


def test_local_paths_are_refused_on_a_cluster_of_several_nodes(monkeypatch):
    """Each node would read and write its own disk: refused with the paths named, unless --shared-path."""
    from semcolor import ray_env

    paths = {"SRC": "s3://bucket/scans", "DST": "/data/out", "--checkpoint": "file:///models/m", "--manifest": None}
    monkeypatch.setattr(ray_env, "alive_nodes", lambda: 3)
    with pytest.raises(ValueError) as err:
        ray_env.require_shared_paths(paths, shared_path=False)
    message = str(err.value)
    assert "DST '/data/out'" in message and "--checkpoint 'file:///models/m'" in message
    assert "SRC" not in message and "3 nodes" in message and "--shared-path" in message
    ray_env.require_shared_paths(paths, shared_path=True)  # the user says every node mounts them
    ray_env.require_shared_paths({"SRC": "s3://b/in", "DST": "s3://b/out"}, shared_path=False)  # object storage
    monkeypatch.setattr(ray_env, "alive_nodes", lambda: 1)
    ray_env.require_shared_paths(paths, shared_path=False)  # one node: its disk is the cluster's


def test_train_on_a_multi_node_cluster_refuses_local_run_storage_in_one_line(monkeypatch, capsys):
    from semcolor import ray_env
    from semcolor.train import driver

    monkeypatch.setattr(driver, "init_ray", lambda address, num_cpus: False)
    monkeypatch.setattr(ray_env, "alive_nodes", lambda: 2)
    monkeypatch.setattr(driver, "fit", lambda config: pytest.fail("must not train"))
    assert main(["train", "--storage", "runs", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--storage 'runs'" in err and "2 nodes" in err and "--shared-path" in err
