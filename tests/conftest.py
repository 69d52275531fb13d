"""Test-wide settings and fixtures: one thread, the data root a user would set, toy data, DVC projects.

Test modules never import each other (pytest runs with ``--import-mode=importlib``): what several
modules need lives here as a fixture.
"""
import ast
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from shared.config import REPO_ROOT

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The offline data root, read through REPRO_DATA_DIR exactly as a user sets it."""
    root = os.environ.get("REPRO_DATA_DIR")
    message = "REPRO_DATA_DIR is not set (the README's test command sets it to ../shared/data)"
    if not root:
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must exercise the real data, never skip it
        pytest.skip(message)
    return Path(root)


# ---- toy data and networks

def _toy_images(n=64, size=16, seed=0):
    """Class-coloured noisy uint8 images: a linear probe can tell the 4 classes apart."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    base = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=torch.float)[y]
    x = base[:, :, None, None] + 30 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 255).to(torch.uint8), y


def _tiny_net(seed=0):
    """A ResNet-18 of width 1/16 and a SimCLR projector 16 -> 8."""
    from shared.models import resnet18, simclr_projector

    torch.manual_seed(seed)
    encoder = resnet18(width=1 / 16)
    return encoder, simclr_projector(encoder.feature_dim, 16, 8)


@pytest.fixture
def toy_images():
    """``toy_images(n=64, size=16, seed=0) -> (uint8 x, y)``."""
    return _toy_images


@pytest.fixture
def tiny_net():
    """``tiny_net(seed=0) -> (encoder, projector)``."""
    return _tiny_net


# ---- SSL methods at toy size

# Head sizes of each registered method for a width-1/16 ResNet-18 (16 features).
TINY_METHOD_CFG = {
    "simclr": {"projection_dim": 8, "hidden_dim": 16},
    "vicreg": {"mlp": "32-32"},
    "byol": {"projector_hidden_size": 32, "projector_output_size": 8, "predictor_hidden_size": 32},
    "mocov2": {"dim": 8, "queue_size": 20, "hidden_dim": 16},
}


def _tiny_method(name, seed=0, **cfg):
    """A registered method around a width-1/16 ResNet-18, encoder built first after seeding."""
    from shared.methods import build_method
    from shared.models import resnet18

    torch.manual_seed(seed)
    return build_method(name, resnet18(width=1 / 16), **{**TINY_METHOD_CFG[name], **cfg})


@pytest.fixture
def tiny_method():
    """``tiny_method(name, seed=0, **cfg) -> SSLMethod`` with toy head sizes (``cfg`` overrides them)."""
    return _tiny_method


class _Stop(RuntimeError):
    """Raised by ``train_tiny``'s on_eval to interrupt a run, as a kill would."""


def _train_tiny(name, out_dir, *, seed=0, init_seed=None, stop_after=None, epochs=3, **cfg):
    """Pre-train a tiny method with the real trainer, loader and views; return (method, result).

    32 toy images in batches of 8 (4 steps per epoch), SimCLR views (global RNG), LARS with
    warm-up and cosine, evaluation and checkpoint every epoch. ``stop_after=e`` raises a
    RuntimeError "stopped after epoch e" once epoch e is trained and evaluated, before its
    checkpoint is written, so a rerun on ``out_dir`` resumes from the end of epoch e - 1.
    ``seed`` orders the loader; ``init_seed`` (default: ``seed``) seeds the initialisation and
    the global RNG, so a resumed run given another one shows that its state came from the checkpoint.
    """
    from shared import checkpoint
    from shared.data import DeviceLoader
    from shared.tracking import NullLogger
    from shared.trainers.ssl import SSLConfig, train_ssl
    from shared.views import SimCLRViewConfig, SimCLRViews

    init_seed = seed if init_seed is None else init_seed
    checkpoint.seed_everything(init_seed)
    method = _tiny_method(name, init_seed, **cfg)
    x, y = _toy_images(32)
    probe = x[:4].float() / 255

    def evaluate(encoder):
        encoder.eval()  # the trainer must put the method back in training mode
        with torch.no_grad():
            return {"feature_mean": encoder(probe).mean().item()}

    def on_eval(epoch, metrics):
        if epoch == stop_after:
            raise _Stop(f"stopped after epoch {epoch}")

    cfg_ = SSLConfig(epochs=epochs, batch_size=8, optimizer="lars", lr=0.1, schedule="cosine", warmup_epochs=1,
                     eval_every=1, log_every=1)
    result = train_ssl(cfg_, method, SimCLRViews(SimCLRViewConfig.from_strength(0.5, blur=False)),
                       DeviceLoader(x, y, batch_size=8, drop_last=True, seed=seed), out_dir=out_dir,
                       logger=NullLogger(), device=torch.device("cpu"), evaluate=evaluate, on_eval=on_eval,
                       progress=False)
    return method, result


@pytest.fixture
def train_tiny():
    """``train_tiny(name, out_dir, *, seed=0, init_seed=None, stop_after=None, epochs=3, **cfg)``.

    Returns ``(method, SSLResult)``.
    """
    return _train_tiny


# ---- DVC projects at smoke scale

def run_dvc(args, cwd, timeout=600):
    """``dvc *args`` in ``cwd`` with this venv's ``python`` first on PATH (the stages call ``python``)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    if env.get("REPRO_DATA_DIR"):  # the stages run in `cwd`, so a relative data root must be made absolute
        env["REPRO_DATA_DIR"] = str(Path(env["REPRO_DATA_DIR"]).resolve())
    return subprocess.run([str(Path(bin_dir) / "dvc"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def dvc():
    """``dvc(args, cwd) -> CompletedProcess``."""
    return run_dvc


FID_CHUNKS = "data/fid_stats/chunks"  # the fid_stats stages' persisted feature chunks (shared/fid_stats.py)


@pytest.fixture(scope="session")
def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", ...; platform.processor() where /proc/cpuinfo has none).

    A training run's numbers are bit-repeatable on one kind of CPU but not across kinds (the kernels torch
    picks differ in rounding, and a few training steps amplify it), so numbers pinned from a pipeline are
    pinned per CPU model."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@pytest.fixture(scope="session")
def shared_dvc_store(tmp_path_factory) -> Path:
    """What the paper pipelines of a test session (of a worker, under pytest-xdist) share: ``cache/``, one
    DVC cache, and ``fid_chunks/``, the first pipeline's Inception feature chunks of the smoke splits."""
    return tmp_path_factory.mktemp("dvc_shared")


@pytest.fixture
def smoke_project(tmp_path, shared_dvc_store):
    """``smoke_project(packages=("shared",), shared_cache=False, **params) -> Path``: a DVC project in
    ``tmp_path``.

    It holds the repository's top-level files and ``packages`` (without outputs or results), and a
    ``params.yaml`` at scale smoke with ``params`` overriding top-level keys.

    With ``shared_cache`` (the paper pipelines) the shared stages are not recomputed in every test: the
    project's DVC cache is the session's (``dvc cache dir --local``, so not in a git clone of the
    project), and a stage another test ran with the same code, data and params is restored from DVC's
    run cache; the fid_stats stages (a persisted output: DVC keeps no run cache for them) start from the
    feature chunks the session's first pipeline saved, which they check against the detector and images
    they were made from, and resume. Tests of the shared stages themselves leave it off.
    """
    made = []

    def make(packages=("shared",), shared_cache=False, **overrides):
        shutil.copy(REPO_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
        for package in packages:
            shutil.copytree(REPO_ROOT / package, tmp_path / package,
                            ignore=shutil.ignore_patterns("__pycache__", "outputs", "results"))
        params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
        params.update(scale="smoke", **overrides)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        assert run_dvc(["init", "--no-scm", "-q"], tmp_path).returncode == 0
        if shared_cache:
            cache = run_dvc(["cache", "dir", "--local", str(shared_dvc_store / "cache")], tmp_path)
            assert cache.returncode == 0, cache.stderr
            if (shared_dvc_store / "fid_chunks").is_dir():
                shutil.copytree(shared_dvc_store / "fid_chunks", tmp_path / FID_CHUNKS)
            made.append(tmp_path)
        return tmp_path

    yield make
    for project in made:  # the first pipeline that computed the chunks leaves them to the next
        if (project / FID_CHUNKS).is_dir() and not (shared_dvc_store / "fid_chunks").exists():
            shutil.copytree(project / FID_CHUNKS, shared_dvc_store / "fid_chunks")


def _git(args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}
    run = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"git {' '.join(args)}: {run.stdout}{run.stderr}"
    return run


@pytest.fixture
def remote_roundtrip(tmp_path_factory):
    """``remote_roundtrip(project, target) -> clone``: a smoke project that has run ``target``, pushed.

    The project (made by ``smoke_project``, DVC without git) becomes a git repository as a user's clone
    of the suite is: code, params, dvc.lock files and the results folders (``cache: false``) in git,
    the cached outputs ignored. It pushes its outputs to a local folder remote (``dvc remote add -d``,
    committed in ``.dvc/config``), is cloned with git, and the clone pulls. Returns the clone.
    """
    def roundtrip(project: Path, target: str) -> Path:
        from dvc.repo import Repo

        with Repo(str(project)) as repo:  # what git must not hold: every cached output
            cached = sorted("/" + Path(o.fs_path).relative_to(project).as_posix()
                            for o in repo.index.outs if o.use_cache)
        (project / ".gitignore").write_text("\n".join(["__pycache__/", "mlflow/", *cached]) + "\n")
        remote = tmp_path_factory.mktemp("dvc_remote")
        for args in (["config", "core.no_scm", "false"], ["remote", "add", "-d", "team", str(remote)]):
            assert run_dvc(args, project).returncode == 0
        _git(["init", "-q"], project)
        _git(["add", "-A"], project)
        _git(["commit", "-q", "-m", "smoke run"], project)
        push = run_dvc(["push", "--with-deps", target], project)
        assert push.returncode == 0, push.stdout[-2000:] + push.stderr[-2000:]
        clone = tmp_path_factory.mktemp("clone") / "repo"
        _git(["clone", "-q", str(project), str(clone)], clone.parent)
        pull = run_dvc(["pull", "--with-deps", target], clone)
        assert pull.returncode == 0, pull.stdout[-2000:] + pull.stderr[-2000:]
        return clone
    return roundtrip


# ---- the project's import graph, read from the source (no module is imported)

class ImportGraph:
    """The project modules under ``root`` (top-level packages ``packages``) and what each imports.

    Every ``import`` / ``from ... import`` in a file counts, at module level or inside a function
    (a lazy import runs too), relative ones resolved; ``from X import a`` is an import of the module
    ``X.a`` when there is one, else of ``X``. Modules outside ``packages`` (the standard library,
    torch, ...) are left out. Module names are dotted (``shared.tracking`` is
    ``shared/tracking/__init__.py``, ``shared.tracking.__main__`` its command line).
    """

    def __init__(self, root: Path, packages=("shared", "papers")):
        self.root, self.packages = Path(root), tuple(packages)
        self._imports: dict[str, set[str]] = {}

    def file(self, module: str) -> Path | None:
        """The file of a project module (``a/b.py`` or ``a/b/__init__.py``), None if it has none."""
        if module.split(".")[0] not in self.packages:
            return None
        base = self.root.joinpath(*module.split("."))
        for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def module(self, path: Path) -> str:
        parts = list(Path(path).resolve().relative_to(self.root.resolve()).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def modules(self, package: str) -> list[str]:
        """Every module of ``package`` (its files, sub-packages included), sorted."""
        return sorted(self.module(p) for p in (self.root / package).rglob("*.py"))

    def trivial(self, module: str) -> bool:
        """A package ``__init__`` holding nothing but a docstring: importing it changes nothing."""
        path = self.file(module)
        body = ast.parse(path.read_text()).body if path is not None and path.name == "__init__.py" else None
        return body is not None and all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                        for s in body)

    def imports(self, module: str) -> set[str]:
        """The project modules ``module`` imports directly."""
        if module not in self._imports:
            path = self.file(module)
            is_package = path is not None and path.name == "__init__.py"
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))) if path else ():
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:  # relative: from the module's package, up level - 1 more
                        package = module.split(".") if is_package else module.split(".")[:-1]
                        package = package[:len(package) - (node.level - 1)]
                        base = ".".join(package + ([base] if base else []))
                    names = [f"{base}.{a.name}" if self.file(f"{base}.{a.name}") else base for a in node.names]
                else:
                    continue
                found.update(n for n in names if self.file(n) is not None)
            self._imports[module] = found - {module}
        return self._imports[module]

    def closure(self, module: str) -> set[str]:
        """``module`` and every project module that running it imports, parent packages included."""
        seen, todo = set(), [module]
        while todo:
            m = todo.pop()
            parents = [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
            for name in [m, *parents]:
                if name not in seen and self.file(name) is not None:
                    seen.add(name)
                    todo.extend(self.imports(name))
        return seen


@pytest.fixture(scope="session")
def import_graph() -> ImportGraph:
    """The repository's :class:`ImportGraph` (``shared`` and ``papers``)."""
    return ImportGraph(REPO_ROOT)


@pytest.fixture
def snapshot():
    """``snapshot(folder) -> {relative path: bytes}`` of every file under ``folder``."""
    def take(folder):
        folder = Path(folder)
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return take


@pytest.fixture
def suite_params(tmp_path):
    """``suite_params(**overrides) -> Path``: the suite's params.yaml at scale smoke, tracking off."""
    def make(**overrides):
        doc = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
        doc.update(scale="smoke", tracking={"backend": "none", "uri": None}, **overrides)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path
    return make


@pytest.fixture
def restore_threads():
    """Put torch's thread count back after a test that starts a stage (stages set it)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ---- an easy dataset and a tiny in-domain extractor trained on it (extractor and FID tests)

def _easy_dataset(per_class: int, seed: int, side: int = 8):
    """3 classes told apart by their brightest colour channel, plus noise (uint8, int64)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_class)
    x = rng.integers(0, 90, size=(len(y), 3, side, side))
    x[np.arange(len(y)), y] += 140
    return x.astype(np.uint8), y.astype(np.int64)


def _tiny_extractor_config():
    from shared.extractor import ExtractorConfig

    return ExtractorConfig(width=0.125, epochs=4, batch_size=32, lr=0.05, warmup_epochs=1.0, crop_padding=1,
                           eval_batch_size=64)


@pytest.fixture(scope="session")
def easy_dataset():
    """``easy_dataset(per_class, seed, side=8) -> (x uint8 (N, 3, side, side), y)``."""
    return _easy_dataset


@pytest.fixture(scope="session")
def tiny_extractor_config():
    return _tiny_extractor_config()


@pytest.fixture(scope="session")
def trained_extractor():
    """``(extractor, (x_test, y_test))``: the tiny config trained once on the easy dataset."""
    from shared.extractor import train_extractor

    x, y = _easy_dataset(40, seed=0)
    test = _easy_dataset(20, seed=1)
    return train_extractor(x, y, _tiny_extractor_config(), "cpu", progress=False, test=test), test


# ---- a run killed in a given step

class KilledAtStep(Exception):
    """Raised by ``kill_at``'s logger: the run stops there as a killed process would."""


@pytest.fixture
def kill_at():
    """``kill_at(step) -> logger``: a NullLogger that raises ``kill_at.error`` when the metrics of ``step`` are
    logged, i.e. a run killed during that step (after the checkpoint of the step before)."""
    from shared.tracking import NullLogger

    class KillAt(NullLogger):
        def __init__(self, step):
            super().__init__()
            self.step = step

        def log_metrics(self, metrics, step=None):
            if step == self.step:
                raise KilledAtStep(f"killed in step {step}")
            super().log_metrics(metrics, step)

    def make(step):
        return KillAt(step)

    make.error = KilledAtStep
    return make
