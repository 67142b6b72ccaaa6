"""Every code block of the docs runs: the docs cannot rot.

In each Markdown file of ``docs/``, the ``python`` blocks run in order in one namespace, and each
``$ `` line of a ``console`` block runs as a command (``python`` being this interpreter), all in
a fresh folder. A block that fails, or a command that exits non-zero, fails the test.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of ``text`` as (language, code), in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def commands(code: str) -> list[list[str]]:
    """The ``$ `` lines of a console block as argument lists, ``python`` as this interpreter."""
    argvs = [shlex.split(line[2:]) for line in code.splitlines() if line.startswith("$ ")]
    return [[sys.executable if a[0] == "python" else a[0], *a[1:]] for a in argvs]


def test_the_block_parser_finds_what_the_docs_hold():
    text = "x\n```python\na = 1\n```\n```console\n$ python -m numpy_vae --help\nout\n```\n"
    blocks = code_blocks(text)
    assert blocks == [("python", "a = 1\n"), ("console", "$ python -m numpy_vae --help\nout\n")]
    assert commands(blocks[1][1]) == [[sys.executable, "-m", "numpy_vae", "--help"]]


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_code_block_runs(path, tmp_path, monkeypatch):
    blocks = code_blocks(path.read_text())
    if not blocks:
        pytest.skip(f"{path.name} has no code blocks")
    monkeypatch.chdir(tmp_path)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"}
    namespace: dict = {"__name__": "__docs__"}
    for language, code in blocks:
        if language == "python":
            exec(compile(code, str(path), "exec"), namespace)
        elif language == "console":
            for argv in commands(code):
                done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
                assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout}\n{done.stderr}"
