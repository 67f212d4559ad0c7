"""The library's layout stays readable: subpackages in layers, no import cycle, short units.

Read statically (ast), so every import counts, including the lazy ones inside functions.
"""
import ast
import os
from collections import defaultdict

import pytest

from conftest import INCLUDE, ROOT

LIBRARY = os.path.join(INCLUDE, "depth_estimation")
NODES = os.path.join(ROOT, "packages", "depth_estimation", "src")
# Lowest layer first: a subpackage may import itself and the ones before it, never the ones after.
LAYERS = ["io", "geometry", "models", "runtime", "framepath", "evaluation", "distill", "tools"]
# distill and evaluation are side by side: neither imports the other.
SIDE_BY_SIDE = {("evaluation", "distill"), ("distill", "evaluation")}
# Top-level modules: the shared options (imported by every layer) and the `python3 -m` command names.
TOP_LEVEL = {"__init__", "options", "export", "quantize", "weights"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_LINE = 400, 80, 110


def _modules():
    for dirpath, _dirs, files in os.walk(LIBRARY):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, INCLUDE)[:-3].replace(os.sep, ".")
                yield rel[:-len(".__init__")] if rel.endswith(".__init__") else rel, path


def _imports(module, path):
    """The depth_estimation modules ``module`` imports (absolute or relative, anywhere in the file)."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update("%s.%s" % (base, a.name) for a in node.names)
    known = dict(_modules())
    return {m for m in found if m in known and m != module}


def _layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


GRAPH = {m: _imports(m, p) for m, p in _modules()}


def test_every_module_sits_in_a_subpackage_by_responsibility():
    stray = [m for m in GRAPH if _layer(m) is None and m != "depth_estimation"
             and m.split(".")[-1] not in TOP_LEVEL]
    assert not stray, "modules outside the subpackages: %s" % stray
    assert {_layer(m) for m in GRAPH} - {None} == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_each_subpackage_says_what_lives_there_and_what_it_may_import(layer):
    doc = ast.get_docstring(ast.parse(open(os.path.join(LIBRARY, layer, "__init__.py")).read()))
    assert doc and len(doc.split()) >= 25 and "import" in doc.lower(), layer


def test_dependencies_point_one_way():
    wrong = []
    for module, imported in GRAPH.items():
        src = _layer(module)
        for target in imported:
            dst = _layer(target)
            if src is None or dst is None or src == dst:
                continue
            if LAYERS.index(dst) > LAYERS.index(src) or (src, dst) in SIDE_BY_SIDE:
                wrong.append("%s -> %s" % (module, target))
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_options_import_nothing_of_the_package():
    assert not GRAPH["depth_estimation.options"]


def test_no_import_cycle():
    state, stack, cycles = defaultdict(int), [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH.get(m, ())):
            if state[n] == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif state[n] == 0:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if state[m] == 0:
            visit(m)
    assert not cycles, "import cycles: %s" % [" -> ".join(c) for c in cycles]


def _sources():
    for _module, path in _modules():
        yield path
    for name in sorted(os.listdir(NODES)):
        if name.endswith(".py"):
            yield os.path.join(NODES, name)


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: os.path.relpath(p, ROOT))
def test_readable_units(path):
    text = open(path).read()
    lines = text.splitlines()
    assert len(lines) <= MAX_MODULE_LINES, "%d lines" % len(lines)
    long_lines = [i for i, line in enumerate(lines, 1) if len(line) > MAX_LINE]
    assert not long_lines, "lines over %d characters: %s" % (MAX_LINE, long_lines)
    long_functions = ["%s (%d lines)" % (n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long_functions, "functions over %d lines: %s" % (MAX_FUNCTION_LINES, long_functions)


def test_test_fixtures_are_not_shipped():
    assert not os.path.exists(os.path.join(LIBRARY, "testing.py"))


# Library code whose only callers are tests, kept on purpose (name: why).
TEST_ONLY_KEPT = {
    "hf_to_original": "the inverse of load_original: the conversion's round-trip test needs it",
}


def _package_sources():
    """The text of every non-test source the package ships: library, nodes, scripts, launch files."""
    top = os.path.join(ROOT, "packages", "depth_estimation")
    texts = {}
    for dirpath, _dirs, files in os.walk(top):
        if os.sep + "test" in dirpath[len(top):]:
            continue
        for name in files:
            if name.endswith((".py", ".launch", ".cfg", ".txt")) or "scripts" in dirpath:
                path = os.path.join(dirpath, name)
                try:
                    texts[path] = open(path).read()
                except UnicodeDecodeError:
                    continue
    return texts


def test_no_library_function_lives_only_for_the_tests():
    """A top-level function or class, or a method, that no package source (other than its own
    definition) names is dead code or test-only code: delete it or move it to the tests."""
    import re

    texts = _package_sources()
    unused = []
    for _module, path in _modules():
        tree = ast.parse(texts[path])
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        defs += [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body
                 if isinstance(m, ast.FunctionDef) and not m.name.startswith("__")]
        for node in defs:
            word = re.compile(r"\b%s\b" % re.escape(node.name))
            uses = sum(len(word.findall(text)) for text in texts.values())
            if uses <= 1 and node.name not in TEST_ONLY_KEPT:
                unused.append("%s: %s" % (os.path.relpath(path, INCLUDE), node.name))
    assert not unused, "used by no package source: %s" % ", ".join(sorted(unused))
