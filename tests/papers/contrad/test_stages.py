"""contrad stages: method and model choice, skipped runs, the Table 1 cell, the linear evaluation of D, claims."""
import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from shared import records
from papers.contrad.config import METHODS, ArchitectureConfig, TrainStageConfig
from papers.contrad.evaluate import linear_eval_of_d, table1_cell
from shared.models.sngan import DiscriminatorFeatures
from papers.contrad.method import ContraDDiscriminator
from papers.contrad.report import FID_CLAIM_METHODS, claims, detector_kind, split_row
from papers.contrad.models import build_models
from papers.contrad.train import build_method, collapse_fields, skipped_reason
from shared.claims import FAILS, HOLDS, INCONCLUSIVE
from shared.comparison import Comparison, RowComparison

CPU = torch.device("cpu")


def test_methods_and_models():
    cfg = TrainStageConfig()
    names = {m: build_method(m, cfg).name for m in METHODS}
    assert names == {"baseline": "baseline", "diffaugment": "diffaugment[translation,cutout]",
                     "diffaugment_cc": "diffaugment[color,cutout]", "cr": "cr", "bcr": "bcr", "contrad": "contrad",
                     "simclr": "simclr"}
    # the two DiffAugment rows differ only in the policy of the augmentation on every D input
    label, official = build_method("diffaugment", cfg), build_method("diffaugment_cc", cfg)
    assert (label.augment.keywords, official.augment.keywords) == ({"policy": "translation,cutout"},
                                                                  {"policy": "color,cutout"})
    assert (label.d_loss, label.g_loss) == (official.d_loss, official.g_loss)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.manual_seed(0)
    coloured = official.augment(x)
    assert not torch.equal(coloured.mean((1, 2, 3)), x.mean((1, 2, 3)))  # brightness moved every image
    assert build_method("simclr", cfg).g_loss is None
    with pytest.raises(ValueError, match="unknown method"):
        build_method("lsgan", cfg)
    cfg.architectures["sndcgan"].width = 0.125
    for method in ("baseline", "cr", "bcr"):  # the plain D: CR and bCR penalise its logit
        _, D = build_models("sndcgan", method, cfg)
        assert not isinstance(D, ContraDDiscriminator) and D.linear is not None
    _, D = build_models("sndcgan", "contrad", cfg)
    assert isinstance(D, ContraDDiscriminator) and D.heads.score[0].out_features == 512


def test_config_rejects_unknown_names_and_skips_what_a_scale_does_not_run():
    with pytest.raises(ValueError, match="run_methods"):
        TrainStageConfig(run_methods=["lsgan"])
    with pytest.raises(ValueError, match="no entry"):
        TrainStageConfig(architectures={}, run_architectures=["sndcgan"])
    cfg = TrainStageConfig(run_architectures=["sndcgan"], run_methods=["contrad"], n_seeds=2)
    assert skipped_reason(cfg, "sndcgan", "contrad", 1, "mini") is None
    assert "seed 2" in skipped_reason(cfg, "sndcgan", "contrad", 2, "mini")
    assert "snresnet18" in skipped_reason(cfg, "snresnet18", "contrad", 0, "mini")
    assert "baseline" in skipped_reason(cfg, "sndcgan", "baseline", 0, "mini")
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="collapse_threshold"):
            TrainStageConfig(collapse_threshold=bad)


def test_a_run_is_collapsed_below_the_threshold_and_unknown_without_samples():
    history = [{"step": 3, "fid_indomain": 60.0, "diversity_indomain": 0.5},
               {"step": 6, "fid_indomain": 50.0, "diversity_indomain": 0.02}]
    best = {"step": 6, "fid_indomain": 50.0}  # the trainer's best: its step and FID
    out = collapse_fields(history, best, "indomain", 0.1)
    assert (out["diversity"], out["collapse_threshold"], out["collapsed"]) == (0.02, 0.1, True)
    earlier = collapse_fields(history, {"step": 3, "fid_indomain": 60.0}, "indomain", 0.1)
    assert (earlier["diversity"], earlier["collapsed"]) == (0.5, False)  # the best G_ema's, not the last one's
    assert collapse_fields(history, best, "indomain", 0.0)["collapsed"] is False  # 0: detection off
    for unscored in (collapse_fields([], None, None, 0.1), collapse_fields([], None, "indomain", 0.1)):
        assert (unscored["diversity"], unscored["collapsed"]) == (None, None)  # a D-only run, no evaluation


def test_table1_cell_is_taken_at_the_best_fid():
    trained = {"best": {"step": 4, "fid_indomain": 5.0},
               "history": [{"step": 2, "fid_indomain": 9.0, "is_indomain": 2.0},
                           {"step": 4, "fid_indomain": 5.0, "is_indomain": 3.0},
                           {"step": 6, "fid_indomain": 7.0, "is_indomain": 4.0}]}
    assert table1_cell(trained) == {"fid_indomain": 5.0, "is_indomain": 3.0}
    # with the final Inception FID of the best checkpoint, that is the cell's one FID
    final = {**trained, "best": {**trained["best"], "fid_inception": 30.0}}
    assert table1_cell(final) == {"is_indomain": 3.0, "fid_inception": 30.0}
    with pytest.raises(ValueError, match="no evaluation"):
        table1_cell({"best": None, "history": []})


class _Flatten(nn.Module):
    def features(self, x):
        return x.flatten(1)


def test_d_features_see_minus_one_to_one_and_linear_eval_separates_separable_data():
    seen = []

    class Probe(_Flatten):
        def features(self, x):
            seen.append((x.min().item(), x.max().item()))
            return super().features(x)

    DiscriminatorFeatures(Probe())(torch.tensor([0.0, 1.0]).view(1, 2, 1, 1))
    assert seen == [(-1.0, 1.0)]
    # two classes told apart by the mean brightness of a 1x2x2 "image": linearly separable
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = (torch.rand(200, 1, 2, 2, generator=g) * 100 + 20 + 120 * y.view(-1, 1, 1, 1)).to(torch.uint8)
    from papers.contrad.config import EvaluateConfig
    cfg = EvaluateConfig(repeats=2)
    cfg.linear.epochs, cfg.linear.milestones = 30, (20,)
    out = linear_eval_of_d(_Flatten(), (x[:150], y[:150]), (x[150:], y[150:]), cfg, CPU)
    assert out["linear_eval_acc"] > 95 and len(out["repeats"]) == 2 and out["feature_dim"] == 4


def _comparison(table, metric, cells):
    """A comparison whose rows hold the given per-seed values."""
    rows = [RowComparison(id=i, label={}, reported_mean=0.0, reported_std=None, reproduced_mean=float(np.mean(v)),
                          reproduced_std=float(np.std(v, ddof=1)) if len(v) > 1 else None, n=len(v),
                          seeds=list(range(len(v))), delta=None, status="ok", values=v) for i, v in cells.items()]
    return Comparison("contrad", "src", table, "cap", metric, "", "mini", rows, {"command": "c", "commit": "x"})


def test_claims_on_worked_numbers():
    reported = {"tables": {
        "table1_fid": {"rows": [{"id": f"sndcgan_{m}_c10", "mean": v} for m, v in
                                (("baseline", 26.6), ("diffaugment", 22.9), ("cr", 19.5), ("bcr", 14.0),
                                 ("contrad", 10.9))]},
        "table3": {"rows": [{"id": "sndcgan_simclr_c10", "mean": 72.9}, {"id": "sndcgan_contrad_c10", "mean": 77.5}]}}}
    contrad = [24.0, 25.0, 26.0]
    fid_cells = {"sndcgan_baseline_c10": [29.0, 30.0, 31.0], "sndcgan_diffaugment_c10": [19.0, 20.0, 21.0],
                 "sndcgan_cr_c10": [27.0, 28.0, 29.0], "sndcgan_bcr_c10": [22.0, 24.0, 26.0],
                 "sndcgan_contrad_c10": contrad}
    fid = _comparison("table1_fid", "fid_indomain", fid_cells)
    simclr, ours = [39.7, 40.0, 40.3], [41.6, 42.0, 42.4]
    lin = _comparison("table3", "linear_eval_acc", {"sndcgan_simclr_c10": simclr, "sndcgan_contrad_c10": ours})
    out = {c["id"]: c for c in claims(fid, lin, reported)}
    # FID, lower is better: DiffAugment's is 5 lower, one-sided p = 0.0018, x4 after Holm (the smallest of 4 p's)
    assert out["fid"]["verdict"] == FAILS and out["fid"]["vs"] == "diffaugment"
    p = stats.ttest_ind(fid_cells["sndcgan_diffaugment_c10"], contrad, equal_var=False, alternative="less").pvalue
    assert out["fid"]["p_opposite_adjusted"] == pytest.approx(4 * p) and out["fid"]["difference"] == pytest.approx(5.0)
    assert {c["vs"] for c in out["fid"]["comparisons"]} == {"baseline", "diffaugment", "cr", "bcr"}
    assert out["fid"]["values"]["contrad"] == contrad and out["fid"]["n"] == dict.fromkeys(FID_CLAIM_METHODS, 3)
    assert out["linear"]["verdict"] == HOLDS and out["linear"]["difference"] == pytest.approx(2.0)
    assert out["linear"]["p"] == pytest.approx(stats.ttest_ind(ours, simclr, equal_var=False,
                                                               alternative="greater").pvalue)
    assert out["linear"]["test"] == "one-sided Welch t-test" and out["linear"]["vs"] == "simclr"
    assert out["fid"]["reported"] == "FID baseline 26.6, diffaugment 22.9, cr 19.5, bcr 14.0, contrad 10.9 " \
                                     "(Inception, 10k samples)" and "77.5" in out["linear"]["reported"]
    assert "CR, bCR" in out["fid"]["claim"]
    best = claims(_comparison("table1_fid", "fid_indomain", {**fid_cells, "sndcgan_contrad_c10": [9.0, 10.0, 11.0]}),
                  lin, reported)
    assert best[0]["verdict"] == HOLDS  # the lowest FID, by 10 over DiffAugment
    one_seed = claims(_comparison("table1_fid", "fid_indomain", {**fid_cells, "sndcgan_contrad_c10": [25.0]}),
                      lin, reported)
    assert one_seed[0]["verdict"] == INCONCLUSIVE and "contrad (n=1)" in one_seed[0]["reason"]


def test_detector_kind_never_mixes_feature_spaces(tmp_path):
    def write(name, key):
        return records.write(tmp_path / name / "table1_fid.json", records.MetricsRecord(
            paper="contrad", stage="evaluate", scale="smoke", seed=0, table="table1_fid", row="r",
            metrics={key: 1.0}))

    a = write("a", "fid_indomain")
    assert detector_kind([a]) == "indomain" and detector_kind([]) is None
    with pytest.raises(ValueError, match="mix detectors"):
        detector_kind([a, write("b", "fid_inception")])


def _eval_record(eval_dir, method, seed, name, metrics, outcome=None):
    """One record as the evaluate stage writes it into <eval>/<arch>_<method>_seed<seed>/<name>; `outcome`: the
    train record's diversity, collapse_threshold and collapsed it copies."""
    table = name.removesuffix(".json")
    history = [{"step": 3, **{k: v + 1 for k, v in metrics.items()}}, {"step": 6, **metrics}]
    return records.write(eval_dir / f"sndcgan_{method}_seed{seed}" / name, records.MetricsRecord(
        paper="contrad", stage="evaluate", scale="mini", seed=seed, table=table, row=f"sndcgan_{method}_c10",
        metrics=metrics, extra={**({"history": history} if table.startswith("table1") else {}), **(outcome or {})},
        provenance={"command": "test", "commit": "abc"}))


def test_report_from_the_committed_runs_alone_is_the_same(tmp_path):
    """Every record the report read is copied into <out>/runs/eval; from those alone (no eval folder)
    the tables and claims are the same, apart from when and how they were made."""
    from papers.contrad.report import make_report
    from shared.config import REPO_ROOT

    reported, eval_dir, out = REPO_ROOT / "papers/contrad/reported.yaml", tmp_path / "eval", tmp_path / "results"
    for seed, e in enumerate((-1.0, 0.0, 1.0)):
        for method, fid in (("baseline", 30.0), ("diffaugment", 22.0), ("cr", 25.0), ("bcr", 20.0), ("contrad", 12.0)):
            _eval_record(eval_dir, method, seed, "table1_fid.json", {"fid_indomain": fid + e})
            _eval_record(eval_dir, method, seed, "table1_is.json", {"is_indomain": 2.0 + e / 10})
        _eval_record(eval_dir, "simclr", seed, "table3.json", {"linear_eval_acc": 40.0 + e})
        _eval_record(eval_dir, "contrad", seed, "table3.json", {"linear_eval_acc": 44.0 + e})
    first = make_report(reported, eval_dir, "mini", out)
    assert {c["id"]: c["verdict"] for c in first.claims} == {"fid": HOLDS, "linear": HOLDS}
    copied = sorted(p.relative_to(out / "runs" / "eval") for p in (out / "runs").rglob("*.json"))
    assert copied == sorted(p.relative_to(eval_dir) for p in eval_dir.rglob("*.json")) and len(copied) == 36

    skip = ("command", "commit", "dirty", "diff_sha256", "torch", "device", "threads", "provenance")
    names = ("table1_fid.json", "table1_is.json", "table3.json", "claims.json", "summary.json")

    def results(folder):
        return {n: {k: v for k, v in json.loads((folder / n).read_text()).items() if k not in skip} for n in names}

    before = results(out)
    again = make_report(reported, None, "mini", tmp_path / "again", runs=out / "runs")
    assert results(tmp_path / "again") == before and again.claims == first.claims
    make_report(reported, None, "mini", out)  # in place, as `--from-runs` on the committed folder
    assert results(out) == before and (out / "samples.png").is_file()  # the grids are kept, not redrawn


def test_split_row_keeps_a_method_with_an_underscore():
    assert split_row("sndcgan_diffaugment_cc_c10") == ("sndcgan", "diffaugment_cc")
    assert split_row("snresnet18_contrad_c10") == ("snresnet18", "contrad")


def test_report_leaves_a_collapsed_seed_out_and_puts_color_cutout_beside_diffaugment(tmp_path):
    """ContraD's seed 0 collapsed (diversity 0.01 < 0.1, FID 90): every table mean, curve and claim is over its
    seeds 1 and 2 and names seed 0; DiffAugment color,cutout is an extra row beside Table 1's DiffAug row and a
    setup of the FID claim."""
    from papers.contrad.report import fid_over_training, make_report, sample_figure
    from shared.config import REPO_ROOT

    reported, eval_dir, out = REPO_ROOT / "papers/contrad/reported.yaml", tmp_path / "eval", tmp_path / "results"
    fids = {"baseline": 30.0, "diffaugment": 22.0, "diffaugment_cc": 21.0, "cr": 25.0, "bcr": 20.0, "contrad": 12.0}
    for seed, e in enumerate((-1.0, 0.0, 1.0)):
        for method, fid in fids.items():
            down = method == "contrad" and seed == 0
            outcome = {"diversity": 0.01 if down else 0.8, "collapse_threshold": 0.1, "collapsed": down}
            _eval_record(eval_dir, method, seed, "table1_fid.json", {"fid_indomain": 90.0 if down else fid + e}, outcome)
            _eval_record(eval_dir, method, seed, "table1_is.json", {"is_indomain": 2.0 + e / 10}, outcome)
            if method == "contrad":
                _eval_record(eval_dir, method, seed, "table3.json", {"linear_eval_acc": 10.0 if down else 44.0 + e},
                             outcome)
        _eval_record(eval_dir, "simclr", seed, "table3.json", {"linear_eval_acc": 40.0 + e},
                     {"diversity": None, "collapse_threshold": 0.1, "collapsed": None})
    report = make_report(reported, eval_dir, "mini", out)

    fid = {r["id"]: r for r in json.loads((out / "table1_fid.json").read_text())["rows"]}
    contrad = fid["sndcgan_contrad_c10"]
    assert (contrad["n"], contrad["seeds"], contrad["reproduced_mean"]) == (2, [1, 2], pytest.approx(12.5))
    assert "left out as collapsed: seed 0 (diversity 0.01 < 0.1)" in contrad["note"]
    assert fid["sndcgan_baseline_c10"]["n"] == 3 and fid["sndcgan_baseline_c10"]["note"] is None
    assert "sndcgan_diffaugment_cc_c10" not in fid  # not a row of the paper's table ...
    md = (out / "table1_fid.md").read_text()
    assert "Extra rows" in md and "| sndcgan_diffaugment_cc_c10 | sndcgan_diffaugment_c10 | 22.9 | 21.00 ± 1.00 (n=3)" in md
    assert "left out as collapsed" in md
    lin = {r["id"]: r for r in json.loads((out / "table3.json").read_text())["rows"]}
    assert (lin["sndcgan_contrad_c10"]["n"], lin["sndcgan_contrad_c10"]["reproduced_mean"]) == (2, pytest.approx(44.5))

    summary = json.loads((out / "summary.json").read_text())
    assert summary["table1_fid"]["sndcgan_contrad_c10"]["n"] == 2
    assert [x["run"] for x in summary["collapsed"]] == ["sndcgan_contrad_seed0"]
    assert summary["collapsed"][0]["diversity"] == 0.01 and len(summary["diversity"]) == 18
    extra = summary["extra_rows"]["table1_fid"]["sndcgan_diffaugment_cc_c10"]  # ... but beside it
    assert extra == {"mean": pytest.approx(21.0), "std": pytest.approx(1.0), "n": 3, "beside": "sndcgan_diffaugment_c10",
                     "delta": None}  # in-domain against the paper's Inception FID: no delta

    verdicts = {c["id"]: c for c in report.claims}
    assert {c["vs"] for c in verdicts["fid"]["comparisons"]} == {"baseline", "diffaugment", "diffaugment_cc", "cr", "bcr"}
    assert verdicts["fid"]["n"]["contrad"] == 2 and verdicts["fid"]["values"]["contrad"] == [12.0, 13.0]
    assert verdicts["fid"]["verdict"] == HOLDS and "color,cutout" in verdicts["fid"]["claim"]
    for claim in verdicts.values():
        assert claim["collapsed_left_out"] == ["sndcgan_contrad_seed0"]
        assert "1 collapsed run(s) left out: sndcgan_contrad_seed0 (diversity 0.01 < 0.1)" in claim["reason"]
    assert verdicts["linear"]["values"]["contrad"] == [44.0, 45.0] and verdicts["linear"]["verdict"] == HOLDS
    assert json.loads((out / "claims.json").read_text())["collapsed"] == ["sndcgan_contrad_seed0"]

    # the figures: the collapsed grid is marked, the FID curve's mean is over the other two seeds
    from PIL import Image
    for method in ("baseline", "contrad"):
        Image.new("RGB", (16, 16)).save(eval_dir / f"sndcgan_{method}_seed0" / "samples.png")
    titles = [ax.get_title() for ax in sample_figure(eval_dir, "mini").axes]
    assert "COLLAPSED: diversity 0.01 < 0.1" in titles[1] and "diversity 0.80" in titles[0]
    assert "COLLAPSED" not in titles[0]
    legend = [t.get_text() for t in fid_over_training(sorted(eval_dir.rglob("table1_fid.json")), "mini")
              .axes[0].get_legend().get_texts()]
    assert "ContraD (SimCLR augmentation) (n=2, 1 collapsed left out)" in legend


def test_the_stylegan2_block_uses_the_official_stylegan2_settings_and_heads_on_the_flattened_conv_output():
    from papers.contrad.config import PARAMS, STYLEGAN2_METHODS
    from shared import config
    cfg = config.load_section(TrainStageConfig, PARAMS, "train", "paper")
    sg2 = cfg.train_for("stylegan2")  # the README's StyleGAN2 + ContraD command over c10_style64.gin
    assert (sg2.steps, sg2.batch_size, sg2.lr_g, sg2.lr_d, sg2.betas) == (800_000, 64, 0.002, 0.002, (0.0, 0.99))
    assert (sg2.r1_gamma, sg2.r1_interval, sg2.r1_input, sg2.style_mixing_prob) == (0.1, 1, "augmented", 0.9)
    assert (sg2.mirror, sg2.warmup_steps, sg2.ema_kimg, sg2.ema_start_kimg) == (True, 3000, 1000.0, 1000.0)
    assert cfg.train_for("sndcgan") is cfg.train and cfg.train.batch_size == 512  # the SN-GANs keep `train`
    assert (sg2.log_every, sg2.eval_every) == (cfg.train.log_every, cfg.train.eval_every)  # the rest is `train`'s
    smoke = config.load_section(TrainStageConfig, PARAMS, "train", "smoke").train_for("stylegan2")
    assert (smoke.steps, smoke.batch_size, smoke.lr_g) == (6, 16, 0.002)
    mini = config.load_section(TrainStageConfig, PARAMS, "train", "mini")
    assert "stylegan2" in skipped_reason(mini, "stylegan2", "contrad", 0, "mini")
    assert set(STYLEGAN2_METHODS) <= set(METHODS)
    with pytest.raises(ValueError, match="unknown GANConfig keys"):
        TrainStageConfig(architectures={"stylegan2": ArchitectureConfig(preset="smoke", train={"lr": 1.0})})
    with pytest.raises(ValueError, match="preset"):
        ArchitectureConfig(preset="huge")

    small = TrainStageConfig(architectures={"stylegan2": ArchitectureConfig(
        z_dim=32, score_hidden=16, latent_prior="normal", preset="smoke")}, run_architectures=["stylegan2"])
    G, D = build_models("stylegan2", "baseline", small)
    assert not isinstance(D, ContraDDiscriminator) and D.out is not None and G.z_dim == 32
    torch.manual_seed(0)
    G, D = build_models("stylegan2", "contrad", small)
    assert isinstance(D, ContraDDiscriminator) and D.backbone.fc is None and D.feature_dim == 32 * 16
    assert D.heads.score[0].in_features == 32 * 16 and D.heads.proj_pos[0].out_features == 16
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in D.modules())  # no spectral norm
    # ContraD's D step on StyleGAN2: every parameter of D learns (trunk from L_con, h_d from L_dis), G does not
    from papers.contrad.method import contrad_d_loss
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, G(torch.randn(4, 32))
    loss, _ = contrad_d_loss(D, real, fake, augment=lambda x: x)
    loss.backward()
    assert [n for n, p in D.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    assert all(p.grad is None for p in G.parameters())


def test_report_combines_sessions_but_refuses_runs_of_another_protocol_and_keeps_seed0_grids(tmp_path):
    """Seeds run in a later session combine with the committed copies of earlier ones; a committed copy from
    another training length is named, not averaged in; the committed seed-0 sample figure survives a report whose
    stage folder holds only later seeds."""
    from papers.contrad.report import make_report
    from shared.config import REPO_ROOT

    reported, out = REPO_ROOT / "papers/contrad/reported.yaml", tmp_path / "results"
    methods = ("baseline", "diffaugment", "cr", "bcr", "contrad")

    def session(eval_dir, seeds, steps):
        for seed in seeds:
            protocol = {"steps": steps, "kimg": steps * 32 / 1000, "fid_samples": 2000}
            for method in methods:
                _eval_record(eval_dir, method, seed, "table1_fid.json", {"fid_indomain": 20.0 + seed}, protocol)
                _eval_record(eval_dir, method, seed, "table1_is.json", {"is_indomain": 2.0}, protocol)
            for method in ("simclr", "contrad"):
                _eval_record(eval_dir, method, seed, "table3.json", {"linear_eval_acc": 40.0 + seed},
                             {"protocol": {"repeats": 3}})

    session(tmp_path / "first", [0], 10_000)
    from PIL import Image
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "first" / "sndcgan_contrad_seed0" / "samples.png")
    make_report(reported, tmp_path / "first", "mini", out)
    figure = (out / "samples.png").read_bytes()
    session(tmp_path / "second", [1, 2], 10_000)
    make_report(reported, tmp_path / "second", "mini", out)
    rows = {r["id"]: r for r in json.loads((out / "table1_fid.json").read_text())["rows"]}
    assert rows["sndcgan_contrad_c10"]["seeds"] == [0, 1, 2]
    assert (out / "samples.png").read_bytes() == figure  # seed 0's figure, not an empty one

    session(tmp_path / "stale", [2], 4_000)
    with pytest.raises(ValueError, match=r"table1_fid.json: the sndcgan runs come from different protocols.*"
                                         r"sndcgan_baseline_seed2"):
        make_report(reported, tmp_path / "stale", "mini", tmp_path / "other", runs=out / "runs")
