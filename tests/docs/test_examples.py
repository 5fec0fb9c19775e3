"""Every ```python block of README.md and docs/**/*.md runs, so no example can rot.

mktestdocs finds the blocks; each page's blocks run in order in one namespace (a block may use
what an earlier block of its page defined, as a reader would run them), in a fresh temporary
folder, so files an example writes (`model.keras`, `logs/run1`) land there. Each block is compiled
under its page's path and line numbers, so a failure's traceback points into the Markdown file.
Shell, console and output blocks (```bash, ```text, ...) are not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mktestdocs import grab_code_blocks

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# Pages whose examples train or build large models: still run by `make test`.
SLOW = {"docs/model-tools.md"}
_FENCE = re.compile(r"^\s*```+\s*(\S*)(.*)$")


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The page's ```python blocks as (line of the first code line, code), in order."""
    text = page.read_text(encoding="utf-8")
    blocks = grab_code_blocks(text, lang="python")
    starts = [
        number + 1
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() == "```python"
    ]
    assert len(starts) == len(blocks), f"{_name(page)}: could not line up its python blocks"
    return list(zip(starts, blocks, strict=True))


def _pages_with_code() -> list:
    return [
        pytest.param(page, id=_name(page), marks=[pytest.mark.slow] if _name(page) in SLOW else [])
        for page in PAGES
        if python_blocks(page)
    ]


@pytest.mark.parametrize("page", _pages_with_code())
def test_page_examples_run(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__main__"}
    for line, code in python_blocks(page):
        # Leading newlines put the block's lines at their place in the page for tracebacks.
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_python_fence_is_run(page: Path):
    """A fence such as ```py or ```python title="x" would be skipped silently: refuse it."""
    skipped = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        match = _FENCE.match(line)
        if match and match.group(1).lower() in ("py", "python", "python3", "pycon") and (
            line.strip() != "```python"
        ):
            skipped.append(f"line {number}: {line.strip()}")
    assert not skipped, f"{_name(page)}: write these fences as a bare ```python: {skipped}"


def test_the_pages_are_found():
    names = {_name(page) for page in PAGES}
    assert {"README.md", "docs/index.md", "docs/initializers.md"} <= names


def test_readme_links_and_pictures_exist():
    """mkdocs checks the links of docs/; the README's relative links are checked here."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    relative = [target for target in targets if "://" not in target]
    assert relative, "the README links into docs/"
    missing = [target for target in relative if not (ROOT / target).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"
