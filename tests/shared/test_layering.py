"""The library's layering, read from the source: no import circle among `shared` modules, `shared`
never names a paper, and each shared constant (scale names, repository root, verdicts) has one owner.
STYLE.md 13 and 14."""
import ast
import re
from pathlib import Path

from shared.claims import VERDICTS
from shared.config import REPO_ROOT, SCALES

PAPERS = sorted({"gan_simclr", "contrad", "gencl", "augmentation_generator", "generative_prior"}
                | {p.name for p in (REPO_ROOT / "papers").iterdir() if (p / "__init__.py").is_file()})
# constant -> the one module that assigns it
OWNERS = {"SCALES": "shared.config", "REPO_ROOT": "shared.config", "VERDICTS": "shared.claims"}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_find_cycle_names_the_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_shared(import_graph):
    """Lazy imports inside functions count: a circle hidden in a function is still a circle."""
    graph = {m: {n for n in import_graph.imports(m) if n.startswith("shared")}
             for m in import_graph.modules("shared")}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module and its classes and functions."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_shared_never_imports_or_names_a_paper(import_graph):
    """No import of `papers`, and no paper package named in code: strings (docstrings aside),
    identifiers, attributes. Comments and docstrings may cite a paper as an example."""
    name = re.compile(r"\b(" + "|".join(PAPERS) + r")\b")
    problems = []
    for module in import_graph.modules("shared"):
        path = import_graph.file(module)
        rel = path.relative_to(REPO_ROOT)
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [f"{rel}:{node.lineno}: imports {m}" for m in modules if m.split(".")[0] == "papers"]
            texts = []
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                texts.append(node.value)
            elif isinstance(node, ast.Name):
                texts.append(node.id)
            elif isinstance(node, ast.Attribute):
                texts.append(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                texts.append(node.name)
            elif isinstance(node, ast.arg):
                texts.append(node.arg)
            problems += [f"{rel}:{node.lineno}: names {m.group(0)!r} in {t!r}" for t in texts
                         if (m := name.search(t))]
    assert not problems, "shared must not name a paper (STYLE 13):\n" + "\n".join(sorted(set(problems)))


def _module_level_assignments(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    names.add(leaf.id)
    return names


def _literal_strings(node: ast.AST) -> frozenset[str] | None:
    """The strings of a tuple / list / set literal made only of strings, else None."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return frozenset(e.value for e in node.elts)
    return None


def test_each_shared_constant_has_one_owner(import_graph):
    """SCALES and REPO_ROOT are assigned only in shared.config, VERDICTS only in shared.claims (in
    shared and papers); nor is the scale or verdict list written out as a literal anywhere else."""
    owners: dict[str, list[str]] = {name: [] for name in OWNERS}
    copies = []
    lists = {frozenset(SCALES): "SCALES", frozenset(VERDICTS): "VERDICTS"}
    for module in import_graph.modules("shared") + import_graph.modules("papers"):
        path = import_graph.file(module)
        tree = ast.parse(path.read_text())
        for name in _module_level_assignments(tree) & set(OWNERS):
            owners[name].append(module)
        for node in ast.walk(tree):
            if (strings := _literal_strings(node)) in lists and module != OWNERS[lists[strings]]:
                copies.append(f"{Path(path).relative_to(REPO_ROOT)}:{node.lineno}: a copy of {lists[strings]}")
    assert owners == {name: [owner] for name, owner in OWNERS.items()}, owners
    assert not copies, "import the constant from its owner instead:\n" + "\n".join(copies)
