"""The docs cannot rot: every snippet runs, every command parses, every link resolves.

The pages are ``README.md`` and every Markdown file of ``docs/``. In each page:

- the ``python`` blocks run in order, in one namespace, in a fresh folder; a block preceded by
  a line ``<!-- not run: REASON -->`` is skipped, and the reason must be given;
- each ``$ `` line of a ``console`` block runs as a command (``python`` being this interpreter);
- each ``python scripts/NAME.py ...`` line of any block is parsed by that program's argument
  parser (the flags must exist; values are not converted, so paths need not exist);
- each relative link and image points to a file that exists, and each ``#anchor`` to a heading
  of the page it names, with the same slug on GitHub and in the mkdocs site;
- a link into the code whose text is a backticked name (``[`VAE.backward`](../numpy_vae/model.py)``)
  names something that file defines.

The planted-failure tests at the bottom hold each check to the mistake it exists to catch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [p.relative_to(ROOT).as_posix() for p in PAGES]

FENCE = re.compile(r"^(<!-- not run: (.*?) -->\n)?```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
SCRIPT = re.compile(r"python3? (scripts/\w+\.py)\b")
SHELL_ENDS = {"&&", "||", ";", "|", ">", ">>", "2>", "2>&1", "&"}


class Block:
    """A fenced block: its language, its code, and the reason it is not run (or None)."""

    def __init__(self, language: str, code: str, not_run: str | None) -> None:
        self.language, self.code, self.not_run = language, code, not_run

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Block({self.language!r}, {self.code!r}, {self.not_run!r})"


def code_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, in order."""
    return [Block(m.group(3), m.group(4), m.group(2)) for m in FENCE.finditer(text)]


def links(text: str) -> list[tuple[str, str]]:
    """The links and images of ``text`` as (label, target), outside code, where they are text."""
    text = FENCE.sub("", text)
    spans = [m.span() for m in re.finditer(r"`[^`\n]*`", text)]
    return [
        (m.group(1), m.group(2))
        for m in LINK.finditer(text)
        if not any(start < m.start() < end for start, end in spans)
    ]


def commands(code: str) -> list[list[str]]:
    """The ``$ `` lines of a console block as argument lists, ``python`` as this interpreter."""
    argvs = [shlex.split(line[2:]) for line in code.splitlines() if line.startswith("$ ")]
    return [[sys.executable if a[0] == "python" else a[0], *a[1:]] for a in argvs]


def script_commands(code: str) -> list[tuple[str, list[str]]]:
    """Each ``python scripts/NAME.py ARGS`` in a block, as (script, ARGS), lines joined on ``\\``.

    The arguments end where the shell's do (``&&``, ``|``, ``>``, ...); a ``#`` comment ends
    the line.
    """
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.removeprefix("$ ")
        for m in SCRIPT.finditer(line):
            words = shlex.split(line[m.end() :], comments=True)
            end = next((i for i, w in enumerate(words) if w in SHELL_ENDS), len(words))
            found.append((m.group(1), words[:end]))
    return found


class Parsed(Exception):
    """Raised instead of running a program whose flags have parsed."""


def parse_flags(script: str, args: list[str]) -> None:
    """Parse ``args`` with the program behind ``scripts/NAME.py``; SystemExit if they do not.

    The program's ``main`` runs until its first ``parse_args``, which checks the flags and
    their count without converting values (a path in the docs need not exist here), then stops.
    """
    shim = (ROOT / script).read_text()
    module = re.search(r"^from (numpy_vae\.cli\.\w+) import main", shim, re.MULTILINE).group(1)
    main = importlib.import_module(module).main
    parse_args = argparse.ArgumentParser.parse_args

    def check_only(self, argv=None, namespace=None):
        for action in self._actions:
            action.type, action.choices = None, None
        parse_args(self, argv, namespace)
        raise Parsed

    argparse.ArgumentParser.parse_args = check_only
    try:
        main(args)
    except Parsed:
        return
    finally:
        argparse.ArgumentParser.parse_args = parse_args
    raise AssertionError(f"{script} never parsed its arguments")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, each space a hyphen."""
    text = re.sub(r"[`*_]|\$", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def site_slug(heading: str) -> str:
    """Python-Markdown's (the mkdocs site's) anchor: as GitHub's, but runs of hyphens collapse."""
    text = re.sub(r"[`*_]|\$", "", heading)
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    """The anchors both GitHub and the site give the headings of ``path``."""
    headings = [m.group(2) for m in HEADING.finditer(FENCE.sub("", path.read_text()))]
    return {github_slug(h) for h in headings if github_slug(h) == site_slug(h)}


def defines(path: Path, name: str) -> bool:
    """Whether the Python file ``path`` defines ``name`` (a def, a class or an assignment)."""
    pattern = rf"^\s*(?:def|class)\s+{re.escape(name)}\b|^\s*{re.escape(name)}\s*(?::[^=]*)?="
    return re.search(pattern, path.read_text(), re.MULTILINE) is not None


def link_problems(text: str, page: Path) -> list[str]:
    """What is wrong with the links of ``text``, read as the page ``page``."""
    problems = []
    for label, target in links(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto: and the like: not checked offline
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            problems.append(f"{target}: no such file {path}")
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{target}: {path.name} has no heading with anchor #{anchor}")
        name = re.fullmatch(r"`([\w.]+)(?:\(\))?`", label)
        if name and name.group(1).endswith(".py"):
            name = None  # the file's own name, not a name defined in it
        if name and path.suffix == ".py" and not defines(path, name.group(1).split(".")[-1]):
            problems.append(f"{target}: {path.name} defines no {name.group(1)}")
    return problems


def run_page(path: Path, folder: Path) -> None:
    """Run every python block and console command of the page ``path`` inside ``folder``."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"}
    if (ROOT / "data" / "mnist").is_dir():  # the snippets that load MNIST find the cache
        (folder / "data").mkdir(exist_ok=True)
        (folder / "data" / "mnist").symlink_to(ROOT / "data" / "mnist")
    namespace: dict = {"__name__": "__docs__"}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for block in code_blocks(path.read_text()):
            if block.not_run is not None:
                assert block.not_run.strip(), f"{path.name}: a block not run must say why"
            elif block.language == "python":
                exec(compile(block.code, str(path), "exec"), namespace)
            elif block.language == "console":
                for argv in commands(block.code):
                    done = subprocess.run(
                        argv, capture_output=True, text=True, env=env, timeout=300
                    )
                    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout}\n{done.stderr}"
    finally:
        os.chdir(cwd)


def runnable(path: Path) -> bool:
    """Whether ``path`` has a python or console block to run."""
    return any(b.language in ("python", "console") for b in code_blocks(path.read_text()))


RUNNABLE = [p for p in PAGES if runnable(p)]


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.relative_to(ROOT).as_posix() for p in RUNNABLE])
def test_every_code_block_runs(path, tmp_path):
    run_page(path, tmp_path)


@pytest.mark.parametrize("path", PAGES, ids=IDS)
def test_every_script_command_parses_its_flags(path, capsys):
    found = [c for b in code_blocks(path.read_text()) for c in script_commands(b.code)]
    for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", path.read_text())):
        found += script_commands(span)
    for script, args in found:
        try:
            parse_flags(script, args)
        except SystemExit as exit:
            err = capsys.readouterr().err
            pytest.fail(f"{path.name}: python {script} {shlex.join(args)}: {exit.code}\n{err}")


@pytest.mark.parametrize("path", PAGES, ids=IDS)
def test_every_link_resolves(path):
    assert link_problems(path.read_text(), path) == []


# Phrases that narrate how or when the work was done, rather than say what is true.
HISTORY = re.compile(
    r"\b(this session|an earlier session|earlier session|this request|the issue asked|"
    r"the hour before|previously|we added|we fixed|was fixed|quiet-day|an earlier run)\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("path", PAGES, ids=IDS)
def test_the_docs_say_what_is_true_not_how_it_was_made(path):
    found = [m.group(0) for m in HISTORY.finditer(path.read_text())]
    assert found == [], f"{path.name} narrates its history: {found}"


def test_a_planted_history_sentence_is_found():
    assert HISTORY.search("An earlier session measured 4.6 s.")
    assert not HISTORY.search("The epoch takes 4.6 s on this machine.")


def test_every_page_is_in_the_site():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES[1:]:
        assert re.search(rf"\b{re.escape(page.name)}\b", nav), f"mkdocs.yml's nav lacks {page}"


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="the docs extra: pip install -e '.[docs]'")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # The links into the code reach the source in the site too.
    assert (site / "code" / "numpy_vae" / "model.py").read_text() == (
        ROOT / "numpy_vae" / "model.py"
    ).read_text()


# The checks themselves, each on the mistake it exists to catch.


def test_the_block_parser_finds_what_the_docs_hold():
    text = (
        "x\n```python\na = 1\n```\n```console\n$ python -m numpy_vae --help\nout\n```\n"
        "<!-- not run: trains for an hour -->\n```python\nlong()\n```\n"
    )
    assert code_blocks(text) == [
        Block("python", "a = 1\n", None),
        Block("console", "$ python -m numpy_vae --help\nout\n", None),
        Block("python", "long()\n", "trains for an hour"),
    ]
    assert commands(code_blocks(text)[1].code) == [[sys.executable, "-m", "numpy_vae", "--help"]]


def test_a_planted_broken_snippet_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nimport numpy_vae as nv\nnv.VAE(784, latent_dims=20)\n```\n")
    with pytest.raises(TypeError, match="latent_dims"):
        run_page(page, tmp_path)


def test_a_planted_failing_command_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```console\n$ python -c 'raise SystemExit(3)'\n```\n")
    with pytest.raises(AssertionError, match="raise SystemExit"):
        run_page(page, tmp_path)


def test_a_block_not_run_must_say_why(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- not run:  -->\n```python\nfine = 1\n```\n")
    with pytest.raises(AssertionError, match="must say why"):
        run_page(page, tmp_path)


def test_a_planted_unknown_flag_fails():
    code = "python scripts/train_mnist.py --epochs 3 \\\n    --latent-dims 5 > log.txt\n"
    assert script_commands(code) == [
        ("scripts/train_mnist.py", ["--epochs", "3", "--latent-dims", "5"])
    ]
    with pytest.raises(SystemExit):
        parse_flags(*script_commands(code)[0])
    parse_flags("scripts/train_mnist.py", ["--epochs", "3", "--latent-dim", "5"])
    parse_flags("scripts/evaluate.py", ["runs/no-such-run", "--iw-samples", "10"])


def test_planted_dead_links_fail():
    page = ROOT / "docs" / "index.md"
    text = (
        "[ok](own-data.md) [ok](own-data.md#from-python) [`VAE.backward`](../numpy_vae/model.py) "
        "[`model.py`](../numpy_vae/model.py) "
        "[gone](no-such-page.md) [bad anchor](own-data.md#no-such-heading) "
        "![gone figure](no-such-figure.png) [`VAE.backwards`](../numpy_vae/model.py) "
        "`[in code](not-a-link.md)`\n```\n[in a block](not-a-link-either.md)\n```\n"
    )
    problems = link_problems(text, page)
    assert len(problems) == 4, problems
    for bad in ("no-such-page.md", "#no-such-heading", "no-such-figure.png", "VAE.backwards"):
        assert any(bad in p for p in problems), (bad, problems)


def test_an_anchor_must_mean_the_same_on_github_and_in_the_site():
    assert github_slug("Following one backward pass") == "following-one-backward-pass"
    heading = "IWAE, STL and DReG"
    assert github_slug(heading) == site_slug(heading) == "iwae-stl-and-dreg"
    # "a - b": GitHub keeps three hyphens, Python-Markdown collapses them: not a safe anchor.
    assert github_slug("Speed - today") != site_slug("Speed - today")
