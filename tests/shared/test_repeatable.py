"""A stage repeats bit-exactly whatever the shell exports: the thread count is the suite's parameter."""
import os
import subprocess
import sys

import yaml


def _stage(project, out, omp_threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(omp_threads)}
    return subprocess.run([sys.executable, "-m", "papers.gan_simclr.pretrain", "--fakes", "0", "--optimizer", "adam",
                           "--seed", "0", "--out", out], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_smoke_stage_run_twice_writes_identical_bytes(smoke_project, dvc, data_root):
    project = smoke_project(packages=("shared", "papers"), tracking={"backend": "none", "uri": None})
    prepared = dvc(["repro", "subset@cifar10_5k"], project)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    out = project / "run"

    first = _stage(project, "run", omp_threads=2)  # the shell asks for 2 threads; params.yaml says 1
    assert first.returncode == 0, first.stderr[-3000:]
    before = _files(out)
    for path in out.iterdir():
        path.unlink()
    second = _stage(project, "run", omp_threads=1)
    assert second.returncode == 0, second.stderr[-3000:]
    after = _files(out)

    assert set(before) >= {"metrics.json", "config.yaml", "checkpoint.pt"}
    assert set(before) == set(after)
    for name in before:
        assert before[name] == after[name], f"{name} differs between two runs of the same stage"
    assert yaml.safe_load((out / "config.yaml").read_text())["threads"] == 1
