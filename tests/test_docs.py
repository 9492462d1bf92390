"""Documents ship with the repository, and the code's layers import as docs/architecture.md says.

Every mention of a `.md` file or of a `docs/...` path in the project's `*.py` and `*.md`
files must name a file the repository holds (tracked by git, or present in a checkout
without git). Mentions are resolved from the repository root and from the mentioning
file's folder; a bare file name (`RESULTS.md`) may be anywhere in the repository; URLs,
`#anchors`, files written into temporary folders (`tmp_path / "R.md"`), placeholder
folders (`RUN_DIR/...`) and the few generated names in `GENERATED` are ignored.
"""

import ast
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "runs", "__pycache__", "shared"}
# Files outside the repository that earlier code cited; none may be cited.
# the brief's reference files, which never ship: named without their extension here
FOREIGN = tuple(f"{name}.md" for name in ("SPEC", "DESIGN"))
# Names of files a program writes or a pattern for them, not documents to read.
GENERATED = {
    "docs/RESULTS_PRESET.md": "tf_lth.reproduce's page for another preset (a pattern)",
}
PLACEHOLDER_FOLDER = re.compile(r"^[A-Z][A-Z0-9_]*/")  # RUN_DIR/..., OUT_DIR/...
REFERENCE = re.compile(r"(?<![\w/.:-])((?:\.\./|\./)?[\w][\w./-]*\.md|docs/[\w][\w./-]*)")


def _repository_files() -> list:
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.split()
        files = [name for name in listed if os.path.isfile(os.path.join(ROOT, name))]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            files += [os.path.relpath(os.path.join(folder, name), ROOT) for name in names]
    return [name for name in files
            if not any(part in SKIP_DIRS or part.endswith(".egg-info")
                       for part in name.split(os.sep)[:-1])]


FILES = _repository_files()
SHIPPED = {os.path.normpath(name) for name in FILES}
SOURCES = [name for name in FILES if name.endswith((".py", ".md"))
           and os.path.normpath(name) != os.path.normpath("tests/test_docs.py")]


def _references(path: str) -> list:
    with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as stream:
        text = stream.read()
    found = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        for match in REFERENCE.finditer(line):
            start = match.start()
            if re.search(r"https?://\S*$", line[:start]):
                continue  # part of a URL
            if re.search(r"tmp_path|tmpdir|tempfile|mkdtemp", line):
                continue  # a file a test writes into a temporary folder
            target = match.group(1).rstrip(".").split("#")[0]
            if target:
                found.append((line_number, target))
    return found


def _resolves(path: str, target: str) -> bool:
    if target in GENERATED or PLACEHOLDER_FOLDER.match(target):
        return True
    if "/" not in target:  # a bare file name: the document of that name, wherever it is
        return any(os.path.basename(name) == target for name in SHIPPED)
    candidates = [os.path.normpath(target),
                  os.path.normpath(os.path.join(os.path.dirname(path), target))]
    for candidate in candidates:
        if candidate in SHIPPED or any(name.startswith(candidate.rstrip("/") + os.sep)
                                       for name in SHIPPED):
            return True
    return False


def _dangling(include_foreign: bool) -> list:
    problems = []
    for path in SOURCES:
        for line_number, target in _references(path):
            foreign = os.path.basename(target) in FOREIGN
            if foreign != include_foreign:
                continue
            if foreign or not _resolves(path, target):
                problems.append(f"{path}:{line_number}: {target}")
    return problems


def test_the_project_docs_exist():
    for name in ("README.md", "docs/architecture.md", "docs/semantics.md", "docs/api.md"):
        assert os.path.normpath(name) in SHIPPED, name


def test_every_reference_to_a_document_resolves():
    problems = _dangling(include_foreign=False)
    assert not problems, "references to files the repository does not hold:\n" + "\n".join(
        problems)


def test_nothing_cites_files_outside_the_repository():
    problems = _dangling(include_foreign=True)
    assert not problems, f"mentions of {' / '.join(FOREIGN)}:\n" + "\n".join(problems)


LAYERS = tuple(f"tf_lth/core/layers/{name}.py" for name in (
    "__init__", "hashing", "mixin", "numpy_views", "kinds", "walk", "inplace")) + (
    "tf_lth/core/keras_compat.py",)
CORE = (*LAYERS, "tf_lth/core/masks.py", "tf_lth/core/actions.py", "tf_lth/core/models.py",
        "tf_lth/core/wrap.py", "tf_lth/core/ticket.py", "tf_lth/core/data.py", "tf_lth/core/config.py",
        "tf_lth/core/run_files.py")


@pytest.mark.parametrize("path", CORE)
def test_core_modules_never_import_trainers_or_export(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as stream:
        tree = ast.parse(stream.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"trainers", "export"}, imported
    if path in ("tf_lth/core/masks.py", "tf_lth/core/actions.py"):
        assert not imported & {"tensorflow", "keras"}, imported  # pure NumPy
