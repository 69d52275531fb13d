"""contrad stages: method and model choice, skipped runs, the Table 1 cell, the linear evaluation of D, claims."""
import json

import pytest
import torch
from torch import nn

from shared import records
from papers.contrad.config import TrainStageConfig
from papers.contrad.evaluate import DiscriminatorFeatures, linear_eval_of_d, table1_cell
from papers.contrad.method import ContraDDiscriminator
from papers.contrad.report import claims, detector_kind
from papers.contrad.models import build_models
from papers.contrad.train import build_method, skipped_reason
from shared.claims import FAILS, HOLDS
from shared.comparison import Comparison, RowComparison

CPU = torch.device("cpu")


def test_methods_and_models():
    cfg = TrainStageConfig()
    names = {m: build_method(m, cfg).name for m in ("baseline", "diffaugment", "contrad", "simclr")}
    assert names == {"baseline": "baseline", "diffaugment": "diffaugment[translation,cutout]",
                     "contrad": "contrad", "simclr": "simclr"}
    assert build_method("simclr", cfg).g_loss is None
    with pytest.raises(ValueError, match="unknown method"):
        build_method("cr", cfg)
    cfg.architectures["sndcgan"].width = 0.125
    _, D = build_models("sndcgan", "baseline", cfg)
    assert not isinstance(D, ContraDDiscriminator) and D.linear is not None
    _, D = build_models("sndcgan", "contrad", cfg)
    assert isinstance(D, ContraDDiscriminator) and D.heads.score[0].out_features == 512


def test_config_rejects_unknown_names_and_skips_what_a_scale_does_not_run():
    with pytest.raises(ValueError, match="run_methods"):
        TrainStageConfig(run_methods=["cr"])
    with pytest.raises(ValueError, match="no entry"):
        TrainStageConfig(architectures={}, run_architectures=["sndcgan"])
    cfg = TrainStageConfig(run_architectures=["sndcgan"], run_methods=["contrad"], n_seeds=2)
    assert skipped_reason(cfg, "sndcgan", "contrad", 1, "mini") is None
    assert "seed 2" in skipped_reason(cfg, "sndcgan", "contrad", 2, "mini")
    assert "snresnet18" in skipped_reason(cfg, "snresnet18", "contrad", 0, "mini")
    assert "baseline" in skipped_reason(cfg, "sndcgan", "baseline", 0, "mini")


def test_table1_cell_is_taken_at_the_best_fid():
    trained = {"best": {"step": 4, "fid_indomain": 5.0},
               "history": [{"step": 2, "fid_indomain": 9.0, "is_indomain": 2.0},
                           {"step": 4, "fid_indomain": 5.0, "is_indomain": 3.0},
                           {"step": 6, "fid_indomain": 7.0, "is_indomain": 4.0}]}
    assert table1_cell(trained) == {"fid_indomain": 5.0, "is_indomain": 3.0}
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
    rows = [RowComparison(id=i, label={}, reported_mean=0.0, reported_std=None, reproduced_mean=m,
                          reproduced_std=sd, n=2, seeds=[0, 1], delta=None, status="ok") for i, (m, sd) in cells.items()]
    return Comparison("contrad", "src", table, "cap", metric, "", "mini", rows, {"command": "c", "commit": "x"})


def test_claims_on_worked_numbers():
    reported = {"tables": {
        "table1_fid": {"rows": [{"id": f"sndcgan_{m}_c10", "mean": v} for m, v in
                                (("baseline", 26.6), ("diffaugment", 22.9), ("contrad", 10.9))]},
        "table3": {"rows": [{"id": "sndcgan_simclr_c10", "mean": 72.9}, {"id": "sndcgan_contrad_c10", "mean": 77.5}]}}}
    fid = _comparison("table1_fid", "fid_indomain", {"sndcgan_baseline_c10": (30.0, 1.0),
                                                     "sndcgan_diffaugment_c10": (20.0, 1.0),
                                                     "sndcgan_contrad_c10": (25.0, 1.0)})
    lin = _comparison("table3", "linear_eval_acc", {"sndcgan_simclr_c10": (40.0, 0.3),
                                                    "sndcgan_contrad_c10": (42.0, 0.4)})
    out = {c["id"]: c for c in claims(fid, lin, reported)}
    assert out["fid"]["verdict"] == FAILS and out["fid"]["beaten_by"] == "diffaugment"  # 5.0 > 1.41
    assert out["linear"]["verdict"] == HOLDS and out["linear"]["difference"] == pytest.approx(2.0)
    assert "10.9" in out["fid"]["reported"] and "77.5" in out["linear"]["reported"]


def test_detector_kind_never_mixes_feature_spaces(tmp_path):
    def write(name, key):
        return records.write(tmp_path / name / "table1_fid.json", records.MetricsRecord(
            paper="contrad", stage="evaluate", scale="smoke", seed=0, table="table1_fid", row="r",
            metrics={key: 1.0}))

    a = write("a", "fid_indomain")
    assert detector_kind([a]) == "indomain" and detector_kind([]) is None
    with pytest.raises(ValueError, match="mix detectors"):
        detector_kind([a, write("b", "fid_inception")])
