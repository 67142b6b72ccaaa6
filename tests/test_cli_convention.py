"""One command-line convention: the same spelling for the same thing, one-line errors with exit
status 2, and ``--help`` that shows each default once and works without optional packages."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from numpy_vae.__main__ import INSTALLED, PROGRAMS, invoked_name

MODULES = sorted(set(PROGRAMS.values()))
# What each spelling means everywhere it appears; the words after it in --help.
SPELLINGS = {"--hidden": "W1,W2,...", "--latent-dim": "LATENT_DIM", "--batch-size": "BATCH_SIZE"}
FORBIDDEN = ("--latent ", "--batch ", "--hidden HIDDEN [HIDDEN ...]")


def help_text(module: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "numpy_vae", program_of(module), "--help"],
        capture_output=True, text=True, timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def program_of(module: str) -> str:
    return next(k for k, v in PROGRAMS.items() if v == module)


@pytest.mark.parametrize("module", MODULES)
def test_help_shows_each_default_once_and_the_shared_spellings(module):
    text = help_text(module)
    assert "(default: None)" not in text and "(default: (" not in text, text
    assert "default: False" not in text, text
    for line in text.splitlines():
        assert line.count("(default:") <= 1, line
    for bad in FORBIDDEN:
        assert bad not in text, f"{module}: {bad}"
    for flag, metavar in SPELLINGS.items():
        if flag + " " in text:
            assert f"{flag} {metavar}" in text, f"{module}: {flag} is not spelled {metavar}"


def test_every_program_of_scripts_is_a_program_of_the_package():
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    for script in scripts.glob("*.py"):
        module = "train" if script.stem == "train_mnist" else script.stem
        assert module in PROGRAMS.values(), f"python -m numpy_vae does not list {script.name}"
    for expected in ("collapse-study", "summarize-runs"):
        assert expected in PROGRAMS


@pytest.mark.parametrize("module", MODULES)
def test_usage_names_the_program_as_invoked_not_a_script(module):
    """Through python -m numpy_vae the usage line names the program's installed command (or the
    invocation itself), never a script that was not run (issue 24, item 9: train_mnist.py)."""
    text = help_text(module)
    usage = text.splitlines()[0]
    assert usage.startswith(f"usage: {invoked_name(program_of(module))} "), usage
    assert ".py" not in usage, usage


def test_a_bad_flag_through_the_module_names_the_command(capsys):
    from numpy_vae.__main__ import main

    argv0 = sys.argv[0]
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--epochs", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("numpy-vae-train: error: argument --epochs")
    assert sys.argv[0] == argv0  # the caller's own name is given back


def test_summarize_runs_help_is_plain_text():
    text = help_text("summarize_runs")
    assert "``" not in text and ":func:" not in text, text
    assert "markdown table" in text


def test_every_option_of_compare_torch_says_what_it_does():
    from numpy_vae.cli.compare_torch import parser

    for action in parser()._actions:
        assert action.help, f"compare_torch.py {'/'.join(action.option_strings)} has no help"


def test_compare_torch_answers_help_and_refuses_cleanly_without_torch():
    block_torch = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('no torch here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from numpy_vae.cli.compare_torch import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-c", block_torch, *args], capture_output=True, text=True, timeout=120
    )
    helped = run("--help")
    assert helped.returncode == 0 and "--variant" in helped.stdout, helped.stderr
    refused = run("--steps", "2")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "pip install torch" in refused.stderr


@pytest.mark.parametrize(
    "module,argv,message",
    [
        ("compare_torch", ["--steps", "0"], "--steps: must be a positive integer"),
        ("compare_torch", ["--hidden", "400,x"], "comma-separated widths"),
        ("compare_torch", ["--lr", "nan"], "--lr: must be a finite number > 0"),
        ("benchmark", ["--batch-size", "-3"], "--batch-size: must be a positive integer"),
        ("benchmark", ["--hidden", "512 256"], "comma-separated widths"),
        ("benchmark", ["--repeats", "two"], "--repeats: expected a positive integer"),
        ("check_gpu", ["--steps", "0"], "--steps: must be a positive integer"),
        ("gradcheck", ["--batch-size", "0"], "--batch-size: must be a positive integer"),
        ("gradcheck", ["--seed", "-1"], "--seed: must be an integer >= 0"),
        ("gradient_variance", ["--seed", "-1"], "--seed: must be an integer >= 0"),
    ],
)
def test_bad_values_are_one_line_with_status_2(module, argv, message, capsys):
    main = importlib.import_module(f"numpy_vae.cli.{module}").main
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_every_console_script_points_at_a_program():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    targets = dict(line.replace(" ", "").split("=") for line in scripts)
    assert {"numpy-vae", "numpy-vae-train", "numpy-vae-evaluate"} <= set(targets)
    for name, target in targets.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
    # One installed command per program that python -m numpy_vae names it by, and no other.
    commands = {name.removeprefix("numpy-vae-") for name in targets if name != "numpy-vae"}
    assert commands == set(INSTALLED), commands ^ set(INSTALLED)
    for program in INSTALLED:
        target = targets[f"numpy-vae-{program}"]
        assert target == f"numpy_vae.cli.{PROGRAMS[program]}:main", target


@pytest.mark.parametrize("argv0", ["/usr/bin/numpy-vae-train", "app.py"])
def test_neither_a_command_nor_an_import_changes_how_the_blas_threads_wait(argv0):
    """OpenBLAS's default spin, with Adam in one thread, measured fastest in training
    (:mod:`numpy_vae.fast.parallel`): nothing sets ``OPENBLAS_THREAD_TIMEOUT``."""
    code = (
        "import os, sys\n"
        f"sys.argv = [{argv0!r}]\n"
        "os.environ.pop('OPENBLAS_THREAD_TIMEOUT', None)\n"
        "import numpy_vae, numpy_vae.cli.train\n"
        "from numpy_vae.fast.parallel import default_threads\n"
        "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), default_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "None 1", out.stderr
