"""Every DVC stage lists the project code it runs in its `deps` (STYLE.md 7), so a change to a module a
stage imports reruns that stage. Read from the source and the YAML; DVC is not called.

For every stage of the top-level dvc.yaml and of papers/*/dvc.yaml (each `foreach` item and `matrix`
point expanded), the modules its command runs (`python -m X`, `python path.py`) and every project
module they import, transitively (lazy imports inside functions too; a package's `__init__.py` when
it holds more than a docstring), must be covered by a dep: the file itself or a folder above it.
"""
import itertools
import re
import shlex
from pathlib import Path

import pytest
import yaml

from shared.config import REPO_ROOT

DVC_FILES = [REPO_ROOT / "dvc.yaml", *sorted((REPO_ROOT / "papers").glob("*/dvc.yaml"))]
TEMPLATE = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def _expand(name: str, stage: dict) -> list[tuple[str, dict]]:
    """The concrete stages of a `foreach` / `matrix` stage (DVC's `name@key` names), else itself."""
    if "foreach" in stage:
        items = stage["foreach"]
        pairs = items.items() if isinstance(items, dict) else ((str(i), i) for i in items)
        return [(f"{name}@{key}", _substitute(stage["do"], {"item": item, "key": key})) for key, item in pairs]
    if "matrix" in stage:
        axes = stage["matrix"]
        body = {k: v for k, v in stage.items() if k != "matrix"}
        points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
        return [(f"{name}@{'-'.join(map(str, p.values()))}", _substitute(body, {"item": p})) for p in points]
    return [(name, stage)]


def _substitute(node, context: dict):
    """`${item}`, `${item.x}`, `${key}` filled in from `context`; other templates (`${scale}`) kept."""
    if isinstance(node, dict):
        return {_substitute(k, context): _substitute(v, context) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, context) for v in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match) -> str:
        head, *rest = match.group(1).split(".")
        if head not in context:
            return match.group(0)
        found = context[head]
        for part in rest:
            found = found[part]
        return str(found)

    return TEMPLATE.sub(value, node)


def _entry_points(cmd, wdir: Path, graph) -> list[str]:
    """The project modules a stage command runs: `python -m X` and `python path.py`, in any of its
    `&&`-joined commands."""
    modules = []
    for line in cmd if isinstance(cmd, list) else [cmd]:
        words = shlex.split(line)
        for i, word in enumerate(words[:-1]):
            if not re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word):
                continue
            if words[i + 1] == "-m" and i + 2 < len(words):
                module = words[i + 2]
                if graph.file(f"{module}.__main__") is not None:
                    module = f"{module}.__main__"  # `python -m package` runs its __main__
                if graph.file(module) is not None:
                    modules.append(module)
            elif words[i + 1].endswith(".py") and (wdir / words[i + 1]).is_file():
                modules.append(graph.module(wdir / words[i + 1]))
    return modules


def _stages():
    for dvc_file in DVC_FILES:
        for name, stage in (yaml.safe_load(dvc_file.read_text()).get("stages") or {}).items():
            for concrete, body in _expand(name, stage):
                yield dvc_file, concrete, body


def _missing(dvc_file: Path, body: dict, graph) -> tuple[list[str], list[str]]:
    """(entry modules, code files the stage runs that no dep covers), paths relative to its wdir."""
    wdir = (dvc_file.parent / body.get("wdir", ".")).resolve()
    if wdir != REPO_ROOT.resolve():  # modules resolve from the repository, where `python -m` must run
        pytest.fail(f"{dvc_file.relative_to(REPO_ROOT)}: wdir {wdir} is not the repository root")
    deps = [(wdir / (d if isinstance(d, str) else next(iter(d)))).resolve() for d in body.get("deps") or []]
    entries = _entry_points(body.get("cmd", ""), wdir, graph)
    needed = {graph.file(m) for e in entries for m in graph.closure(e) if not graph.trivial(m)}
    missing = sorted(f.relative_to(wdir).as_posix() for f in needed
                     if not any(f == d or f.is_relative_to(d) for d in deps))
    return entries, missing


def test_every_stage_lists_the_code_it_imports(import_graph):
    problems, checked = {}, 0
    for dvc_file, stage, body in _stages():
        entries, missing = _missing(dvc_file, body, import_graph)
        checked += bool(entries)
        if missing:  # matrix points share their code: report each stage once
            where = f"{dvc_file.relative_to(REPO_ROOT)} stage {stage.split('@')[0]} ({', '.join(entries)})"
            problems.setdefault(where, missing)
    assert checked, "no stage runs project code: the command parser found nothing"
    assert not problems, "stages whose deps miss code they run:\n" + "\n".join(
        f"{where}: add {', '.join(files)}" for where, files in problems.items())


def test_the_checker_expands_templates_and_reads_commands(import_graph, tmp_path):
    stage = {"matrix": {"a": [1, 2], "b": ["x"]}, "cmd": "python -m shared.prepare ${item.a} ${item.b} ${scale}",
             "deps": ["data/${item.a}"]}
    assert [(n, s["cmd"], s["deps"]) for n, s in _expand("s", stage)] == [
        ("s@1-x", "python -m shared.prepare 1 x ${scale}", ["data/1"]),
        ("s@2-x", "python -m shared.prepare 2 x ${scale}", ["data/2"])]
    each = {"foreach": {"k1": {"d": "c"}}, "do": {"cmd": "echo ${key} ${item.d}"}}
    assert _expand("f", each) == [("f@k1", {"cmd": "echo k1 c"})]
    assert _entry_points(["python -m shared.tracking rebuild && .venv/bin/python shared/prepare.py x"],
                         REPO_ROOT, import_graph) == ["shared.tracking.__main__", "shared.prepare"]
    # a stage without its imports' files is caught, a folder dep covers what is under it
    dvc_file = REPO_ROOT / "dvc.yaml"
    _, missing = _missing(dvc_file, {"cmd": "python -m shared.prepare", "deps": ["shared/prepare.py"]},
                          import_graph)
    assert "shared/data.py" in missing and "shared/prepare.py" not in missing
    assert _missing(dvc_file, {"cmd": "python -m shared.prepare", "deps": ["shared"]}, import_graph)[1] == []
