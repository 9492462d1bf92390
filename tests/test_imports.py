"""Import directions (docs/architecture.md): core below experiments and export, CLIs on top.

Read from the source with `ast` (imports inside functions count too), so a lazy import
cannot hide a wrong direction.
"""

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = tuple(f"tf_lth/layers/{name}.py" for name in (
    "__init__", "hashing", "mixin", "numpy_views", "kinds", "walk", "inplace")) + (
    "tf_lth/keras_compat.py",)
CORE = (*LAYERS, "tf_lth/masks.py", "tf_lth/actions.py", "tf_lth/models.py",
        "tf_lth/data.py", "tf_lth/config.py", "tf_lth/run_files.py", "tf_lth/distribute.py",
        "tf_lth/preemption.py", "tf_lth/run_lock.py", "tf_lth/wrap.py", "tf_lth/ticket.py")
CLI_MODULES = {"tf_lth.train", "tf_lth.tune", "tf_lth.export", "tf_lth.plot",
               "tf_lth.reproduce", "tf_lth.flags"}


def _imports(path: str) -> set:
    """Dotted names this file imports (`from a.b import c` gives a.b and a.b.c)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as stream:
        tree = ast.parse(stream.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _python_files(folder: str) -> list:
    found = []
    for directory, _, files in os.walk(os.path.join(ROOT, folder)):
        found += [os.path.relpath(os.path.join(directory, name), ROOT)
                  for name in files if name.endswith(".py")]
    return sorted(found)


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", CORE)
def test_core_never_imports_experiments_export_or_a_cli(path):
    names = _imports(path)
    assert not {n for n in names if _top(n) in ("trainers", "export")}, names
    cli = {n for n in names if any(n == m or n.startswith(m + ".") for m in CLI_MODULES)}
    assert not cli, cli


@pytest.mark.parametrize("path", _python_files("export"))
def test_export_never_imports_trainers(path):
    names = _imports(path)
    assert not {n for n in names if _top(n) == "trainers"}, names


@pytest.mark.parametrize("path", ["tf_lth/masks.py", "tf_lth/actions.py"])
def test_masks_and_actions_import_only_numpy_and_the_standard_library(path):
    """(and each other: actions takes its argument check from masks; and the registries of
    `tf_lth.choices`, standard library only)"""
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    pure = {"tf_lth.masks", "tf_lth.masks.check_choice", "tf_lth.actions", "tf_lth",
            "tf_lth.choices"}
    names = _imports(path)
    assert {_top(n) for n in names if n not in pure} <= allowed, names


@pytest.mark.parametrize("path", [p for p in _python_files("tf_lth") + _python_files("export")
                                  if p not in ("tf_lth/train.py", "tf_lth/tune.py")])
def test_only_the_train_and_tune_clis_import_trainers(path):
    """(bench/ times the experiment classes directly, as the CLIs run them.)"""
    names = {n for n in _imports(path) if _top(n) == "trainers"}
    assert not names, names


def test_this_check_sees_a_lazy_import():
    """The parser catches an import inside a function body (the test can fail)."""
    tree_names = set()
    for node in ast.walk(ast.parse("def f():\n    from trainers.loop import Trainer\n")):
        if isinstance(node, ast.ImportFrom):
            tree_names.add(node.module)
    assert tree_names == {"trainers.loop"}
