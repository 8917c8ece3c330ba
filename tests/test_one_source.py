"""Code a notebook builds in the open and the kit packages is one code, not two copies.

Notebook 01 writes `preprocess`, notebook 04 the model; later notebooks, the
tests and the benchmarks import them from `tutorial_helpers`. A learner reads
the notebook's code, so the package must run that same code: these tests
compare the two definitions' syntax trees, without docstrings and type
annotations (which only the package has), and fail when either is edited
alone.
"""

import ast
import copy
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (notebook, module, names defined in both, names the notebook spells otherwise)
SHARED = [
    ("01_preprocessing.ipynb", "tutorial_helpers/data.py", ["preprocess"], {}),
    ("04_training.ipynb", "tutorial_helpers/model.py", ["create_keras_model", "model_fn"],
     {"input_spec": "INPUT_SPEC"}),
]
# Module-level constants the notebook sets to the package's values.
CONSTANTS = [("01_preprocessing.ipynb", "tutorial_helpers/data.py", ["NUM_EPOCHS", "SHUFFLE_BUFFER"])]


def _notebook_tree(name: str) -> ast.Module:
    notebook = json.loads((ROOT / "notebooks" / name).read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    # IPython's top-level await and magics are not Python: keep the cells that parse.
    body = []
    for cell in cells:
        try:
            body.extend(ast.parse(cell).body)
        except SyntaxError:
            continue
    return ast.Module(body=body, type_ignores=[])


def _definition(tree: ast.Module, name: str, where: str) -> ast.FunctionDef:
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
    assert len(found) == 1, f"{where} should define {name} once, at the top level; found {len(found)}"
    return found[0]


class _Normalize(ast.NodeTransformer):
    """Drops docstrings and annotations; renames the names the notebook spells otherwise."""

    def __init__(self, renames):
        self.renames = renames

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        node.returns = None
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:]
        return node

    def visit_arg(self, node):
        node.annotation = None
        return node

    def visit_Name(self, node):
        node.id = self.renames.get(node.id, node.id)
        return node


def _normalized(node: ast.AST, renames=None) -> str:
    return ast.dump(_Normalize(renames or {}).visit(copy.deepcopy(node)), annotate_fields=False)


@pytest.mark.parametrize(("notebook", "module", "names", "renames"), SHARED)
def test_the_package_runs_the_code_the_notebook_builds(notebook, module, names, renames):
    notebook_tree = _notebook_tree(notebook)
    module_tree = ast.parse((ROOT / module).read_text())
    for name in names:
        ours = _normalized(_definition(notebook_tree, name, notebook), renames)
        theirs = _normalized(_definition(module_tree, name, module))
        assert ours == theirs, (
            f"{name} in notebooks/{notebook} and in {module} are not the same code any more: "
            "change both, then re-execute the notebook"
        )


@pytest.mark.parametrize(("notebook", "module", "names"), CONSTANTS)
def test_the_notebook_sets_the_packages_constants(notebook, module, names):
    def values(tree):
        return {target.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name) and target.id in names}

    in_notebook, in_module = values(_notebook_tree(notebook)), values(ast.parse((ROOT / module).read_text()))
    assert set(in_module) == set(names), f"{module} should set {names}"
    assert in_notebook == in_module


def test_a_changed_copy_is_told_apart():
    """The comparison sees a one-token change, and ignores only docstrings and annotations."""
    packaged = ast.parse('def f(x: int = 1) -> int:\n    """Doc."""\n    return x.repeat(5)\n').body[0]
    same = ast.parse("def f(x=1):\n    return x.repeat(5)\n").body[0]
    changed = ast.parse("def f(x=1):\n    return x.repeat(10)\n").body[0]
    assert _normalized(same) == _normalized(packaged) != _normalized(changed)
