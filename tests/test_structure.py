"""The package's shape: a light command line, no import cycles, one home per helper."""

from __future__ import annotations

import ast
import itertools
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


def _imports(source: str, name: str, is_package: bool, modules: set[str]) -> dict[str, int]:
    """depthcli modules that module `name` imports anywhere → the line of the first such import.

    Every import counts: module level, inside functions and methods, under `if TYPE_CHECKING:`
    (a cycle there is still a design cycle, and it becomes a runtime one the day the import moves).
    Relative imports are resolved; `from pkg import x` is an edge to the submodule `pkg.x` when
    `x` is one, else to `pkg` itself (its __init__).
    """
    package = name if is_package else name.rpartition(".")[0]
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules:
                    out.setdefault(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in modules:
                    out.setdefault(full, node.lineno)
                elif base in modules:
                    out.setdefault(base, node.lineno)
    out.pop(name, None)
    return out


def _import_graph() -> dict[str, dict[str, int]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p.read_text(), _module_name(p), p.name == "__init__.py",
                                      modules) for p in files}


def test_import_walker_sees_every_import() -> None:
    """The cycle test's walker: function-level, TYPE_CHECKING and relative imports all count."""
    modules = {"depthcli", "depthcli.a", "depthcli.a.b", "depthcli.a.c", "depthcli.d",
               "depthcli.e", "depthcli.f", "depthcli.g"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from . import b, helper\n"  # a submodule, and a name of the package's __init__
        "from .. import d as dd\n"
        "if TYPE_CHECKING:\n"
        "    from ..e import Thing\n"
        "def f():\n"
        "    import depthcli.f\n"
        "    class K:\n"
        "        def m(self):\n"
        "            from .c import x\n"
        "            from depthcli.g import y\n"
    )
    got = _imports(source, "depthcli.a.mod", False, modules)
    assert set(got) == {"depthcli.a", "depthcli.a.b", "depthcli.a.c", "depthcli.d", "depthcli.e",
                        "depthcli.f", "depthcli.g"}
    assert got["depthcli.a.c"] == 11
    # in a package's __init__, `from . import b` is the package's own submodule
    assert set(_imports("from . import b\n", "depthcli.a", True, modules)) == {"depthcli.a.b"}


def test_no_import_cycles() -> None:
    graph = _import_graph()
    # a package's __init__ importing its own submodules is the normal direction; a cycle is a
    # path from a module back to itself, e.g. a submodule importing its package's __init__
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(
                    f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)) + f" -> {n}")
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


# The data flow, bottom to top: a module imports only from its own layer or the layers below.
_LAYERS = (
    ("depthcli.version", "depthcli.errors", "depthcli.cpu"),  # what everything may raise, print, ask
    ("depthcli.io",),                               # files: decode, encode, atomic writes
    ("depthcli.models", "depthcli.checkpoints"),    # the networks and their weights
    ("depthcli.engine", "depthcli.backends"),       # running a network on a runtime
    ("depthcli.outputs",),                          # depth maps -> files
    ("depthcli.runs",),                             # inputs -> engine -> outputs, accounted
    ("depthcli.cli", "depthcli.bench", "depthcli.__main__", "depthcli"),
)


def _layer(module: str) -> int:
    best, layer = "", -1
    for i, names in enumerate(_LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, layer = name, i
    assert layer >= 0, f"{module} is in no layer of _LAYERS: place it"
    return layer


def test_layers_point_down() -> None:
    """No module below the runs (or anywhere) imports a module of a layer above its own."""
    graph = _import_graph()
    upward = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)}) at line {line}"
              for m, deps in sorted(graph.items()) for d, line in sorted(deps.items())
              if _layer(d) > _layer(m)]
    assert not upward, "\n".join(upward)


def _imports_of(path: Path, top: str) -> list[int]:
    """Lines where `path` imports package `top` (module level, functions, TYPE_CHECKING)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            lines += [node.lineno for a in node.names if a.name.split(".")[0] == top]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] == top:
                lines.append(node.lineno)
    return lines


def test_io_outputs_and_runs_import_no_torch() -> None:
    """Files, outputs and runs work on host arrays: only the engine, backends and models (and
    the benchmark, the checkpoints) touch tensors, so io/, outputs/ and runs/ never import torch."""
    found = [f"{p.relative_to(PKG.parent)}:{n}" for sub in ("io", "outputs", "runs")
             for p in sorted((PKG / sub).rglob("*.py")) for n in _imports_of(p, "torch")]
    assert not found, found


def test_import_leaves_the_environment_alone() -> None:
    """`import depthcli` (and its command line) must not change the importing program's os.environ."""
    code = ("import os\nbefore = dict(os.environ)\nimport depthcli, depthcli.cli\n"
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
