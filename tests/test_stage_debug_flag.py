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


@pytest.mark.parametrize("module", MODULES)
def test_every_stage_command_takes_debug(module, capsys):
    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--help"])
    assert done.value.code == 0
    assert "--debug" in capsys.readouterr().out
