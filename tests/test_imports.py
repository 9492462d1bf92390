"""Import directions by folder (docs/architecture.md): each layer imports only below it.

    command-line programs   tf_lth/cli/ (and the `python -m` entry points tf_lth/*.py,
                            tf_lth/reproduce/)
    public API              tf_lth/__init__.py, tf_lth/api/
    experiments             trainers/
    deployment              export/
    core                    tf_lth/core/

Read from the source with `ast` (imports inside functions count too), so a lazy import
cannot hide a wrong direction. The rules name folders, so a new module is checked by
where it lives, with no list of files to keep.
"""

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PURE = ("tf_lth/core/masks.py", "tf_lth/core/actions.py", "tf_lth/core/rounds.py",
        "tf_lth/core/sparsity.py", "tf_lth/core/choices.py")


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


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (None: not the project's)."""
    parts = module.split(".")
    if parts[0] == "trainers":
        return "experiments"
    if parts[0] == "export":
        return "deployment"
    if parts[0] != "tf_lth":
        return None
    if len(parts) == 1:
        return "api"  # the face, tf_lth/__init__.py
    return {"core": "core", "api": "api", "cli": "cli"}.get(parts[1], "cli")  # entry points


BELOW = {  # what each layer may import, besides itself
    "core": set(),
    "deployment": {"core"},
    "experiments": {"core"},
    "api": {"core", "deployment"},
    "cli": {"core", "deployment", "experiments", "api"},
}
FOLDERS = {"core": "tf_lth/core", "deployment": "export", "experiments": "trainers",
           "api": "tf_lth/api"}


def _checked_files():
    for layer, folder in FOLDERS.items():
        for path in _python_files(folder):
            yield path, layer


@pytest.mark.parametrize("path, layer", list(_checked_files()))
def test_every_module_imports_only_its_own_layer_and_those_below(path, layer):
    allowed = BELOW[layer] | {layer}
    wrong = sorted(name for name in _imports(path)
                   if layer_of(name) is not None and layer_of(name) not in allowed)
    assert not wrong, f"{path} ({layer}) imports {wrong}; allowed layers: {sorted(allowed)}"


def test_every_folder_has_the_modules_it_should():
    """The rules above cover real code: each layer's folder holds modules."""
    for folder in list(FOLDERS.values()) + ["tf_lth/cli"]:
        assert len(_python_files(folder)) >= 2, folder


@pytest.mark.parametrize("path", [p for p in _python_files("tf_lth")
                                  if os.path.dirname(p) in ("tf_lth", "tf_lth/reproduce")
                                  and not p.endswith("tf_lth/__init__.py")])
def test_entry_points_only_start_a_command(path):
    """tf_lth/train.py & co. keep `python -m tf_lth.train` working; the code is in cli/."""
    names = {name for name in _imports(path) if layer_of(name) is not None}
    assert all(name.startswith("tf_lth.cli") for name in names), names
    assert names or path.endswith("__init__.py"), f"{path} starts no command"


@pytest.mark.parametrize("path", PURE)
def test_mask_math_imports_only_numpy_and_the_standard_library(path):
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    pure_modules = {p[:-3].replace("/", ".") for p in PURE}
    for name in _imports(path):
        if layer_of(name) is not None:
            owner = name if name in pure_modules else name.rsplit(".", 1)[0]
            assert owner in pure_modules or name == "tf_lth.core", (path, name)
        else:
            assert name.split(".")[0] in allowed, (path, name)


def test_layer_of_names_the_folders():
    assert layer_of("tf_lth.core.layers.mixin") == "core"
    assert layer_of("tf_lth.api.deploy") == "api" and layer_of("tf_lth") == "api"
    assert layer_of("tf_lth.cli.reproduce.plan") == "cli" and layer_of("tf_lth.train") == "cli"
    assert layer_of("trainers.loop") == "experiments" and layer_of("export.bake") == "deployment"
    assert layer_of("numpy") is None and layer_of("keras.layers") is None


def test_this_check_sees_a_lazy_import():
    """The parser catches an import inside a function body (the test can fail)."""
    tree_names = set()
    for node in ast.walk(ast.parse("def f():\n    from trainers.loop import Trainer\n")):
        if isinstance(node, ast.ImportFrom):
            tree_names.add(node.module)
    assert tree_names == {"trainers.loop"}
    assert layer_of(next(iter(tree_names))) not in BELOW["core"] | {"core"}
