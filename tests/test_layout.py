"""The shape of the code: imports among bstune's modules flow one way (no circle, lazy imports and
``TYPE_CHECKING`` imports included; the ``bstune`` facade, which only re-exports, left out)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bstune"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the bstune modules it imports anywhere in its file."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target not in (name, "bstune"):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return found


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_bstunes_modules():
    graph = import_graph()
    assert "bstune.objective" in graph and "bstune.run" in graph["bstune.objective"]  # the graph is real
    assert cycles(graph) == []


#: Functions allowed past LONGEST lines, each with the reason.
LONG_ON_PURPOSE = {
    "bstune/train.py:Trainer.__call__": "the training loop: its per-step locals stay in one frame, "
    "because a call per step costs Python time the speed benchmark counts (benchmarks/trainer.py)",
}
LONGEST = 80  # lines of code in one function, its docstring left out
LARGEST_MODULE = 600  # lines in one module


def long_functions() -> dict[str, int]:
    """'path:Class.function' -> its lines without the docstring, for every function over LONGEST."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    child.parent_name = getattr(node, "name", "")  # type: ignore[attr-defined]
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) else None
            if doc is not None and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                lines -= doc.end_lineno - doc.lineno + 1  # type: ignore[operator]
            if lines > LONGEST:
                owner = getattr(node, "parent_name", "")
                name = f"{owner}.{node.name}" if owner else node.name
                out[f"{path.relative_to(PACKAGE.parent)}:{name}"] = lines
    return out


def test_no_function_is_long_without_a_reason():
    assert set(long_functions()) - set(LONG_ON_PURPOSE) == set()


def test_no_module_is_over_six_hundred_lines():
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert sizes["bstune/study.py"] > 100  # the count is real
    assert {p: n for p, n in sizes.items() if n > LARGEST_MODULE} == {}


def test_every_module_says_what_it_owns():
    missing = [str(p.relative_to(PACKAGE.parent)) for p in sorted(PACKAGE.rglob("*.py"))
               if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert missing == []


def test_no_module_shadows_a_public_name():
    # A submodule named like a lazily exported function replaces it on the package once imported.
    import bstune

    modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    assert modules & set(bstune.__all__) == set()


def _defined_in(path: Path) -> set[str]:
    """Names a module defines itself (functions, classes, assignments), not those it imports."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.add(target.id)
    return names


def test_bstune_imports_each_name_from_the_module_that_defines_it():
    """``bstune.study`` and ``bstune.pruners`` re-export names for users; bstune's own modules
    import each name from where it lives (the storage from ``bstune.storage``, not ``bstune.study``)."""
    facades = {"bstune.study": PACKAGE / "study.py"}
    defined = {m: _defined_in(p) for m, p in facades.items()}
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue  # the bstune facade
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in facades and path != facades[node.module]:
                wrong += [f"{path.relative_to(PACKAGE.parent)}: {a.name} from {node.module}"
                          for a in node.names if a.name not in defined[node.module]]
    assert "create_study" in defined["bstune.study"]  # the scan is real
    assert wrong == []


def test_every_break_of_tests_breaks_py_applies_to_the_code_as_it_is_and_reformatted(capsys):
    """tests/breaks.py finds each piece of code it breaks by its tokens; a break whose code moved
    or changed would stop guarding anything, so this fails first (the breaks run by hand: slow)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import breaks

    assert breaks.check_all() == 0, capsys.readouterr().out


def _option_messages_written_by_hand() -> list[str]:
    """Strings (plain or f-strings) that begin ``--flag must be``: an option's refusal not made by
    ``errors.option_error``, the one template."""
    import re

    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            first = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else node
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and re.match(r"--[\w-]+ must be ", first.value):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {first.value[:40]}")
    return sorted(set(found))  # an f-string's first part is walked twice: as itself and in the f-string


def test_every_refused_option_is_said_with_the_one_template():
    assert _option_messages_written_by_hand() == []


def test_the_template_scan_finds_a_hand_written_refusal(tmp_path, monkeypatch):
    (tmp_path / "bstune").mkdir()
    (tmp_path / "bstune" / "x.py").write_text('def f(n):\n    raise ValueError(f"--n must be 1; got {n}")\n')
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "bstune")
    assert _option_messages_written_by_hand() == ['bstune/x.py:2: --n must be 1; got ']
