"""Every code block of README.md and docs/ runs or is checked, so the documentation cannot drift.

Per page, in order, in a fresh folder:

* ``python`` blocks run (a block whose first line is ``# NAME.py`` is also written to that file,
  for the commands after it); a block that includes code from a file (``--8<-- "FILE:SECTION"``)
  shows code the tests of that file run: the section must exist;
* ``bash`` blocks: each ``bstune ...`` line is parsed by the real command line (every option and
  value checked, the command not run), and run for real when its script is a file an earlier
  block of the page wrote (the tutorial's task scripts train for a few seconds); other lines
  (``pip``, ``apt-get``, ``optuna-dashboard``, ...) are not run;
* ``yaml`` blocks that describe a search space load with :func:`bstune.load_space`;
* ``text`` blocks are sample output, not run.

The first test also checks that every code block has one of these languages (an indented block or
a bare fence would escape the rest), by counting the code blocks Markdown renders.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LANGS = ("python", "bash", "yaml", "text")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, code, line) of each fenced block of ``page``, indentation removed."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        indent = len(m.group("indent"))
        code = "\n".join(line[indent:] for line in m.group("code").splitlines())
        out.append((m.group("lang"), code + "\n", text.count("\n", 0, m.start()) + 1))
    return out


def _rendered_code_blocks(page: Path) -> int:
    import markdown

    html = markdown.markdown(page.read_text(), extensions=["tables", "pymdownx.superfences"])
    return html.count("<pre")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_block_says_its_language(page: Path) -> None:
    pytest.importorskip("pymdownx", reason="the [docs] extra is not installed")
    found = blocks(page)
    bad = [(line, lang) for lang, _, line in found if lang not in LANGS]
    assert not bad, f"{page.name}: blocks without one of {LANGS} at lines {bad}"
    assert _rendered_code_blocks(page) == len(found), f"{page.name}: a code block that is not a fenced block"


def _bstune_lines(code: str) -> list[list[str]]:
    out = []
    for line in code.splitlines():
        line = line.split("  #", 1)[0].strip()
        for part in line.split("&&"):
            words = shlex.split(part.strip())
            if words and words[0] == "bstune":
                out.append(words[1:])
    return out


def _parse(args: list[str]) -> None:
    """Parse ``bstune ARGS`` with the real command line, without running the command."""
    import click
    import typer

    from bstune.cli import app

    group = typer.main.get_command(app)
    sub = group.get_command(click.Context(group), args[0])  # type: ignore[attr-defined]
    assert sub is not None, f"no command {args[0]!r}"
    try:
        sub.make_context(args[0], list(args[1:]))
    except click.BadParameter as e:  # a script that exists only in the reader's folder
        if e.param is None or e.param.name != "script":
            raise


def _check_include(code: str) -> None:
    m = re.fullmatch(r'--8<-- "(?P<file>[^":]+)(?::(?P<section>[\w-]+))?"\s*', code)
    assert m, f"an include line must be the whole block: {code!r}"
    source = (REPO / m.group("file")).read_text()
    if m.group("section"):
        name = m.group("section")
        assert f"--8<-- [start:{name}]" in source and f"--8<-- [end:{name}]" in source, (m.group("file"), name)


def _run_python(code: str, folder: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=600,
                          env=_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _run_bstune(args: list[str], folder: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bstune", *args, "--device", "cpu"], cwd=folder,
                          capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _env() -> dict[str, str]:
    import os

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("BSTUNE_")}, "PYTHONPATH": path}


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_block_runs_or_parses(page: Path, tmp_path: Path) -> None:
    from bstune.space import load_space

    written: set[str] = set()
    for lang, code, line in blocks(page):
        where = f"{page.name}:{line}"
        if lang == "python":
            if code.lstrip().startswith("--8<--"):
                _check_include(code)
                continue
            first = code.lstrip().splitlines()[0]
            if re.fullmatch(r"# [\w-]+\.py", first):
                (tmp_path / first[2:]).write_text(code)
                written.add(first[2:])
            _run_python(code, tmp_path)
        elif lang == "bash":
            for args in _bstune_lines(code):
                try:
                    _parse(args)
                except Exception as e:
                    raise AssertionError(f"{where}: bstune {' '.join(args)}: {e}") from e
                if len(args) > 1 and args[1] in written:
                    _run_bstune(args, tmp_path)
        elif lang == "yaml" and "batch_size:" in code:
            (tmp_path / "space.yaml").write_text(code)
            load_space(tmp_path / "space.yaml")
