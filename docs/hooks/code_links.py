"""mkdocs hook: the book's links into the code open the source in the site as well.

A chapter links to the code relative to ``docs/`` (``../numpy_vae/model.py``), which is right
on GitHub. The site holds only ``docs/``, so this hook copies the source files into the site
under ``code/`` and points those links there.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("numpy_vae", "scripts", "tests")
CODE_LINK = re.compile(r"\]\(((?:\.\./)+)((?:" + "|".join(SOURCES) + r")/[^)\s]*)\)")


def on_files(files: Files, config) -> Files:
    """Add every source file of the package, its scripts and its tests under ``code/``."""
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".sh") and "__pycache__" not in path.parts:
                uri = "code/" + path.relative_to(ROOT).as_posix()
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    """Point ``../numpy_vae/...`` (and scripts/, tests/) at the copies under ``code/``."""
    depth = page.file.src_uri.count("/")  # folders between docs/ and this page
    return CODE_LINK.sub(lambda m: "](" + "../" * depth + "code/" + m.group(2) + ")", markdown)
