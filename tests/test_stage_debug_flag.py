"""Every stage command DVC runs takes `--debug` (the traceback of a known failure), as shared.cli's
`stage_parser` / `add_debug_argument` give it (issue "Reliability", item 4)."""
import importlib
import re

import pytest

from shared.config import REPO_ROOT

DVC_FILES = [REPO_ROOT / "dvc.yaml", *sorted((REPO_ROOT / "papers").glob("*/dvc.yaml"))]
MODULES = sorted({m for f in DVC_FILES for m in re.findall(r"python -m ([\w.]+)", f.read_text())})


def test_stage_commands_were_found():
    assert {"shared.prepare", "shared.extractor"} <= set(MODULES)


def _help(module: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("module", MODULES)
def test_every_stage_command_takes_debug(module, capsys):
    usage = _help(module, [], capsys)
    # a module with subcommands (`tokenizer train | encode`): each subcommand takes it
    sub = re.match(r"usage: .*? \[-h\] \{([\w,]+)\}", usage)
    for argv in ([[name] for name in sub.group(1).split(",")] if sub else [[]]):
        assert "--debug" in _help(module, argv, capsys), (module, argv)
