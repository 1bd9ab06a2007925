"""The public API is harness.api (and harness.testing): plugins, pretrain/ and bench/ import nothing else from
the core; every exported name resolves and is documented; the core has no import circle."""
import ast
import re
from pathlib import Path

import harness.api

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"harness.api", "harness.testing"}


def _imports(path: Path):
    """(line, module) of every import in a file, at any depth (function-level imports count too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-node.level])
                if node.module:
                    yield node.lineno, f"{pkg}.{node.module}"
                else:  # from . import x, y: the submodules
                    for a in node.names:
                        yield node.lineno, f"{pkg}.{a.name}"
            else:
                yield node.lineno, node.module


def test_plugins_pretrain_and_bench_import_only_the_public_api():
    bad = []
    for folder in ("plugins", "pretrain", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, module in _imports(path):
                if (module == "harness" or module.startswith("harness.")) and module not in PUBLIC:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not bad, "import these from harness.api instead:\n" + "\n".join(bad)


def test_every_exported_name_resolves_and_is_documented():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    for name in harness.api.__all__:
        assert getattr(harness.api, name) is not None, name
        assert re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`", doc), f"docs/plugins.md does not mention {name}"


def test_the_core_has_no_import_circle():
    graph = {}
    for path in sorted((ROOT / "harness").glob("*.py")):
        name = f"harness.{path.stem}" if path.stem != "__init__" else "harness"
        graph[name] = {m for _, m in _imports(path) if m in {f"harness.{p.stem}" for p in (ROOT / "harness").glob("*.py")}}
    # harness/__init__ re-exports harness.api for `import harness` users: not part of a circle of its own
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles in harness/: " + "; ".join(" -> ".join(c) for c in cycles)
