"""The library's layout: who may import whom, and no private name used across modules.

`runtime/` is the floor: it imports nothing from the layers above it. The
sites are one package, `sites/`; the top level keeps only their commands'
short names. A name with a leading underscore is its module's own: no other
module imports it or reaches for it as an attribute.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tutorial_helpers"


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def kit_imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import of a tutorial_helpers module, anywhere in the file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tutorial_helpers"):
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names
                      if alias.name.startswith("tutorial_helpers")]
    return found


def private_uses(name: str, tree: ast.Module) -> list[str]:
    """Private names of other kit modules that `tree` imports or reads as attributes of an imported module."""
    problems, aliases = [], {}
    for module, names, line in kit_imports(tree):
        for imported in names:
            if imported.startswith("_"):
                problems.append(f"{name}:{line} imports {module}.{imported}")
            aliases[imported] = f"{module}.{imported}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            problems.append(f"{name}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return problems


def test_no_private_name_crosses_a_module():
    problems = [problem for name, tree in modules().items() for problem in private_uses(name, tree)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_private_name_taken_from_another_module():
    """The positive control: both ways of reaching into another module are found."""
    tree = ast.parse("from tutorial_helpers.runtime import launcher\n"
                     "from tutorial_helpers.worker_process import _Deadline\n"
                     "launcher._relay(1, 2, 3)\n")
    assert private_uses("example", tree) == [
        "example:2 imports tutorial_helpers.worker_process._Deadline",
        "example:3 reads tutorial_helpers.runtime.launcher._relay"]


def test_runtime_imports_nothing_from_the_layers_above_it():
    found = modules()
    above = [f"{name}:{line} imports {module}" for name, tree in found.items()
             if name.startswith("tutorial_helpers.runtime")
             for module, _, line in kit_imports(tree) if not module.startswith("tutorial_helpers.runtime")]
    assert not above, "\n".join(above)
    assert "tutorial_helpers.runtime.workers" in found  # What the contexts need of a worker lives there.


@pytest.mark.parametrize("shim", ["gatekeeper", "tls", "site_server"])
def test_the_sites_code_is_in_its_package_and_the_top_level_keeps_only_the_commands(shim):
    """A command's short name at the top level only hands over to `sites/`: it defines nothing of its own."""
    tree = modules()[f"tutorial_helpers.{shim}"]
    defined = [node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)]
    assert not defined
    assert any(module.startswith("tutorial_helpers.sites") for module, _, _ in kit_imports(tree))
    site_modules = [name for name in modules() if name.startswith("tutorial_helpers.sites")]
    assert {"tutorial_helpers.sites.routing", "tutorial_helpers.sites.worker", "tutorial_helpers.sites.server",
            "tutorial_helpers.sites.tls", "tutorial_helpers.sites.gatekeeper.proxy"} <= set(site_modules)


def test_the_generic_worker_knows_nothing_of_sites():
    """`worker_process` imports nothing from `sites/`, and its workers take no gatekeeper and no TLS."""
    import inspect

    from tutorial_helpers.worker_process import RemoteWorker, WorkerProcess

    tree = modules()["tutorial_helpers.worker_process"]
    assert not [module for module, _, _ in kit_imports(tree) if module.startswith("tutorial_helpers.sites")]
    for worker in (WorkerProcess, RemoteWorker):
        assert not {"gatekeeper", "tls", "site"} & set(inspect.signature(worker).parameters), worker
