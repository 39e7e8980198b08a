"""The package's shape (issue #13), read from the source with `ast`: nothing is imported or run.

What it holds the code to: no import cycle among labctl's modules; no module over 400 lines and no
function over 80, except the entries of the allowlists below, each with its reason; the library (the
layers `labctl run` and a daemon are made of) never reaches the demonstrations, the steps or the
plots; every package folder opens with a docstring that says what it is. Needs no root.
"""
from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "labctl"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

#: Modules allowed over MAX_MODULE_LINES: {module: why it stays whole}.
LONG_MODULES: dict[str, str] = {}

#: Functions allowed over MAX_FUNCTION_LINES: {"module:qualified.name": why it stays whole}.
LONG_FUNCTIONS: dict[str, str] = {}

#: The library: what `labctl run` (and step 11's daemon) is made of, top layer to bottom.
LIBRARY = ("labctl.images", "labctl.containers", "labctl.network", "labctl.runtime", "labctl.security", "labctl.daemon",
           "labctl.cluster",
           "labctl.kernel", "labctl.state", "labctl.errors")
#: Beside the library: they use it, it never uses them.
NOT_FOR_THE_LIBRARY = ("labctl.demos", "labctl.steps", "labctl.plots")
#: How a layer's docstring names the part of Docker it plays.
DOCKER_PARTS = re.compile(r"docker|containerd|runc|libcontainer|libnetwork|OCI runtime", re.IGNORECASE)


@dataclass
class Module:
    name: str                      # labctl.kernel.cgroups
    path: Path
    tree: ast.Module
    lines: int
    eager: set[str] = field(default_factory=set)   # labctl modules imported when this one is
    lazy: set[str] = field(default_factory=set)    # labctl modules imported inside its functions
    named: set[str] = field(default_factory=set)   # module paths it spells in a string ("-m labctl.x")


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`: imports there never run."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(nodes, in_function: bool = False):
    """(import node, inside a function?) for every import statement among `nodes` that can run."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, in_function)   # the body runs only under a type checker
        else:
            nested = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _imports(ast.iter_child_nodes(node), nested)


def _targets(node: ast.Import | ast.ImportFrom, importer: Module, known: set[str]) -> set[str]:
    """The labctl modules an import statement loads: `from a import b` loads a.b when b is a module."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level:   # relative: from . import x, from ..y import z
        package = importer.name if importer.path.name == "__init__.py" else importer.name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    found = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
    if base in known and len(found) < len(node.names):
        found.add(base)
    return found


def _dynamic_imports(tree: ast.Module) -> set[str]:
    """importlib.import_module("labctl.x") with a literal name."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value))
    return found


MODULE_PATH = re.compile(r"labctl(\.\w+)+(:\w+)?")


def load_package(package_dir: Path = PACKAGE_DIR) -> dict[str, Module]:
    """Every module of the package, with what it imports (eagerly, lazily) and names in strings."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        text = path.read_text()
        name = module_name(path, package_dir)
        modules[name] = Module(name, path, ast.parse(text, str(path)), len(text.splitlines()))
    known = set(modules)
    for module in modules.values():
        for node, in_function in _imports(module.tree.body):
            (module.lazy if in_function else module.eager).update(_targets(node, module, known))
        module.lazy |= _dynamic_imports(module.tree) & known
        module.named = {node.value.partition(":")[0] for node in ast.walk(module.tree)
                        if isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and MODULE_PATH.fullmatch(node.value)}
        module.eager.discard(module.name)
        module.lazy -= module.eager | {module.name}
    return modules


PACKAGE = load_package()


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def in_layer(name: str, layers: tuple[str, ...]) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def functions(tree: ast.Module):
    """(qualified name, node) for every function and method, nested ones too."""
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield name, child
                yield from walk(child, name + ".")
            else:
                yield from walk(child, prefix)
    yield from walk(tree, "")


# ---------------------------------------------------------------------------------------------


def test_the_analysis_finds_every_kind_of_import(tmp_path):
    """The checks below are only as good as the import graph: prove it on a package made here."""
    files = {
        "__init__.py": '"""top"""\n',
        "a/__init__.py": '"""a"""\nfrom . import b\n',
        "a/b.py": "from labctl.a import c, NAME\nimport labctl.d\n",
        "a/c.py": "from ..d import VALUE\ndef f():\n    from labctl.a import b\n",
        "d.py": "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from labctl.a import b\nelse:\n    import labctl.e\n"
                "VALUE = 1\n",
        "e.py": "import importlib\nimportlib.import_module('labctl.a.c')\nARGV = ['-m', 'labctl.d']\n",
    }
    for name, text in files.items():
        (tmp_path / "labctl" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "labctl" / name).write_text(text)
    got = load_package(tmp_path / "labctl")
    assert got["labctl.a"].eager == {"labctl.a.b"}                          # relative, a submodule
    assert got["labctl.a.b"].eager == {"labctl.a", "labctl.a.c", "labctl.d"}  # a module, a name, import
    assert got["labctl.a.c"].eager == {"labctl.d"} and got["labctl.a.c"].lazy == {"labctl.a.b"}
    assert got["labctl.d"].eager == {"labctl.e"}                           # not the TYPE_CHECKING branch
    assert got["labctl.e"].lazy == {"labctl.a.c"} and got["labctl.e"].named == {"labctl.a.c", "labctl.d"}
    assert cycles({n: m.eager for n, m in got.items()}) == [["labctl.a", "labctl.a.b"]]
    assert cycles({n: m.eager | m.lazy for n, m in got.items()}) == [["labctl.a", "labctl.a.b", "labctl.a.c",
                                                                      "labctl.d", "labctl.e"]]


def test_no_import_cycle_not_even_through_imports_inside_functions():
    eager = {name: m.eager for name, m in PACKAGE.items()}
    everything = {name: m.eager | m.lazy for name, m in PACKAGE.items()}
    assert cycles(eager) == [], "modules that import each other when they are imported"
    # Imports inside functions are how `labctl --help` stays fast; a cycle through one still works, but
    # it says two modules lean on each other: the layers should only ever import downwards.
    assert cycles(everything) == [], "modules that import each other, inside functions"


def test_no_module_over_400_lines():
    over = {name: m.lines for name, m in PACKAGE.items()
            if m.lines > MAX_MODULE_LINES and name not in LONG_MODULES}
    assert over == {}, "split these by concern, or add them to LONG_MODULES with the reason"
    stale = [name for name in LONG_MODULES if name not in PACKAGE or PACKAGE[name].lines <= MAX_MODULE_LINES]
    assert stale == [], "allowlisted modules that are gone or short now: take them off the list"


def test_no_function_over_80_lines():
    lengths = {f"{name}:{qualname}": node.end_lineno - node.lineno + 1
               for name, m in PACKAGE.items() for qualname, node in functions(m.tree)}
    over = {key: n for key, n in lengths.items() if n > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS}
    assert over == {}, "split these, or add them to LONG_FUNCTIONS with the reason"
    stale = [key for key in LONG_FUNCTIONS if lengths.get(key, 0) <= MAX_FUNCTION_LINES]
    assert stale == [], "allowlisted functions that are gone or short now: take them off the list"


def test_the_library_never_reaches_the_demos_the_steps_or_the_plots():
    """Not through an import (at module level or inside a function), nor another module in between,
    nor a module path in a string (`python -m labctl.demos.x`, importlib)."""
    graph = {name: m.eager | m.lazy | (m.named & set(PACKAGE)) for name, m in PACKAGE.items()}
    reached = {}
    for start in sorted(name for name in PACKAGE if in_layer(name, LIBRARY)):
        paths, todo = {start: [start]}, deque([start])     # breadth first: the shortest path to each
        while todo:
            current = todo.popleft()
            for nxt in sorted(graph[current] - paths.keys()):
                paths[nxt] = paths[current] + [nxt]
                todo.append(nxt)
        for name, path in paths.items():
            if in_layer(name, NOT_FOR_THE_LIBRARY) and len(path) < len(reached.get(name, path + [""])):
                reached[name] = " -> ".join(path)
    assert reached == {}, "the library reaches these (the shortest way shown)"


def test_every_package_folder_says_what_it_is():
    folders = sorted({path.parent for path in PACKAGE_DIR.rglob("*.py")})
    missing = [str(f.relative_to(PACKAGE_DIR.parent)) for f in folders if not (f / "__init__.py").exists()]
    assert missing == [], "folders of modules without an __init__.py"
    silent = [name for name, m in PACKAGE.items() if m.path.name == "__init__.py"
              and not (ast.get_docstring(m.tree) or "").strip()]
    assert silent == [], "packages without a docstring naming their role"


def test_each_layer_names_its_docker_counterpart_at_the_top():
    """The first paragraph of each layer's docstring: what a reader of the chapter knows it as."""
    unnamed = []
    for layer in LIBRARY + ("labctl.client",):
        if layer in PACKAGE and PACKAGE[layer].path.name == "__init__.py":
            summary = (ast.get_docstring(PACKAGE[layer].tree) or "").split("\n\n")[0]
            if not DOCKER_PARTS.search(summary):
                unnamed.append(f"{layer}: {summary[:80]!r}")
    assert unnamed == []


def test_the_layers_of_the_issue_exist():
    """The folders issue #13 draws: a student who has read the chapter looks for these."""
    for layer in ("client", "daemon", "images", "containers", "network", "runtime", "kernel", "tracing",
                  "steps", "plots", "demos"):
        assert f"labctl.{layer}" in PACKAGE, f"no labctl/{layer}/ package"
