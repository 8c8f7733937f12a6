"""The layering of the package, checked on the source: every import (also ones inside functions)
goes down the stack, and there are no import cycles.

    zoo.layers  <-  zoo.nets  <-  core (compat, figures, optim, ...)  <-  zoo.tasks  <-  zoo.cli  <-  zoo.tools
    datamodules never imports zoo.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = {"compat", "figures", "optim", "safe_load", "checkpoints", "metrics", "callbacks", "compile"}


def layer(module: str) -> int | None:
    """Rank of a zoo module: a module may import only modules of its own rank or lower."""
    if module.startswith("datamodules"):
        return 0  # data: below every zoo layer that may use it
    parts = module.split(".")
    if parts[0] != "zoo":
        return None
    if len(parts) == 1:
        return 0
    head = parts[1]
    return {"layers": 1, "nets": 2, "tasks": 4, "cli": 5, "__main__": 6, "tools": 6}.get(
        head, 3 if head in CORE else None)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every zoo/datamodules module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    known = {module_name(p) for p in sources()}
    # "from zoo import compat" names the module zoo.compat; "from zoo.nets.x import Cls" names zoo.nets.x
    return {m for m in found if m in known and m.split(".")[0] in ("zoo", "datamodules")}


def sources() -> list[Path]:
    return sorted([*ROOT.joinpath("zoo").rglob("*.py"), *ROOT.joinpath("datamodules").rglob("*.py")])


def graph() -> dict[str, set[str]]:
    """module -> the modules it imports; a package importing its own submodules (``zoo.tools.convert`` ->
    ``zoo.tools.convert.gan``) is membership, not a dependency, and is left out."""
    g = {}
    for p in sources():
        name = module_name(p)
        g[name] = {d for d in imports(p) if d != name and not d.startswith(name + ".")}
    return g


def test_every_zoo_module_has_a_layer():
    unplaced = [m for m in graph() if layer(m) is None]
    assert not unplaced, f"modules outside the documented layers (add them to tests/test_architecture.py): {unplaced}"


def test_imports_only_go_down_the_stack():
    upward = []
    for module, deps in graph().items():
        for dep in deps:
            if module.startswith("datamodules") and dep.startswith("zoo"):
                upward.append(f"{module} -> {dep} (datamodules never imports zoo)")
            elif (layer(dep) or 0) > (layer(module) or 0):
                upward.append(f"{module} (layer {layer(module)}) -> {dep} (layer {layer(dep)})")
    assert not upward, "imports up the stack:\n" + "\n".join(sorted(upward))


def test_nets_do_not_need_lightning():
    """A net is a plain nn.Module: its file imports neither Lightning nor torchmetrics."""
    offenders = []
    for path in ROOT.joinpath("zoo", "nets").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("lightning", "torchmetrics")]
    assert not offenders, offenders


def test_no_import_cycles():
    g = graph()
    # package __init__ files are namespaces here: importing zoo.nets.x runs zoo/nets/__init__ first, but that
    # only forms a cycle if __init__ itself imports back, which the graph records as an edge
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("upward", ["zoo.tools.grid", "zoo.tasks.classifier"])
def test_the_checker_sees_an_upward_import(tmp_path, upward, monkeypatch):
    """The rule is not vacuous: a net importing a task or a tool is reported."""
    fake = ROOT / "zoo" / "nets" / "_probe_upward.py"
    fake.write_text(f"def f():\n    import {upward}\n")
    try:
        with pytest.raises(AssertionError, match="_probe_upward"):
            test_imports_only_go_down_the_stack()
    finally:
        fake.unlink()


def test_every_refused_old_class_has_a_conversion_rule():
    """zoo.checkpoints refuses the old classes (it cannot import the tools that convert them); the two lists
    must be the same, or a refused checkpoint would have no conversion, or a rule no refusal."""
    from zoo.checkpoints import LEGACY_CLASSES
    from zoo.tools.convert import all_rules

    assert set(all_rules()) == set(LEGACY_CLASSES)
