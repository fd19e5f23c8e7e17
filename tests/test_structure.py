"""The package's shape: a light command line, no import cycles, one home per helper."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "depthcli"


def test_cli_imports_no_torch() -> None:
    """`depthcli --help`, `models`, `--version` and usage errors must not pay for torch."""
    code = ("import sys, depthcli.cli, depthcli.cli.predict, depthcli.cli.models, "
            "depthcli.cli.download, depthcli.cli.bench, depthcli.cli.export\n"
            "from click.testing import CliRunner\n"
            "from depthcli.cli import main\n"
            "for args in (['--help'], ['models'], ['--version'], ['predict', '--help'], "
            "['predict', 'x.jpg', '-f', 'colour']):\n"
            "    CliRunner().invoke(main, args)\n"
            "print(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """depthcli modules imported when `path` is imported (not inside functions or TYPE_CHECKING)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in modules:
                    out.add(full)
                elif base in modules:
                    out.add(base)
    out.discard(name)
    return out


def test_no_import_cycles() -> None:
    files = sorted(PKG.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _top_level_imports(p, modules) for p in files}
    # a package's __init__ importing its own submodules is the normal direction; a cycle is a
    # path from a module back to itself through other modules' top-level imports
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
