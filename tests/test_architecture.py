"""The package's rings: imports run downward only, the math files import no ring, scripts are shims.

Ranks, lowest first: the specification (the math files, ``backend``, ``config``) 0; ``fast`` 1;
``training`` 2; ``checks`` 3; ``devices``, ``experiments`` 4; ``cli`` 5. A module may import
modules of its own rank or lower. One exception, said in ``numpy_vae/devices/__init__.py``:
``devices/strict.py`` is a leaf that imports nothing from the package, and ``backend.py`` draws
on it when the ``"strict"`` test device is chosen.
"""

import ast
import re
import tokenize
from pathlib import Path

import numpy_vae

PACKAGE = Path(numpy_vae.__file__).resolve().parent
ROOT = PACKAGE.parent
SPEC = {
    "reparam", "kl", "likelihoods", "layers", "decoders", "model", "optim", "gradcheck",
    "bounds", "objectives", "made", "inputs", "completion", "quadrants", "gsnn",
}  # fmt: skip
RANKS = {"fast": 1, "training": 2, "checks": 3, "devices": 4, "experiments": 4, "cli": 5}
LEAVES = {"numpy_vae.devices.strict"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    parts = module.split(".")
    return RANKS.get(parts[1], 0) if len(parts) > 1 else 0


def package_imports(path: Path) -> set[str]:
    """Every ``numpy_vae...`` module that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("numpy_vae"):
                for alias in node.names:  # "from numpy_vae.fast import FastVAE" or a module
                    sub = f"{node.module}.{alias.name}"
                    is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                    found.add(sub if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("numpy_vae")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add("<relative>")
    return found


def test_the_math_files_are_at_the_top_and_every_ring_is_a_folder():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == SPEC | {"__init__", "__main__", "backend", "config"}
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == set(RANKS)


def violations(path: Path, here: str) -> list[str]:
    """The imports of ``path`` (as module ``here``) that break the rule."""
    wrong = []
    for target in package_imports(path):
        if target == "<relative>":
            wrong.append(f"{here}: use absolute imports")
        elif target in LEAVES:
            continue
        elif rank(target) > rank(here):
            wrong.append(f"{here} (rank {rank(here)}) imports {target} (rank {rank(target)})")
    return wrong


def test_imports_run_downward_only():
    wrong = [v for p in sorted(PACKAGE.rglob("*.py")) for v in violations(p, module_name(p))]
    assert not wrong, "\n".join(wrong)


def test_the_rule_bites(tmp_path):
    """Plant an upward import (the specification importing training) and a relative one."""
    planted = tmp_path / "model.py"
    planted.write_text("def f():\n    from numpy_vae.training.trainer import Trainer\n")
    assert violations(planted, "numpy_vae.model")
    planted.write_text("from .fast import FastVAE\n")
    assert violations(planted, "numpy_vae.model")
    planted.write_text("from numpy_vae.kl import free_bits\n")
    assert not violations(planted, "numpy_vae.model")


def test_the_leaf_imports_nothing_from_the_package():
    for leaf in LEAVES:
        path = (ROOT / Path(*leaf.split("."))).with_suffix(".py")
        assert package_imports(path) == set(), leaf


def code_tokens(path: Path) -> str:
    """The code of ``path`` without strings and comments, tokens joined by spaces."""
    with path.open("rb") as f:
        skip = (tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)
        return " ".join(tok.string for tok in tokenize.tokenize(f.readline) if tok.type not in skip)


def test_the_specification_uses_no_fast_path_tricks():
    """No ``out=``, no scratch buffers, no threads, nothing of the fast path in the math files."""
    for name in SPEC:
        code = code_tokens(PACKAGE / f"{name}.py")
        assert not re.search(r"[(,] out =", code), f"{name}.py writes into out="
        for trick in ("Buffers", "run_split", "ThreadPool", "threading", "fast"):
            assert not re.search(rf"\b{trick}\b", code), f"{name}.py uses {trick}"


def test_scripts_are_shims():
    for script in (ROOT / "scripts").glob("*.py"):
        code = [
            line
            for line in script.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        body = [line for line in code if not line.startswith(('"""', "import ", "os.environ"))]
        assert len(body) <= 4, f"{script.name}: {body}"
        assert any(line.startswith("from numpy_vae.cli.") for line in body), script.name


#: The specification's line budgets: a file a student reads whole.
MODEL_FILE_LINES, MODEL_CLASS_LINES, FORWARD_BY_LINE, SPEC_FILE_LINES = 350, 250, 150, 320


def spec_budget_problems(package: Path) -> list[str]:
    """What in the specification files of ``package`` is over its line budget."""
    problems = []
    for name in sorted(SPEC | {"backend", "config"}):
        lines = (package / f"{name}.py").read_text().splitlines()
        budget = MODEL_FILE_LINES if name == "model" else SPEC_FILE_LINES
        if len(lines) > budget:
            problems.append(f"{name}.py has {len(lines)} lines (budget {budget})")
    tree = ast.parse((package / "model.py").read_text())
    vae = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VAE")
    if vae.end_lineno - vae.lineno + 1 > MODEL_CLASS_LINES:
        problems.append(f"class VAE has {vae.end_lineno - vae.lineno + 1} lines")
    forward = next(n for n in vae.body if getattr(n, "name", "") == "forward")
    if forward.lineno > FORWARD_BY_LINE:
        problems.append(f"VAE.forward starts at line {forward.lineno}")
    return problems


def test_the_specification_keeps_its_line_budgets():
    assert not spec_budget_problems(PACKAGE)


def test_the_line_budgets_bite(tmp_path):
    """Planted: a model.py grown by 200 lines of methods, and a bloated likelihoods.py."""
    for name in SPEC | {"backend", "config"}:
        (tmp_path / f"{name}.py").write_text((PACKAGE / f"{name}.py").read_text())
    model = (PACKAGE / "model.py").read_text()
    grown = "\n".join(f"    def extra_{i}(self):\n        pass\n" for i in range(70))
    marker = (
        "    # ------------------------------------------------------------------ the negative ELBO"
    )
    (tmp_path / "model.py").write_text(model.replace(marker, grown + marker))
    (tmp_path / "likelihoods.py").write_text("x = 1\n" * 400)
    problems = " | ".join(spec_budget_problems(tmp_path))
    for expected in ("model.py has", "class VAE has", "VAE.forward starts", "likelihoods.py has"):
        assert expected in problems, problems


def test_no_specification_file_imports_a_ring():
    """The math files stand alone: none imports training, experiments, cli, checks or fast."""
    for name in SPEC | {"backend", "config"}:
        targets = package_imports(PACKAGE / f"{name}.py") - LEAVES
        assert all(rank(t) == 0 for t in targets), (name, sorted(targets))
