"""Every DVC stage depends on the params it reads, and only on those: a change to a key a stage reads
reruns it, a change to any other key leaves it up to date.

The stages are DVC's own: each `dvc.yaml` resolved by DVC (foreach, matrix, `${scale}`) in a copy of
the project's YAML at each scale. What a stage reads is the table `READS` below: the suite keys and,
per params section, the config class the stage module builds from it (its fields, or the few it
uses; a dict field read at one key, such as `pretrain.optimizers.<the --optimizer of the command>`).
For every stage and scale:

- each declared key exists in its params file (else DVC stops: "Parameters ... are missing");
- the declared keys cover every field read and every override of it under `scales.<scale>`;
- no declared key reaches a value the stage does not read. A scale's overrides may be declared for
  a whole section (`scales.<scale>.pretrain`): a scalar override cannot be declared where a scale
  does not set it, and `{}` placeholders exist only for mappings.

The DVC tests check that `dvc status` says the same (`dvc repro --dry` for what a paper prepares).
"""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from papers.augmentation_generator import config as augmentation_generator
from papers.generative_prior import config as generative_prior
from papers.generative_prior.ebm import EBMConfig, LangevinConfig
from papers.generative_prior.pretrain import PretrainConfig as GPPretrainConfig
from papers.contrad.config import EvaluateConfig, TrainStageConfig
from papers.gan_simclr.config import GANStageConfig, GenerateConfig, PretrainConfig
from papers.gencl.cost import CostConfig as GenCLCostConfig
from papers.gencl.evaluate import EvaluateConfig as GenCLEvaluateConfig
from papers.gencl.icgan import ICGANConfig
from papers.gencl.inpaint import InpainterStageConfig, MaskAugmentConfig
from papers.gencl.pretrain import PretrainConfig as GenCLPretrainConfig
from papers.gencl.tokenizer import TokenizerConfig
from shared.config import REPO_ROOT, SCALES, DataConfig
from shared.extractor import ExtractorConfig
from shared.prepare import PrepareConfig

SUITE = "params.yaml"
GAN_SIMCLR = "papers/gan_simclr/params.yaml"
CONTRAD = "papers/contrad/params.yaml"
AUGGEN = "papers/augmentation_generator/params.yaml"
GP = "papers/generative_prior/params.yaml"
GENCL = "papers/gencl/params.yaml"
DVC_FILES = ["dvc.yaml", "papers/gan_simclr/dvc.yaml", "papers/contrad/dvc.yaml", "papers/augmentation_generator/dvc.yaml",
             "papers/generative_prior/dvc.yaml", "papers/gencl/dvc.yaml"]
PARAMS_FILES = [SUITE, GAN_SIMCLR, CONTRAD, AUGGEN, GP, GENCL]
SEEDED = ("scale", "seed", "device", "threads")  # a stage whose RNG (loader order, init) is seeded by `seed`
UNSEEDED = ("scale", "device", "threads")


@dataclasses.dataclass(frozen=True)
class Section:
    """A params section a stage builds a config class from."""
    file: str
    name: str
    cls: type
    only: tuple[str, ...] | None = None  # the fields the stage uses (None: every field)
    keyed: tuple[tuple[str, str], ...] = ()  # (dict field, a pattern whose group finds its key in the command)

    def paths(self, cmd: str) -> list[str]:
        keys = {field: re.search(pattern, cmd).group(1) for field, pattern in self.keyed}
        fields = [f.name for f in dataclasses.fields(self.cls) if self.only is None or f.name in self.only]
        return [f"{self.name}.{f}" + (f".{keys[f]}" if f in keys else "") for f in fields]


# stage (DVC's name without its @item) -> (suite keys of params.yaml, sections)
READS = {
    # data.download_dir is read too, but where a download is cached is not what is prepared
    "prepare": (("scale",), [Section(SUITE, "data", DataConfig, only=("paths",), keyed=(("paths", r"dataset (\w+)"),)),
                             Section(SUITE, "prepare", PrepareConfig, only=("limit_per_class",))]),
    "subset": (("scale",), [
        Section(SUITE, "prepare", PrepareConfig, only=("subsets",), keyed=(("subsets", r"subset (\w+)"),))]),
    "extractor": (UNSEEDED, [Section(SUITE, "extractor", ExtractorConfig)]),
    "inception": ((), []),  # the detector fetch reads no params
    "fid_stats": (UNSEEDED, []),  # threads and device from the suite; scale names its chunk folder
    "fid_validation": (UNSEEDED, []),  # device from the suite; scale names its output
    "papers/gan_simclr/dvc.yaml:train_gan": (SEEDED, [Section(GAN_SIMCLR, "gan", GANStageConfig)]),
    # generate builds G from the architecture alone; its samples are seeded by `generate.seed`
    "papers/gan_simclr/dvc.yaml:generate": (UNSEEDED, [
        Section(GAN_SIMCLR, "gan", GANStageConfig, only=("architecture",)),
        Section(GAN_SIMCLR, "generate", GenerateConfig)]),
    "papers/gan_simclr/dvc.yaml:pretrain_real": (SEEDED, [
        Section(GAN_SIMCLR, "pretrain", PretrainConfig, keyed=(("optimizers", r"--optimizer (\w+)"),))]),
    "papers/gan_simclr/dvc.yaml:pretrain": (SEEDED, [
        Section(GAN_SIMCLR, "pretrain", PretrainConfig, keyed=(("optimizers", r"--optimizer (\w+)"),))]),
    "papers/gan_simclr/dvc.yaml:report": ((), []),
    # one matrix over the methods: it reads every method's knobs (diffaugment_policy, temperature, ...)
    "papers/contrad/dvc.yaml:train": (SEEDED, [
        Section(CONTRAD, "train", TrainStageConfig, keyed=(("architectures", r"--architecture (\w+)"),))]),
    # D is built from the architecture entry of the run it evaluates (--run .../<architecture>_...), then loaded
    "papers/contrad/dvc.yaml:evaluate": (UNSEEDED, [
        Section(CONTRAD, "train", TrainStageConfig, only=("architectures",),
                keyed=(("architectures", r"--run \S+/([a-z0-9]+)_"),)),
        Section(CONTRAD, "evaluate", EvaluateConfig)]),
    # Table 1's StyleGAN2 block: the same commands with --architecture stylegan2 (its own matrix of methods)
    "papers/contrad/dvc.yaml:train_stylegan2": (SEEDED, [
        Section(CONTRAD, "train", TrainStageConfig, keyed=(("architectures", r"--architecture (\w+)"),))]),
    "papers/contrad/dvc.yaml:evaluate_stylegan2": (UNSEEDED, [
        Section(CONTRAD, "train", TrainStageConfig, only=("architectures",),
                keyed=(("architectures", r"--run \S+/([a-z0-9]+)_"),)),
        Section(CONTRAD, "evaluate", EvaluateConfig)]),
    "papers/contrad/dvc.yaml:report": ((), []),
    # augmentation_generator: prepare and evaluate draw nothing from the suite seed (data.split_seed, data.dots.seed,
    # evaluate.linear.seed); the training stages are seeded by it
    "papers/augmentation_generator/dvc.yaml:prepare": (UNSEEDED, [
        Section(AUGGEN, "data", augmentation_generator.DataConfig)]),
    "papers/augmentation_generator/dvc.yaml:pretrain": (SEEDED, [
        Section(AUGGEN, "runs", augmentation_generator.RunsConfig),
        Section(AUGGEN, "pretrain", augmentation_generator.PretrainConfig)]),
    "papers/augmentation_generator/dvc.yaml:game": (SEEDED, [
        Section(AUGGEN, "runs", augmentation_generator.RunsConfig),
        Section(AUGGEN, "game", augmentation_generator.GameConfig)]),
    "papers/augmentation_generator/dvc.yaml:retrain": (SEEDED, [
        Section(AUGGEN, "runs", augmentation_generator.RunsConfig),
        Section(AUGGEN, "retrain", augmentation_generator.RetrainConfig)]),
    "papers/augmentation_generator/dvc.yaml:evaluate_pretrained": (UNSEEDED, [
        Section(AUGGEN, "runs", augmentation_generator.RunsConfig),
        Section(AUGGEN, "evaluate", augmentation_generator.EvaluateConfig)]),
    "papers/augmentation_generator/dvc.yaml:evaluate": (UNSEEDED, [
        Section(AUGGEN, "runs", augmentation_generator.RunsConfig),
        Section(AUGGEN, "evaluate", augmentation_generator.EvaluateConfig)]),
    "papers/augmentation_generator/dvc.yaml:report": ((), []),
    # generative_prior: prepare draws nothing from the suite seed (data.subset_seed); the Langevin views' noise is a
    # function of (suite seed, row, step); the pre-training stage also reads `langevin` (a run's chain must run)
    "papers/generative_prior/dvc.yaml:prepare": (UNSEEDED, [Section(GP, "data", generative_prior.DataConfig)]),
    "papers/generative_prior/dvc.yaml:train_ebm": (SEEDED, [Section(GP, "ebm", EBMConfig)]),
    "papers/generative_prior/dvc.yaml:langevin": (SEEDED, [
        Section(GP, "langevin", LangevinConfig, keyed=(("chains", r"--chain (\w+)"),))]),
    "papers/generative_prior/dvc.yaml:train_gan": (SEEDED, [Section(GP, "gan", generative_prior.GANStageConfig)]),
    "papers/generative_prior/dvc.yaml:pretrain": (SEEDED, [
        Section(GP, "runs", generative_prior.RunsConfig),
        Section(GP, "pretrain", GPPretrainConfig, keyed=(("runs", r"--run (\w+)"),)),
        Section(GP, "langevin", LangevinConfig, only=("chains", "run_chains")),
        Section(GP, "gan", generative_prior.GANStageConfig, only=("discriminator", "width", "z_dim"))]),
    "papers/generative_prior/dvc.yaml:report": ((), []),
    # gencl: encoding tokens and the IC-GAN's features are deterministic; the noise augmentation's z is seeded by
    # icgan.augment.seed and the row; the in-painting's draws by the suite seed and the row
    "papers/gencl/dvc.yaml:tokenizer": (SEEDED, [Section(GENCL, "tokenizer", TokenizerConfig)]),
    "papers/gencl/dvc.yaml:tokens": (UNSEEDED, []),
    "papers/gencl/dvc.yaml:inpainter": (SEEDED, [Section(GENCL, "inpainter", InpainterStageConfig)]),
    "papers/gencl/dvc.yaml:mask_augment": (SEEDED, [Section(GENCL, "mask_augment", MaskAugmentConfig)]),
    "papers/gencl/dvc.yaml:pretrain_baseline": (SEEDED, [
        Section(GENCL, "runs", generative_prior.RunsConfig), Section(GENCL, "pretrain", GenCLPretrainConfig)]),
    "papers/gencl/dvc.yaml:icgan_features": (UNSEEDED, [Section(GENCL, "icgan", ICGANConfig)]),
    "papers/gencl/dvc.yaml:icgan_train": (SEEDED, [Section(GENCL, "icgan", ICGANConfig)]),
    "papers/gencl/dvc.yaml:noise_augment": (UNSEEDED, [Section(GENCL, "icgan", ICGANConfig)]),
    "papers/gencl/dvc.yaml:pretrain_noise": (SEEDED, [
        Section(GENCL, "runs", generative_prior.RunsConfig), Section(GENCL, "pretrain", GenCLPretrainConfig)]),
    "papers/gencl/dvc.yaml:pretrain_mask": (SEEDED, [
        Section(GENCL, "runs", generative_prior.RunsConfig), Section(GENCL, "pretrain", GenCLPretrainConfig)]),
    "papers/gencl/dvc.yaml:evaluate": (SEEDED, [
        Section(GENCL, "runs", generative_prior.RunsConfig), Section(GENCL, "evaluate", GenCLEvaluateConfig)]),
    "papers/gencl/dvc.yaml:cost": (SEEDED, [Section(GENCL, "cost", GenCLCostConfig)]),
    "papers/gencl/dvc.yaml:report": ((), []),
    # the alias stages (`dvc repro papers/<paper>`) read no params: only the results folder at ${scale}
    "papers/gan_simclr": ((), []),
    "papers/contrad": ((), []),
    "papers/augmentation_generator": ((), []),
    "papers/generative_prior": ((), []),
    "papers/gencl": ((), []),
}


# ---- the params files as dotted paths

def _get(doc, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            raise KeyError(path)
        doc = doc[part]
    return doc


def _leaves(doc, path: str) -> list[str]:
    """Dotted paths of the values under ``path`` (a scalar, a list or an empty mapping is a leaf)."""
    try:
        value = _get(doc, path)
    except KeyError:
        return []
    if isinstance(value, dict) and value:
        return [leaf for k in value for leaf in _leaves(doc, f"{path}.{k}")]
    return [path]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


# ---- DVC's view of the stages, at each scale

def _project(root: Path, scale: str) -> Path:
    """The YAML of the project (dvc files, params files) in ``root``, at ``scale``, as a DVC project."""
    from dvc.repo import Repo

    for name in DVC_FILES + PARAMS_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, root / name)
    suite = yaml.safe_load((root / SUITE).read_text())
    (root / SUITE).write_text(yaml.safe_dump({**suite, "scale": scale}))
    Repo.init(str(root), no_scm=True)
    return root


def _name(stage, root: Path) -> str:
    """DVC's name of ``stage`` as the CLI gives it from the project root (`path/dvc.yaml:name`)."""
    dvc_file = Path(stage.dvcfile.path).relative_to(root).as_posix()
    return stage.name if dvc_file == "dvc.yaml" else f"{dvc_file}:{stage.name}"


def _declared(root: Path) -> dict[str, tuple[str, dict[str, list[str]]]]:
    """{stage: (its command, {params file: declared keys})} as DVC resolves them in ``root``."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    out = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            keys = {Path(d.fs_path).relative_to(root).as_posix(): list(d.params)
                    for d in stage.deps if isinstance(d, ParamsDependency)}
            out[_name(stage, root)] = (stage.cmd, keys)
    return out


@pytest.fixture(scope="module")
def stages_at_scale(tmp_path_factory):
    """{scale: (params files' content, DVC's stages)} for every scale."""
    found = {}
    for scale in SCALES:
        root = _project(tmp_path_factory.mktemp(f"params_{scale}"), scale)
        docs = {name: yaml.safe_load((root / name).read_text()) for name in PARAMS_FILES}
        found[scale] = docs, _declared(root)
    return found


def _problems(stage: str, cmd: str, declared: dict[str, list[str]], docs: dict, scale: str) -> list[str]:
    suite_keys, sections = READS[stage.split("@")[0]]
    reads: dict[str, list[str]] = {name: [] for name in PARAMS_FILES}
    reads[SUITE] += suite_keys
    for section in sections:
        reads[section.file] += section.paths(cmd)
    problems = []
    for name in PARAMS_FILES:
        keys, doc, read = declared.get(name, []), docs[name], reads[name]
        over = f"scales.{scale}."
        read_sections = {r.split(".")[0] for r in read if "." in r}
        problems += [f"{name}: '{k}' is not in the file at scale {scale} (DVC would stop)"
                     for k in keys if not _leaves(doc, k)]
        # every value read is declared: the field, and each override of it at this scale
        for r in read + [leaf for r in read for leaf in _leaves(doc, over + r)]:
            if not any(_under(r, k) for k in keys):
                problems.append(f"{name}: reads '{r}' but does not depend on it")
        # nothing else is
        for k in keys:
            if k.startswith(over):  # an override: a read section's, down to any depth
                inner = k[len(over):]
                ok = inner.split(".")[0] in read_sections and any(
                    _under(r, inner) or _under(inner, r) for r in read)
            else:
                ok = all(any(_under(leaf, r) for r in read) for leaf in _leaves(doc, k))
            if not ok:
                problems.append(f"{name}: depends on '{k}', which holds values it does not read")
    return [f"{stage} at {scale}: {p}" for p in problems]


def test_the_table_names_every_stage(stages_at_scale):
    _, stages = stages_at_scale["mini"]
    assert {s.split("@")[0] for s in stages} == set(READS)


def test_every_stage_depends_on_the_params_it_reads_and_no_others(stages_at_scale):
    problems = []
    for scale, (docs, stages) in stages_at_scale.items():
        for stage, (cmd, declared) in stages.items():
            problems += _problems(stage, cmd, declared, docs, scale)
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_the_checker_catches_a_whole_section_a_missing_override_and_another_optimiser(stages_at_scale):
    docs, stages = stages_at_scale["smoke"]
    stage = "papers/gan_simclr/dvc.yaml:pretrain_real@adam-0"
    cmd, declared = stages[stage]
    assert _problems(stage, cmd, declared, docs, "smoke") == []
    too_wide = {**declared, GAN_SIMCLR: ["pretrain", "scales"]}
    assert any("'pretrain', which holds" in p for p in _problems(stage, cmd, too_wide, docs, "smoke"))
    assert any("'scales', which holds" in p for p in _problems(stage, cmd, too_wide, docs, "smoke"))
    no_overrides = {**declared, GAN_SIMCLR: [k for k in declared[GAN_SIMCLR] if not k.startswith("scales.")]}
    assert any("reads 'scales.smoke.pretrain.width'" in p
               for p in _problems(stage, cmd, no_overrides, docs, "smoke"))
    other = {**declared, GAN_SIMCLR: [*declared[GAN_SIMCLR], "pretrain.optimizers.lars"]}
    assert any("'pretrain.optimizers.lars'" in p for p in _problems(stage, cmd, other, docs, "smoke"))


# ---- DVC itself: `dvc status` after an edit of a read key and of an unread one

def _targets(repo, project: Path) -> dict:
    """{target: DVC's stage} for `TARGETS`."""
    names = {v: k for k, v in TARGETS.items()}
    return {names[_name(s, project)]: s for s in repo.index.stages if _name(s, project) in names}


def _commit_placeholders(project: Path) -> None:
    """Make `TARGETS` up to date without running them: placeholder deps and outputs, committed as
    `dvc commit -f` does (in-process: the command resolves the pipelines again for each target)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        stages = _targets(repo, project)
        for stage in stages.values():
            for item in [*stage.deps, *stage.outs]:
                path = Path(item.fs_path)
                if path.exists() or path.suffix == ".yaml" and path.name.startswith("params"):
                    continue
                if path.suffix:  # a file (.pt, .npy, .json, ...); else a folder
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("placeholder\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder").write_text("placeholder\n")
        with repo.lock:
            for stage in stages.values():
                stage.save()
                stage.commit()
                stage.dvcfile.dump_stages([stage], update_pipeline=False)


def _changed(project, dvc, targets) -> set[str]:
    """The targets `dvc status` reports as changed."""
    run = dvc(["status", "--json", *(TARGETS[t] for t in targets)], project)
    assert run.returncode == 0, run.stderr
    names = {v: k for k, v in TARGETS.items()}
    return {names[s] for s in json.loads(run.stdout)}


def _edit(project: Path, name: str, key: str, value):
    path = project / name
    doc = yaml.safe_load(path.read_text())
    *parents, last = key.split(".")
    node = doc
    for part in parents:
        node = node[part]
    assert last in node, f"{name}: no key {key}"
    node[last] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


TARGETS = {
    "prepare@mnist": "prepare@mnist",
    "extractor": "extractor",
    "train_gan": "papers/gan_simclr/dvc.yaml:train_gan",
    "generate@2500": "papers/gan_simclr/dvc.yaml:generate@2500",
    "pretrain_real@adam-0": "papers/gan_simclr/dvc.yaml:pretrain_real@adam-0",
    "pretrain_real@lars-0": "papers/gan_simclr/dvc.yaml:pretrain_real@lars-0",
    "train@sndcgan-contrad-0": "papers/contrad/dvc.yaml:train@sndcgan-contrad-0",
    "evaluate@sndcgan-contrad-0": "papers/contrad/dvc.yaml:evaluate@sndcgan-contrad-0",
}
PRETRAIN = {"pretrain_real@adam-0", "pretrain_real@lars-0"}
# (params file, key, new value, the targets this edit must make changed; every other stays up to date)
EDITS = [
    (GAN_SIMCLR, "pretrain.optimizers.lars.lr", 0.3, {"pretrain_real@lars-0"}),
    (GAN_SIMCLR, "pretrain.temperature", 0.2, PRETRAIN),
    (GAN_SIMCLR, "scales.smoke.pretrain.width", 0.125, PRETRAIN),
    (GAN_SIMCLR, "gan.train.lr_g", 0.001, {"train_gan"}),
    (GAN_SIMCLR, "scales.smoke.gan.architecture.z_dim", 16, {"train_gan", "generate@2500"}),
    (GAN_SIMCLR, "generate.truncation_psi", 0.7, {"generate@2500"}),
    (SUITE, "data.paths.cifar10", "/elsewhere/cifar10", set()),
    (SUITE, "data.paths.mnist", "/elsewhere/mnist", {"prepare@mnist"}),
    (SUITE, "scales.smoke.extractor.epochs", 2, {"extractor"}),
    (SUITE, "seed", 1, {"train_gan", "train@sndcgan-contrad-0", *PRETRAIN}),
    (CONTRAD, "train.architectures.snresnet18.width", 0.5, set()),
    (CONTRAD, "scales.smoke.train.architectures.sndcgan.width", 0.25,
     {"train@sndcgan-contrad-0", "evaluate@sndcgan-contrad-0"}),
    (CONTRAD, "evaluate.repeats", 4, {"evaluate@sndcgan-contrad-0"}),
]


def test_dvc_status_reruns_a_stage_for_the_keys_it_reads_only(smoke_project, dvc, monkeypatch):
    from dvc.repo import Repo

    project = smoke_project(packages=("shared", "papers"), tracking={"backend": "none", "uri": None})
    originals = {name: (project / name).read_text() for name in PARAMS_FILES}
    # Each `dvc status` resolves the pipelines again (a second per target): the edits are checked with
    # the status of DVC's stage objects, resolved once, which is what the command reports per stage...
    monkeypatch.chdir(project)
    _commit_placeholders(project)
    with Repo(str(project)) as repo:
        stages = _targets(repo, project)

        def changed() -> set[str]:
            with repo.lock:
                return {name for name, stage in stages.items() if stage.status()}

        assert changed() == set(), "the committed placeholders should be up to date"
        wrong = []
        for name, key, value, expected in EDITS:
            _edit(project, name, key, value)
            if (found := changed()) != expected:
                wrong.append(f"{name} {key} -> {value!r}: changed {sorted(found)}, expected {sorted(expected)}")
            (project / name).write_text(originals[name])
    assert not wrong, "\n".join(wrong)
    # ...and the command says the same: an edit of LARS's lr leaves the Adam run up to date
    assert _changed(project, dvc, ["pretrain_real@adam-0", "pretrain_real@lars-0"]) == set()
    _edit(project, GAN_SIMCLR, "pretrain.optimizers.lars.lr", 0.3)
    assert _changed(project, dvc, ["pretrain_real@adam-0", "pretrain_real@lars-0"]) == {"pretrain_real@lars-0"}


# ---- what `dvc repro papers/<paper>/dvc.yaml` runs of the shared stages

def _would_run(project, dvc, target) -> set[str]:
    # --force: in a project that has run nothing, DVC 3.67's dry run stops at the first missing dependency
    # (it hashes it for the run cache); forced, it lists every stage the target's pipeline holds
    run = dvc(["repro", "--dry", "--force", target], project)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return {line.split("'")[1] for line in run.stdout.splitlines() if line.startswith("Running stage '")}


@pytest.mark.parametrize("paper", ["gan_simclr", "contrad"])
def test_a_paper_prepares_only_the_data_it_uses(smoke_project, dvc, paper):
    project = smoke_project(packages=("shared", "papers"), tracking={"backend": "none", "uri": None})
    would_run = _would_run(project, dvc, f"papers/{paper}")  # the alias stage: the paper's whole pipeline
    assert f"papers/{paper}" in would_run and f"papers/{paper}/dvc.yaml:report" in would_run
    shared = {s for s in would_run if ":" not in s} - {f"papers/{paper}"}
    # the FID detector and the test split's reference statistics at every scale (smoke scores in-domain,
    # but DVC deps cannot follow a param); never the train split's (50k images: fid_validation's alone)
    assert shared == ({"prepare@cifar10", "subset@cifar10_5k", "extractor", "inception", "fid_stats@cifar10_test"}
                      if paper == "gan_simclr" else {"prepare@cifar10", "extractor", "inception",
                                                     "fid_stats@cifar10_test"})
    assert {"prepare@mnist", "prepare@omniglot"} <= _would_run(project, dvc, "dvc.yaml")
