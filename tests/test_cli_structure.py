"""The CLI's shape: every command module defines its commands at module level and one
`register(app)` that only registers them."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import synthct.commands as commands


def test_register_only_registers_module_level_commands():
    folder = Path(commands.__path__[0])
    names = sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name[0] != "_")
    assert "bench" in names and "generate" in names
    for name in names:
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        registers = [
            n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "register"
        ]
        assert len(registers) == 1, f"{name}.py: one register() expected"
        reg = registers[0]
        assert [a.arg for a in reg.args.args] == ["app"], f"{name}.py: register(app) expected"
        nested = [n for n in ast.walk(reg) if isinstance(n, ast.FunctionDef | ast.Lambda)]
        assert nested == [reg], f"{name}.py: register() defines {len(nested) - 1} function(s)"
        assert not reg.decorator_list
