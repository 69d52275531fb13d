"""A resumed trainer writes every output again, byte for byte what the uninterrupted run wrote.

DVC deletes a stage's outputs other than its persisted checkpoint before it re-runs the stage, so a
re-run that resumes a checkpoint (a finished one too: it has no step left) must make them again from
what the checkpoint holds. Each test deletes what DVC would and calls the trainer again.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as Fn
from torch import nn

from shared import checkpoint
from shared.data import DeviceLoader
from shared.gan_losses import nonsaturating
from shared.models.stylegan2 import stylegan2_cifar
from shared.tracking import NullLogger
from shared.trainers.adversarial import AdversarialConfig, AdversarialMethod, train_adversarial
from shared.trainers.gan import GANConfig, train_gan

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[3]
# G_ema is evaluated at steps 2, 4, 5; the best is step 4's, before the end, so best.pt is not the
# final G_ema. Samples at 2, 4, 5; checkpoints at 2, 4, 5.
FID = {2: 3.0, 4: 1.0, 5: 2.0, 6: 2.0}


def snapshot(folder: Path, skip=("checkpoint.pt",)) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def delete_outputs(out_dir: Path) -> None:
    """What DVC deletes before re-running gan_simclr's train_gan: all but the persisted checkpoint and config."""
    (out_dir / "best.pt").unlink()
    shutil.rmtree(out_dir / "samples")


# ---------------------------------------------------------------- the GAN trainer

class Interrupt(RuntimeError):
    pass


def run_gan(out_dir, *, init_seed=0, stop_at=None, fid=FID, evaluate=True, **cfg):
    """5 steps of a tiny StyleGAN2 on 12 random 16x16 images (3 batches an epoch); `stop_at` raises in
    that step's evaluation, after its samples and before its checkpoint, as a kill there would."""
    torch.manual_seed(init_seed)
    G, D = stylegan2_cifar("smoke", resolution=16)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 3, 16, 16), generator=g, dtype=torch.uint8)
    loader = DeviceLoader(x, torch.zeros(12, dtype=torch.long), batch_size=4, drop_last=True, seed=0)

    def evaluate_fid(G_ema, step):
        if step == stop_at:
            raise Interrupt(f"stopped at step {step}")
        return {"fid": fid[step]}

    cfg = GANConfig(**{**dict(steps=5, batch_size=4, r1_interval=2, ema_kimg=0.01, ema_start_kimg=0.0, log_every=1,
                              sample_every=2, checkpoint_every=2, eval_every=2, n_sample_grid=6), **cfg})
    return train_gan(cfg, G, D, nonsaturating(), loader, out_dir=out_dir, logger=NullLogger(), device=CPU,
                     z_dim=G.z_dim, evaluate=evaluate_fid if evaluate else None, progress=False)


def test_gan_resumed_at_the_end_writes_best_and_samples_again(tmp_path):
    out = tmp_path / "gan"
    first = run_gan(out)
    files, ckpt = snapshot(out), (out / "checkpoint.pt").read_bytes()
    assert files.keys() == {"best.pt", "samples/step_0000002.png", "samples/step_0000004.png",
                            "samples/step_0000005.png"}
    assert torch.load(out / "best.pt", weights_only=False)["step"] == 4

    for _ in range(2):  # a re-run, and a re-run of that
        delete_outputs(out)
        again = run_gan(out, init_seed=1)  # another init: everything must come from the checkpoint
        assert snapshot(out) == files
        assert (out / "checkpoint.pt").read_bytes() == ckpt  # nothing trained, nothing rewritten
        assert (again.history, again.best, again.steps) == (first.history, first.best, first.steps)
        assert again.train_seconds == first.train_seconds > 0
        for p, q in zip(first.G_ema.state_dict().values(), again.G_ema.state_dict().values()):
            assert torch.equal(p, q)


def test_gan_interrupted_then_rerun_twice_writes_what_the_straight_run_wrote(tmp_path):
    straight = run_gan(tmp_path / "straight")
    files = snapshot(tmp_path / "straight")
    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        run_gan(out, stop_at=4)  # dies after step 4's grid, before its checkpoint: resumes from step 2
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 2
    for _ in range(2):  # the resume trains steps 3-5; the one after it resumes the finished checkpoint
        delete_outputs(out)
        result = run_gan(out, init_seed=1)
        assert snapshot(out) == files
        assert (result.history, result.best, result.steps) == (straight.history, straight.best, straight.steps)


def test_gan_fresh_start_removes_outputs_of_an_earlier_run(tmp_path):
    out = tmp_path / "gan"
    run_gan(out, steps=6)  # grids at 2, 4, 6; a persisted folder keeps them when the config changes
    (out / "checkpoint.pt").unlink()  # what a config change does (shared.checkpoint.fresh_start_if_config_changed)
    run_gan(out, evaluate=False)
    assert snapshot(out).keys() == {"samples/step_0000002.png", "samples/step_0000004.png",
                                    "samples/step_0000005.png"}  # no best.pt: nothing was evaluated
    files = snapshot(out)
    run_gan(tmp_path / "clean", evaluate=False)
    assert snapshot(tmp_path / "clean") == files


def test_gan_checkpoint_without_its_outputs_is_refused_by_name(tmp_path):
    run_gan(tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for key in ("best_G_ema", "samples", "train_seconds"):  # the format before resumed runs rewrote outputs
        del state[key]
    checkpoint.save(tmp_path / "checkpoint.pt", state)
    with pytest.raises(checkpoint.CheckpointError, match=r"predates resumable outputs .*'best_G_ema', 'samples', "
                                                         r"'train_seconds'.*delete it"):
        run_gan(tmp_path)


# The child builds what run_gan(..., fid=KILL_FID, steps=6, checkpoint_every=4) builds, from the suite's
# own modules (it imports no test module), and SIGKILLs itself in the D step of step `kill_at`.
KILL_FID = {2: 1.0, 4: 3.0, 6: 2.0}  # the best is step 2's, made before the first checkpoint
GAN_CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from shared.data import DeviceLoader
    from shared.gan_losses import GANMethod, nonsaturating
    from shared.models.stylegan2 import stylegan2_cifar
    from shared.tracking import NullLogger
    from shared.trainers.gan import GANConfig, train_gan

    out, kill_at = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    G, D = stylegan2_cifar("smoke", resolution=16)
    x = torch.randint(0, 256, (12, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    loader = DeviceLoader(x, torch.zeros(12, dtype=torch.long), batch_size=4, drop_last=True, seed=0)
    base, calls = nonsaturating(), {"n": 0}

    def d_loss(*args, **kwargs):  # one call per D step: SIGKILL in the D step of step `kill_at`
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return base.d_loss(*args, **kwargs)

    fid = {2: 1.0, 4: 3.0, 6: 2.0}
    cfg = GANConfig(steps=6, batch_size=4, r1_interval=2, ema_kimg=0.01, ema_start_kimg=0.0, log_every=1,
                    sample_every=2, checkpoint_every=4, eval_every=2, n_sample_grid=6)
    train_gan(cfg, G, D, GANMethod(d_loss, base.g_loss, base.name, base.augment), loader, out_dir=out,
              logger=NullLogger(), device=torch.device("cpu"), z_dim=G.z_dim,
              evaluate=lambda G_ema, step: {"fid": fid[step]}, progress=False)
""")



def test_gan_sigkilled_then_rerun_twice_writes_what_the_straight_run_wrote(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(GAN_CHILD)
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, str(script), str(out), "5"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},  # this tree's shared, not an installed one
                            timeout=300)
    assert killed.returncode == -9, killed.stderr  # in step 5: after step 4's checkpoint, best.pt and two grids
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 4

    straight = run_gan(tmp_path / "straight", fid=KILL_FID, steps=6, checkpoint_every=4)
    files = snapshot(tmp_path / "straight")
    assert files.keys() == {"best.pt", *(f"samples/step_000000{s}.png" for s in (2, 4, 6))}
    for _ in range(2):  # trains steps 5-6, then resumes the finished checkpoint
        delete_outputs(out)
        again = run_gan(out, init_seed=1, fid=KILL_FID, steps=6, checkpoint_every=4)
        assert snapshot(out) == files
        assert (again.history, again.best, again.steps) == (straight.history, straight.best, straight.steps)
        for p, q in zip(straight.G_ema.state_dict().values(), again.G_ema.state_dict().values()):
            assert torch.equal(p, q)


# ---------------------------------------------------------------- the two-player trainer (no output but its result)

def adversarial_method():
    def forward(generators, batch):
        x = batch["a"][0].float().flatten(1) / 255
        return {"real": x, "fake": generators["G"](torch.rand(x.shape))}

    def critic_loss(D, F, out):
        loss = Fn.softplus(-D(F(out["real"]))).mean() + Fn.softplus(D(F(out["fake"]))).mean()
        return loss, {}

    def generator_loss(generators, critics, F, out):
        return Fn.softplus(-critics["D"](F(out["fake"]))).mean(), {}

    return AdversarialMethod(forward, {"D": critic_loss}, generator_loss, "tiny")


def run_adversarial(out_dir, *, init_seed=0, stop_at=None):
    torch.manual_seed(init_seed)
    generators, critics = {"G": nn.Linear(4, 4)}, {"D": nn.Linear(4, 1)}
    x = torch.randint(0, 256, (12, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    loaders = {"a": DeviceLoader(x, torch.zeros(12, dtype=torch.long), batch_size=4, drop_last=True, seed=0)}

    def evaluate(generators, step):
        if step == stop_at:
            raise Interrupt(f"stopped at step {step}")
        return {"w": generators["G"].weight.sum().item()}

    cfg = AdversarialConfig(steps=5, log_every=1, checkpoint_every=2, eval_every=2)
    result = train_adversarial(cfg, generators, critics, nn.Identity(), adversarial_method(), loaders,
                               out_dir=out_dir, logger=NullLogger(), device=CPU, evaluate=evaluate, progress=False)
    return result, {k: v.clone() for k, v in generators["G"].state_dict().items()}


def test_adversarial_resumed_at_the_end_returns_the_same_result(tmp_path):
    straight, weights = run_adversarial(tmp_path / "straight")
    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        run_adversarial(out, stop_at=4)
    for _ in range(2):  # the resume trains steps 3-5; the one after it resumes the finished checkpoint
        again, again_weights = run_adversarial(out, init_seed=1)
        assert (again.history, again.steps) == (straight.history, straight.steps)
        assert all(torch.equal(weights[k], again_weights[k]) for k in weights)
    assert snapshot(out, skip=()).keys() == {"checkpoint.pt"}  # nothing else to write again


# ---------------------------------------------------------------- the SSL trainer: metrics come from the result

def test_ssl_resumed_at_the_end_returns_the_same_result(tmp_path, train_tiny):
    _, straight = train_tiny("simclr", tmp_path / "straight")
    out = tmp_path / "interrupted"
    with pytest.raises(RuntimeError, match="stopped after epoch 2"):
        train_tiny("simclr", out, stop_after=2)
    for _ in range(2):  # the resume trains epochs 2-3; the one after it resumes the finished checkpoint
        ckpt = (out / "checkpoint.pt").read_bytes()
        _, again = train_tiny("simclr", out, init_seed=1)
        assert (again.history, again.final, again.steps) == (straight.history, straight.final, straight.steps)
    assert (out / "checkpoint.pt").read_bytes() == ckpt  # the finished resume trained and rewrote nothing
