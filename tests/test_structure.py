"""Structure rules of the source (issue 22), read with `ast` from tf_lth/, trainers/,
export/, bench/ and examples/:

(a) no function or method is longer than 100 lines (`def` line to last line);
(b) the project's own modules import each other without a cycle, counting every import
    (inside functions too, as tests/test_imports.py does); `from pkg import mod` is an
    import of the submodule pkg.mod when pkg/mod.py exists, else of pkg;
(c) no module reaches into another project module's private names: neither
    `from tf_lth.x import _y` nor `x._y` on an imported project module (the standard
    library's, such as `os._exit`, are not ours to judge);
and no module of trainers/ (the experiments) imports a CLI module (tf_lth/cli/ or a
`python -m` entry point), lazily or not.

Each checker works on source text, so the last tests plant a violation in a string and
see it caught: the rules can fail.
"""

from __future__ import annotations

import ast
import os


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("tf_lth", "trainers", "export", "bench", "examples")
SCRIPT_FOLDERS = ("examples",)  # run as scripts: their siblings import as top-level names
MAX_FUNCTION_LINES = 100


# ---- the project's modules -------------------------------------------------------------
def module_name(path: str) -> str:
    """Dotted module name of a repository-relative .py path."""
    parts = path[:-len(".py")].split("/")
    if parts[0] in SCRIPT_FOLDERS:
        return parts[-1]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_sources() -> dict:
    """{module name: (repository-relative path, source)} for every module of FOLDERS."""
    sources = {}
    for folder in FOLDERS:
        for directory, folders, files in os.walk(os.path.join(ROOT, folder)):
            folders[:] = sorted(name for name in folders if name != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.relpath(os.path.join(directory, name), ROOT)
                    path = path.replace(os.sep, "/")
                    with open(os.path.join(ROOT, path), encoding="utf-8") as stream:
                        sources[module_name(path)] = (path, stream.read())
    return sources


def is_package(path: str) -> bool:
    return path.endswith("/__init__.py")


# ---- (a) long functions ----------------------------------------------------------------
def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list:
    """[(line, qualified name, lines)] of each function or method longer than `limit`."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = child.end_lineno - child.lineno + 1
                    if lines > limit:
                        found.append((child.lineno, name, lines))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


# ---- (b) imports and cycles ------------------------------------------------------------
def _absolute(module: str | None, level: int, importer: str, package: bool) -> str:
    """The absolute module of `from <level dots><module> import ...` in `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".") if package else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_bindings(source: str, importer: str, package: bool, modules: set) -> list:
    """[(line, imported project module, attribute or None)] for every import of a project
    module anywhere in `source`. `attribute` is the name taken from a module when it is
    not itself a submodule (`from tf_lth.core.masks import check_choice`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names
                      if alias.name in modules]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, importer, package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}" if base else alias.name
                if submodule in modules:
                    found.append((node.lineno, submodule, None))
                elif base in modules:
                    found.append((node.lineno, base, alias.name))
    return found


def module_names(source: str, importer: str, package: bool, modules: set) -> dict:
    """{name: project module} of the names that import statements bind to a module:
    `import a.b` binds a, `import a.b as m` m, `from a import b` b when a.b is a module."""
    bound = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    bound[alias.asname] = alias.name
                elif not alias.asname and alias.name.split(".")[0] in modules:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, importer, package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}" if base else alias.name
                if submodule in modules:
                    bound[alias.asname or alias.name] = submodule
    return bound


def import_graph(sources: dict) -> dict:
    """{importer: {imported: first line}} among the project's modules (self-edges left out)."""
    modules = set(sources)
    graph = {}
    for name, (path, source) in sources.items():
        edges = graph.setdefault(name, {})
        for line, imported, _ in import_bindings(source, name, is_package(path), modules):
            if imported != name:
                edges[imported] = min(line, edges.get(imported, line))
    return graph


def cycles(graph: dict) -> list:
    """One cycle (a list of modules, first = last) per strongly connected component of
    more than one module (Tarjan's algorithm, then a shortest way back in the component)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_through(min(component), component, graph) for component in components]


def _cycle_through(start: str, component: set, graph: dict) -> list:
    """The shortest path start -> ... -> start inside `component` (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, {})):
                if target == start:
                    return paths[node] + [start]
                if target in component and target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def describe_cycle(cycle: list, graph: dict, sources: dict) -> str:
    steps = [f"{sources[a][0]}:{graph[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + " (" + "; ".join(steps) + ")"


# ---- (c) private names of other modules ------------------------------------------------
def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node) -> str | None:
    """`a.b.c` of a chain of attribute accesses on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id] + parts[::-1])


def private_uses(source: str, importer: str, package: bool, modules: set) -> list:
    """[(line, what)] of each private name of another project module that `source` imports
    or reads as an attribute of a name bound to an imported project module."""
    found = [(line, f"from {module} import {attribute}")
             for line, module, attribute in import_bindings(source, importer, package, modules)
             if attribute is not None and _private(attribute) and module != importer]
    bound = module_names(source, importer, package, modules)
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        owner = _dotted(node.value)
        if owner is None or owner.split(".")[0] not in bound:
            continue  # self._x, a local value, or a module that is not ours (os._exit)
        head, _, rest = owner.partition(".")
        owner = bound[head] + (f".{rest}" if rest else "")
        if owner in modules and owner != importer:
            found.append((node.lineno, f"{owner}.{node.attr}"))
    return sorted(found)


# ---- the rules on the project ----------------------------------------------------------
SOURCES = project_sources()


def test_the_checked_folders_hold_the_project():
    assert {"tf_lth.train", "tf_lth.cli.reproduce.paper", "trainers", "trainers.tfmot_worker",
            "export.report", "bench.run", "_api_common"} <= set(SOURCES)


def test_no_function_is_longer_than_100_lines():
    long = [f"{path}:{line} {name} ({lines} lines)"
            for path, source in SOURCES.values()
            for line, name, lines in long_functions(source)]
    assert not long, "functions over 100 lines:\n" + "\n".join(long)


def test_the_projects_modules_import_each_other_without_a_cycle():
    graph = import_graph(SOURCES)
    assert graph["tf_lth.cli.reproduce.plan"], "the graph sees no imports"
    found = [describe_cycle(cycle, graph, SOURCES) for cycle in cycles(graph)]
    assert not found, "import cycles:\n" + "\n".join(found)


CLI_MODULES = ("tf_lth.cli", "tf_lth.train", "tf_lth.tune", "tf_lth.export", "tf_lth.plot",
               "tf_lth.reproduce")


def test_experiments_import_no_cli_module():
    """trainers/ runs under the CLIs (the figure of a run is drawn by tf_lth.train)."""
    graph = import_graph(SOURCES)
    found = [f"{SOURCES[name][0]}:{line} imports {target}"
             for name, edges in graph.items() if name.split(".")[0] == "trainers"
             for target, line in edges.items()
             if any(target == cli or target.startswith(cli + ".") for cli in CLI_MODULES)]
    assert not found, "\n".join(found)


def test_no_module_uses_another_modules_private_names():
    modules = set(SOURCES)
    found = [f"{path}:{line} {what}"
             for name, (path, source) in SOURCES.items()
             for line, what in private_uses(source, name, is_package(path), modules)]
    assert not found, "private names of other modules:\n" + "\n".join(found)


# ---- each checker catches a planted violation ------------------------------------------
def _function(name: str, lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}():\n{body}"


def test_long_function_check_counts_def_to_last_line():
    assert long_functions(_function("ok", 100)) == []
    planted = "class C:\n" + _function("method", 101, "    ") + _function("fine", 100)
    nested = "def outer():\n" + _function("inner", 101, "    ")
    assert long_functions(planted) == [(2, "C.method", 101)]
    assert long_functions(nested) == [(1, "outer", 102), (2, "outer.inner", 101)]


def test_cycle_check_sees_a_lazy_import_and_names_the_cycle():
    planted = {
        "pkg": ("pkg/__init__.py", ""),
        "pkg.a": ("pkg/a.py", "from pkg import b\n"),
        "pkg.b": ("pkg/b.py", "import os\n\ndef later():\n    from . import c\n"),
        "pkg.c": ("pkg/c.py", "def f():\n    import pkg.a as again\n"),
        "pkg.d": ("pkg/d.py", "from pkg.a import something\nfrom pkg import d\n"),
    }
    graph = import_graph(planted)
    assert graph["pkg.a"] == {"pkg.b": 1} and graph["pkg.d"] == {"pkg.a": 1}
    found = cycles(graph)
    assert found == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert "pkg/c.py:2 imports pkg.a" in describe_cycle(found[0], graph, planted)
    del planted["pkg.c"]
    assert cycles(import_graph(planted)) == []


def test_private_check_sees_imports_and_attributes_but_not_the_standard_library():
    modules = {"tf_lth", "tf_lth.core.masks", "tf_lth.core.layers", "tf_lth.cli.reproduce",
               "tf_lth.cli.reproduce.plan"}
    planted = ("import os\n"
               "import tf_lth.core.layers\n"
               "from tf_lth.core import masks\n"
               "from tf_lth.core.masks import _hidden, check_choice\n"
               "def f(self):\n"
               "    from . import plan as p\n"
               "    os._exit(0)\n"
               "    self._own = masks.__name__\n"
               "    return masks._rng(), tf_lth.core.layers._Masked, p._speed, _local._x\n")
    found = private_uses(planted, "tf_lth.cli.reproduce.cli", False, modules)
    assert sorted(found) == [(4, "from tf_lth.core.masks import _hidden"),
                             (9, "tf_lth.cli.reproduce.plan._speed"),
                             (9, "tf_lth.core.layers._Masked"), (9, "tf_lth.core.masks._rng")]
    own = "from tf_lth.core import masks\nx = masks._rng\n"
    assert private_uses(own, "tf_lth.core.masks", False, modules) == []  # a module's own names
