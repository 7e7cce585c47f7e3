"""The layering rules of the code base, checked on the code itself.

- `.importlinter` (run by `.ci/run` as `lint-imports`): ui -> synthct -> db, no Streamlit in the
  core, no import cycles between sibling modules of the core. The tests below prove the contract
  passes on the tree and fails on a deliberate cycle.
- The library never imports its command-line shell (`synthct.cli`, `synthct.commands`).
- A function-local import says why on its line (a heavy or optional library kept out of the
  module's import time); everything else is imported at the top of the module.
- Only `synthct/views` branches on the data view (2D slices vs 3D volumes).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synthct", "db", "ui")
SHELL = ("synthct.cli", "synthct.commands", "synthct.__main__", "synthct.job_runner")


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [*files, *sorted((ROOT / "pages").glob("*.py")), ROOT / "streamlit_app.py"]


def _copy_tree(dst: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    shutil.copy(ROOT / ".importlinter", dst / ".importlinter")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contract_holds_and_fails_on_a_deliberate_cycle(tmp_path):
    _copy_tree(tmp_path)
    ok = _lint_imports(tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "BROKEN" not in ok.stdout and ok.stdout.count("KEPT") >= 3

    # synthct.metrics imports synthct.sets; make sets import metrics back
    sets = tmp_path / "synthct" / "sets.py"
    sets.write_text(sets.read_text() + "\nimport synthct.metrics.results  # noqa\n")
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and ".sets -> .metrics" in broken.stdout


def test_layer_contract_catches_the_core_importing_the_app(tmp_path):
    _copy_tree(tmp_path)
    ws = tmp_path / "synthct" / "workspace.py"
    ws.write_text(ws.read_text() + "\nimport ui.state  # noqa\n")
    out = _lint_imports(tmp_path)
    assert out.returncode != 0 and "synthct.workspace -> ui.state" in out.stdout


def test_the_library_never_imports_its_command_line_shell():
    graph = grimp.build_graph("synthct")
    offenders = []
    for module in sorted(graph.modules):
        if module.startswith(SHELL):
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith(SHELL):
                offenders.append(f"{module} -> {imported}")
    assert offenders == []


def _function_local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every import inside a function body of `path`."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found.append((node.lineno, lines[node.lineno - 1]))
    return sorted(set(found))


def test_every_function_local_import_gives_its_reason():
    missing = [
        f"{p.relative_to(ROOT)}:{line}: {text.strip()}"
        for p in _sources()
        for line, text in _function_local_imports(p)
        if "#" not in text
    ]
    assert missing == [], "\n".join(missing)


def test_the_function_local_import_check_sees_an_unexplained_import(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "def f():\n    import torch  # lazy: heavy\n    from synthct import sets\n    return sets\n"
    )
    found = _function_local_imports(src)
    assert [t.strip() for _, t in found if "#" not in t] == ["from synthct import sets"]


def _view_branches(path: Path, root: Path = ROOT) -> list[str]:
    """Comparisons on the data view ("volumes"/"slices" views, view names, `isinstance` of a
    view class) in `path`: the branches that belong inside `synthct/views`."""
    tree = ast.parse(path.read_text())
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            text = ast.unparse(node)
            if "data_view" in text or "view.name" in text or "'volumes'" in text:
                hits.append(f"{path.relative_to(root)}:{node.lineno}: {text}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance":
            text = ast.unparse(node)
            if "SliceView" in text or "VolumeView" in text:
                hits.append(f"{path.relative_to(root)}:{node.lineno}: {text}")
        elif isinstance(node, ast.Name | ast.Attribute) and "is_slice" in ast.unparse(node):
            hits.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_no_branch_on_the_data_view_outside_the_views():
    views = ROOT / "synthct" / "views"
    hits = [h for p in _sources() if views not in p.parents for h in _view_branches(p)]
    assert hits == [], "\n".join(hits)


@pytest.mark.parametrize(
    "code",
    [
        "if card.model.data_view == 'slices': pass",
        "if system.view.name != 'volumes': pass",
        "ok = isinstance(model.view, SliceView)",
        "if is_slice_system(m): pass",
    ],
)
def test_the_view_branch_check_sees_a_branch(tmp_path, code):
    (tmp_path / "x.py").write_text(code + "\n")
    assert len(_view_branches(tmp_path / "x.py", tmp_path)) == 1


MAX_BODY_LINES = 80


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    """Functions whose body (after the docstring) runs over `MAX_BODY_LINES` lines and whose
    docstring does not say why ("Long because ...")."""
    tree = ast.parse(path.read_text())
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(fn) or ""
        body = fn.body[1:] if doc else fn.body
        too_long = body and fn.end_lineno - body[0].lineno + 1 > MAX_BODY_LINES
        if too_long and "long because" not in doc.lower():
            out.append(f"{path.relative_to(root)}:{fn.lineno}: {fn.name}")
    return out


def test_no_function_runs_over_80_lines_without_saying_why():
    long = [f for p in _sources() for f in _long_functions(p)]
    assert long == [], "\n".join(long)


def test_the_long_function_check_counts_the_body(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_BODY_LINES + 1))
    (tmp_path / "a.py").write_text(f'def f():\n    """Doc."""\n{body}')
    (tmp_path / "b.py").write_text(f'def f():\n    """Long because: a table."""\n{body}')
    (tmp_path / "c.py").write_text(f'def f():\n    """Doc."""\n{body[: -len("    x80 = 80") - 1]}')
    assert _long_functions(tmp_path / "a.py", tmp_path) == ["a.py:1: f"]
    assert _long_functions(tmp_path / "b.py", tmp_path) == []
    assert _long_functions(tmp_path / "c.py", tmp_path) == []
