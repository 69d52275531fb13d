"""Errors a user can read (issue "Reliability", item 4): a diverged run, a full disk, an unwritable
output folder and a corrupt checkpoint end a stage with one line on stderr naming the step / file /
folder and what to do, exit code 2 and no traceback; --debug or REPRO_DEBUG=1 shows the traceback.
The atomic writers leave no temp file and name the final path."""
import errno
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from shared import checkpoint
from shared import data as shared_data
from shared import io as shared_io
from shared import prepare as prepare_cli
from shared.cli import run_stage
from shared.config import REPO_ROOT
from shared.data import DeviceLoader
from shared.tracking import NullLogger
from shared.trainers.ssl import SSLConfig, train_ssl


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch):
    monkeypatch.delenv("REPRO_DEBUG", raising=False)
    monkeypatch.setattr(shared_data, "tqdm", lambda items, **kw: items)  # progress bars also go to stderr


def _one_line(capsys) -> str:
    """stderr of what just ran, checked to be exactly one `error: ...` line and no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- a diverged run

def test_a_non_finite_loss_is_one_line_naming_the_step_and_debug_shows_the_traceback(
        tmp_path, capsys, monkeypatch, tiny_method, toy_images):
    x, y = toy_images(16)

    def nan_views(batch, index):
        v = batch.float() / 255
        return [v * float("nan"), v]

    def train():
        train_ssl(SSLConfig(epochs=1, batch_size=8), tiny_method("simclr"), nan_views, DeviceLoader(x, y, 8),
                  out_dir=tmp_path, logger=NullLogger(), device=torch.device("cpu"), progress=False)

    assert run_stage(train) == 2
    err = _one_line(capsys)
    assert err.startswith("error: non-finite loss nan at step 1 (epoch 1)") and "lower the learning rate" in err

    assert run_stage(train, debug=True) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "NonFiniteLossError" in err
    assert err.splitlines()[-1].startswith("error: non-finite loss nan at step 1")

    monkeypatch.setenv("REPRO_DEBUG", "1")
    assert run_stage(train) == 2
    assert "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------- a full disk

class _HalfThenFull:
    """A file that takes half of what it is given, then fails as a full disk does."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        data = memoryview(data).cast("B")
        self.f.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _full_disk(monkeypatch):
    """Every file shared.io opens from now on fills the disk halfway through its first write."""
    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake.fdopen = lambda fd, *a, **kw: _HalfThenFull(os.fdopen(fd, *a, **kw))
    monkeypatch.setattr(shared_io, "os", fake)


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_old_one_and_names_it(tmp_path, monkeypatch, capsys):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"step": 1})
    _full_disk(monkeypatch)
    with pytest.raises(OSError) as info:
        checkpoint.save(path, {"step": 2, "w": torch.zeros(1000)})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)  # the final path, not the temp

    assert run_stage(lambda: checkpoint.save(path, {"step": 2, "w": torch.zeros(1000)})) == 2
    monkeypatch.undo()
    err = _one_line(capsys)
    assert f"No space left on device while writing {path}: free space" in err and ".tmp" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
    assert checkpoint.load(path)["step"] == 1


def _mnist_params(tmp_path):
    tree = tmp_path / "mnist"
    for split in ("train", "test"):
        for d in range(10):
            (tree / split / str(d)).mkdir(parents=True)
            Image.fromarray(np.full((28, 28), 20 * d, np.uint8)).save(tree / split / str(d) / "0.png")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"scale": "smoke", "tracking": {"backend": "none"},
                                      "data": {"paths": {"mnist": str(tree)}}}))
    return params


def test_a_full_disk_while_preparing_names_the_output_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    params, out = _mnist_params(tmp_path), tmp_path / "prepared"
    _full_disk(monkeypatch)
    argv = ["dataset", "mnist", "--params", str(params), "--out", str(out)]
    assert prepare_cli.main(argv) == 2
    err = _one_line(capsys)
    assert f"while writing {out / 'train.npz'}: free space" in err
    assert not out.exists()  # the folder it made is gone again, with no temp file in it

    assert prepare_cli.main([*argv, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("error: No space left on device")


def test_a_failed_rename_removes_the_temp_file_and_never_mixes_old_and_new_outputs(tmp_path, monkeypatch):
    params, out = _mnist_params(tmp_path), tmp_path / "prepared"
    assert prepare_cli.main(["dataset", "mnist", "--params", str(params), "--out", str(out)]) == 0
    calls = []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src, None, dst)
        os.replace(src, dst)

    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake.replace = replace_then_fail
    monkeypatch.setattr(shared_io, "os", fake)
    with pytest.raises(OSError) as info:
        shared_data.prepare("mnist", out, path=tmp_path / "mnist", limit_per_class=1, progress=False)
    assert info.value.filename == str(calls[1])  # the final file, not the temp it was renaming
    # not a new train.npz beside an old test.npz and meta.json (config.yaml is the stage's, not prepare's)
    assert [p.name for p in out.iterdir()] == ["config.yaml"]


# ---------------------------------------------------------------- an unwritable output folder

def _mode_bits_stop_writes(folder) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except PermissionError:
        return True
    (folder / ".probe").unlink()
    return False  # root (as in this project's containers) writes through 0o500


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_an_unwritable_output_folder_is_one_line_naming_file_and_folder(tmp_path, monkeypatch, capsys, code):
    folder = tmp_path / "outputs"
    folder.mkdir()
    folder.chmod(0o500)
    target = folder / "metrics.json"
    if code == errno.EROFS or not _mode_bits_stop_writes(folder):
        # simulate what the kernel would say, as mkstemp's open would raise it (naming the temp file)
        def refuse(dir, prefix, suffix):
            raise OSError(code, os.strerror(code), os.path.join(dir, prefix + "a1b2c3" + suffix))
        monkeypatch.setattr(shared_io, "tempfile", types.SimpleNamespace(mkstemp=refuse))
    try:
        with pytest.raises(OSError) as info:
            shared_io.atomic_write_text(target, "{}")
        assert info.value.errno == code and info.value.filename == str(target)
        assert isinstance(info.value, PermissionError) == (code == errno.EACCES)
        assert run_stage(lambda: shared_io.atomic_write_text(target, "{}")) == 2
        err = _one_line(capsys)
        assert str(target) in err and f"{folder} is on a read-only" in err if code == errno.EROFS else \
            f"permission denied: {target}: this user may not write in {folder}" in err
        assert ".tmp" not in err and "a1b2c3" not in err
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


# ---------------------------------------------------------------- a corrupt checkpoint

def test_a_corrupt_checkpoint_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x80\x02 not a checkpoint\nsecond line")
    assert run_stage(lambda: checkpoint.load(path)) == 2
    err = _one_line(capsys)
    assert f"error: checkpoint {path} is corrupt or unreadable" in err and "delete it to restart" in err


def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError):
        run_stage(lambda: {}["missing"])
    with pytest.raises(OSError):  # an I/O error that is neither a full disk nor a permission
        run_stage(lambda: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error", "x")))


def test_the_prepare_command_shows_the_traceback_with_debug(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"scale": "smoke", "tracking": {"backend": "none"},
                                      "data": {"paths": {"cifar10": str(tmp_path / "nowhere")}}}))
    cmd = [sys.executable, "-m", "shared.prepare", "dataset", "cifar10", "--params", str(params),
           "--out", str(tmp_path / "o"), "--debug"]
    env = {k: v for k, v in os.environ.items() if k != "REPRO_DEBUG"}
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert run.returncode == 2 and run.stderr.startswith("Traceback") and "DataNotFoundError" in run.stderr
