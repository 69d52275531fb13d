"""MLflow beyond the local file: a comparison logged to a real tracking server (on loopback, artifacts
proxied over HTTP) and read back through the REST API; the store rebuilt from committed results,
idempotently; the UI command; the tags runs carry for filtering."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pytest
import yaml

from shared import tracking
from shared.comparison import Comparison, compare, log_comparison
from shared.config import REPO_ROOT, SuiteConfig, TrackingConfig
from shared.scorecard import scorecard
from shared.tracking import __main__ as cli
from shared.tracking.store import rebuild, ui_command

REPO = REPO_ROOT
REPORTED = {"paper": "alpha", "source": "Alpha et al., Table 1", "tables": {"t1": {
    "caption": "accuracy", "metric": "acc", "unit": "%",
    "rows": [{"id": "r1", "label": {"fakes": 0}, "mean": 70.0, "std": 0.5},
             {"id": "r2", "label": {"fakes": 10}, "mean": 72.5},
             {"id": "r3", "label": {"fakes": 20}, "mean": 73.0}]}}}  # r3 is never run
VALUES = [("r1", 0, 40.0), ("r1", 1, 41.0), ("r2", 0, 43.5)]
CLAIMS = {"paper": "alpha", "scale": "mini", "command": "papers/alpha/report.py", "commit": "abc123",
          "claims": [{"id": "a", "claim": "fakes help", "source": "Sec. 5", "rule": "one-sided Welch, p < 0.05",
                      "test": "one-sided Welch t-test", "alpha": 0.05, "n": {"0": 2, "10": 2},
                      "values": {"0": [40.0, 41.0], "10": [43.0, 44.0]},
                      "numbers": {"0": {"mean": 40.5, "std": 0.7, "n": 2},
                                  "10": {"mean": 43.5, "std": 0.7, "n": 2}},
                      "vs": "0", "difference": 3.0, "ci95": [-1.0, 7.0], "p": 0.08,
                      "verdict": "inconclusive", "reason": "p = 0.08"}]}


SWEEP = {"paper": "alpha", "stage": "train", "study": "lr-mini", "storage": "sqlite:///mlflow/optuna.db",
         "scale": "mini", "objective": {"metric": "acc", "direction": "maximize"}, "args": {"seed": 0},
         "budget": {"train": {"epochs": 2}}, "space": {"lr": {"key": "train.lr", "low": 0.01, "high": 1.0}},
         "n_trials": 2, "command": "shared/tune papers/alpha/sweep.yaml", "commit": "abc123",
         "best": {"trial": 1, "value": 41.0, "params": {"lr": 0.3}},
         "defaults": {"number": 0, "state": "COMPLETE", "value": 40.0, "params": {"lr": 0.1}},
         "references": {"sgd": {"value": 39.5}},
         "trials": [{"number": 0, "state": "COMPLETE", "value": 40.0, "params": {"lr": 0.1},
                     "curve": {"1": 35.0, "2": 40.0}},
                    {"number": 1, "state": "COMPLETE", "value": 41.0, "params": {"lr": 0.3},
                     "curve": {"1": 36.0, "2": 41.0}}]}


def make_sweep(root: Path) -> Path:
    """papers/alpha/results/sweeps/mini/ as `python -m shared.tune` leaves it (summary, best params)."""
    folder = root / "papers" / "alpha" / "results" / "sweeps" / "mini"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(SWEEP))
    (folder / "summary.md").write_text("# Optuna sweep `lr-mini`\n\n| trial | acc |\n|---|---|\n| 1 | 41.00 |\n")
    (folder / "best_params.yaml").write_text("train:\n  lr: 0.3\n")
    return folder


def make_results(root: Path) -> Comparison:
    """papers/alpha/results/mini/ as a report stage leaves it: t1.md/.json, claims.json, a figure."""
    (root / "m").mkdir(parents=True)
    (root / "reported.yaml").write_text(yaml.safe_dump(REPORTED))
    files = []
    for row, seed, value in VALUES:
        files.append(root / "m" / f"{row}_s{seed}.json")
        files[-1].write_text(json.dumps({"paper": "alpha", "table": "t1", "row": row, "scale": "mini",
                                         "seed": seed, "metrics": {"acc": value}}))
    out = root / "papers" / "alpha" / "results" / "mini"
    c = compare(root / "reported.yaml", files, "t1", "mini", out)
    (out / "claims.json").write_text(json.dumps(CLAIMS))
    (out / "figure3.png").write_bytes(b"\x89PNG fake")
    return c


def check_comparison_metrics(metrics: dict[str, float]) -> None:
    assert {k: metrics[k] for k in ("reported/r1", "reported/r2", "reported/r3")} == {
        "reported/r1": 70.0, "reported/r2": 72.5, "reported/r3": 73.0}
    assert metrics["reproduced/r1"] == pytest.approx(40.5) and metrics["delta/r1"] == pytest.approx(-29.5)
    assert metrics["reproduced/r2"] == pytest.approx(43.5) and metrics["delta/r2"] == pytest.approx(-29.0)
    assert "reproduced/r3" not in metrics and "delta/r3" not in metrics  # not run: skipped


# ---------------------------------------------------------------- a tracking server on loopback

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a temporary SQLite store and artifacts proxied to a
    temporary folder; yields (url, artifacts folder); stopped (its whole process group) at the end."""
    root = tmp_path_factory.mktemp("server")
    url, artifacts = f"http://127.0.0.1:{(port := free_port())}", root / "artifacts"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: faster start
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180  # a few seconds on an idle machine; much more on a busy one
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{(root / 'server.log').read_text()}")
            try:
                with urlopen(f"{url}/health", timeout=2) as r:
                    if r.read().strip() == b"OK":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up after 180 s:\n{(root / 'server.log').read_text()}")
            time.sleep(0.25)
        yield url, artifacts
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the group still left
        except ProcessLookupError:
            pass
        log.close()


def api(url: str, path: str, query: dict | None = None, body: dict | None = None):
    """GET (or POST `body` as JSON) on the server's REST API; the decoded JSON answer, or bytes."""
    full = f"{url}{path}" + (f"?{urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    with urlopen(Request(full, data=data, headers={"Content-Type": "application/json"}), timeout=30) as r:
        raw = r.read()
    return json.loads(raw) if r.headers.get_content_type() == "application/json" else raw


def test_comparison_over_rest(server, tmp_path, monkeypatch):
    url, artifacts = server
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")  # the explicit URI must win
    c = make_results(tmp_path)
    run_id = log_comparison(c, tracking_uri=url)
    assert not elsewhere.exists()

    experiment = api(url, "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": "alpha"})["experiment"]
    found = api(url, "/api/2.0/mlflow/runs/search", body={
        "experiment_ids": [experiment["experiment_id"]],
        "filter": "tags.kind = 'comparison' and tags.table = 't1' and tags.scale = 'mini'"})["runs"]
    assert [r["info"]["run_id"] for r in found] == [run_id]
    run = found[0]
    assert run["info"]["run_name"] == "compare/t1/mini" and run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert {k: tags[k] for k in ("paper", "table", "scale", "kind")} == {
        "paper": "alpha", "table": "t1", "scale": "mini", "kind": "comparison"}
    check_comparison_metrics({m["key"]: m["value"] for m in run["data"]["metrics"]})
    history = api(url, "/api/2.0/mlflow/metrics/get-history", {"run_id": run_id, "metric_key": "delta/r1"})
    assert [m["value"] for m in history["metrics"]] == [pytest.approx(-29.5)]

    listed = api(url, "/api/2.0/mlflow/artifacts/list", {"run_id": run_id})
    assert {f["path"] for f in listed["files"]} == {"t1.md", "t1.json", "t1.table.json"}
    assert listed["root_uri"].startswith("mlflow-artifacts:/")  # proxied by the server, not a local path
    where = listed["root_uri"].removeprefix("mlflow-artifacts:/")
    assert api(url, f"/api/2.0/mlflow-artifacts/artifacts/{where}/t1.md") == c.md_path.read_bytes()
    assert (artifacts / where / "t1.json").read_bytes() == c.json_path.read_bytes()


def test_rebuild_over_http(server, tmp_path):
    url, _ = server
    make_results(tmp_path)
    (tmp_path / "papers" / "alpha" / "results" / "mini" / "claims.json").write_text(
        json.dumps({**CLAIMS, "paper": "alpha_http"}))  # its own experiment: independent of the test above
    first = rebuild(tracking_uri=url, root=tmp_path)
    # the comparison run test_comparison_over_rest logged for alpha/t1/mini, if it ran, is replaced
    assert sorted((a, n) for a, n, _ in first if a != "deleted") == [("created", "alpha/compare/t1/mini"),
                                                                    ("created", "alpha_http/claims/mini")]
    assert {(a, n) for a, n, _ in first if a == "deleted"} <= {("deleted", "alpha/compare/t1/mini")}
    assert [a for a, _, _ in rebuild(tracking_uri=url, root=tmp_path)] == ["unchanged", "unchanged"]
    alpha = api(url, "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": "alpha"})["experiment"]
    found = api(url, "/api/2.0/mlflow/runs/search", body={
        "experiment_ids": [alpha["experiment_id"]], "filter": "tags.kind = 'comparison'"})["runs"]
    assert [r["info"]["run_name"] for r in found] == ["compare/t1/mini"]  # one run per table and scale
    experiment = api(url, "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": "alpha_http"})
    runs = api(url, "/api/2.0/mlflow/runs/search", body={
        "experiment_ids": [experiment["experiment"]["experiment_id"]], "filter": "tags.source = 'rebuild'"})
    assert [r["info"]["run_name"] for r in runs["runs"]] == ["claims/mini"]
    listed = api(url, "/api/2.0/mlflow/artifacts/list", {"run_id": runs["runs"][0]["info"]["run_id"]})
    assert {f["path"] for f in listed["files"]} == {"claims.json", "claims.md"}


# ---------------------------------------------------------------- rebuild on a SQLite store

def active_runs(client, experiment: str) -> dict[str, object]:
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}


def test_rebuild_is_idempotent(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    c = make_results(tmp_path)
    folder = tmp_path / "papers" / "alpha" / "results" / "mini"
    logged = log_comparison(c, tracking_uri=uri)  # a report stage's run of the same table: replaced
    with tracking.MLflowLogger("alpha", "train/r1/seed0", {"stage": "train"}, uri) as stage_run:
        pass  # a stage's run: rebuild never touches it
    client = MlflowClient(uri)

    actions = rebuild(tracking_uri=uri, root=tmp_path)
    ids = {name: run_id for action, name, run_id in actions if action == "created"}
    assert sorted((a, n) for a, n, _ in actions) == [("created", "alpha/claims/mini"),
                                                    ("created", "alpha/compare/t1/mini"),
                                                    ("deleted", "alpha/compare/t1/mini")]
    assert ("deleted", "alpha/compare/t1/mini", logged) in actions
    comparison = client.get_run(ids["alpha/compare/t1/mini"])
    tags = comparison.data.tags
    assert {k: tags[k] for k in ("paper", "table", "scale", "kind", "source", "rebuild_from")} == {
        "paper": "alpha", "table": "t1", "scale": "mini", "kind": "comparison", "source": "rebuild",
        "rebuild_from": "papers/alpha/results/mini"}
    assert tags["mlflow.source.git.commit"] == c.provenance["commit"]  # who made the numbers
    assert comparison.data.params["command"] == c.provenance["command"]
    check_comparison_metrics(comparison.data.metrics)
    assert {a.path for a in client.list_artifacts(comparison.info.run_id)} == {
        "t1.md", "t1.json", "claims.json", "figure3.png", "t1.table.json"}

    claims = client.get_run(ids["alpha/claims/mini"])
    assert claims.data.tags["kind"] == "claims" and claims.data.tags["verdict/a"] == "inconclusive"
    assert claims.data.tags["mlflow.source.git.commit"] == "abc123"
    assert claims.data.params == {"claim/a": "fakes help", "rule/a": "one-sided Welch, p < 0.05"}
    assert claims.data.metrics == {"alpha/a": 0.05, "difference/a": 3.0, "p/a": 0.08,  # vs names a setup: no metric
                                   "ci95_low/a": -1.0, "ci95_high/a": 7.0}
    assert {a.path for a in client.list_artifacts(claims.info.run_id)} == {"claims.json", "claims.md"}
    md = Path(client.download_artifacts(claims.info.run_id, "claims.md", str(tmp_path)))
    assert md.read_text() == scorecard([folder / "claims.json"], tmp_path)
    assert claims.data.tags["mlflow.note.content"] == md.read_text()  # the description the UI shows
    assert comparison.data.tags["mlflow.note.content"] == c.md_path.read_text()

    # twice: nothing new, nothing lost
    assert sorted(rebuild(tracking_uri=uri, root=tmp_path)) == sorted(
        ("unchanged", n, i) for n, i in ids.items())
    assert set(active_runs(client, "alpha")) == {stage_run.run_id, *ids.values()}

    # a changed file remakes the runs that carry it (claims.json is an artifact of both); a table
    # whose files are gone loses its run
    (folder / "figure3.png").write_bytes(b"\x89PNG redrawn")
    again = {(a, n) for a, n, _ in rebuild(tracking_uri=uri, root=tmp_path)}
    assert again == {("created", "alpha/compare/t1/mini"), ("deleted", "alpha/compare/t1/mini"),
                     ("unchanged", "alpha/claims/mini")}
    (folder / "claims.json").write_text(json.dumps({**CLAIMS, "claims": [
        {**CLAIMS["claims"][0], "verdict": "holds"}]}))
    again = {(a, n) for a, n, _ in rebuild(tracking_uri=uri, root=tmp_path)}
    assert again == {(a, n) for a in ("created", "deleted")
                     for n in ("alpha/compare/t1/mini", "alpha/claims/mini")}
    c.md_path.unlink()
    c.json_path.unlink()
    rebuilt = {(a, n) for a, n, _ in rebuild(tracking_uri=uri, root=tmp_path)}
    assert rebuilt == {("unchanged", "alpha/claims/mini"), ("deleted", "alpha/compare/t1/mini")}
    runs = active_runs(client, "alpha")
    assert sorted(r.info.run_name for r in runs.values()) == ["claims/mini", "train/r1/seed0"]
    assert runs[stage_run.run_id].data.tags.get("source") is None
    assert [r.data.tags["verdict/a"] for r in runs.values() if r.info.run_name == "claims/mini"] == ["holds"]


def test_rebuild_loads_sweeps_without_duplicates(tmp_path):
    """A sweep's summary.json becomes run sweep/<study> with one nested run per trial; twice, nothing
    new; a sweep's own run (python -m shared.tune) in the store wins over the summary."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_results(tmp_path)
    folder = make_sweep(tmp_path)
    first = rebuild(tracking_uri=uri, root=tmp_path)
    assert sorted((a, n) for a, n, _ in first) == [("created", "alpha/claims/mini"),
                                                  ("created", "alpha/compare/t1/mini"),
                                                  ("created", "alpha/sweep/lr-mini")]
    again = rebuild(tracking_uri=uri, root=tmp_path)
    assert sorted(again) == sorted(("unchanged", n, i) for _, n, i in first)
    client = MlflowClient(uri)
    runs = active_runs(client, "alpha")
    names = sorted(r.info.run_name for r in runs.values())
    assert names == ["claims/mini", "compare/t1/mini", "sweep/lr-mini", "trial 0", "trial 1"]  # no duplicates

    sweep = next(r for r in runs.values() if r.info.run_name == "sweep/lr-mini")
    assert {k: sweep.data.tags[k] for k in ("kind", "study", "scale", "paper", "source")} == {
        "kind": "sweep", "study": "lr-mini", "scale": "mini", "paper": "alpha", "source": "rebuild"}
    assert sweep.data.metrics == {"best/acc": 41.0, "defaults/acc": 40.0, "reference_sgd/acc": 39.5}
    assert sweep.data.params["space.lr"] == "train.lr" and sweep.data.params["study"] == "lr-mini"
    assert sweep.data.tags["mlflow.note.content"] == (folder / "summary.md").read_text()
    assert {a.path for a in client.list_artifacts(sweep.info.run_id)} == {
        "summary.json", "summary.md", "best_params.yaml"}
    trial1 = next(r for r in runs.values() if r.info.run_name == "trial 1")
    assert trial1.data.tags["mlflow.parentRunId"] == sweep.info.run_id and trial1.data.params == {"trial.lr": "0.3"}
    assert [(m.step, m.value) for m in client.get_metric_history(trial1.info.run_id, "eval/acc")] == [
        (1, 36.0), (2, 41.0)]
    assert trial1.data.metrics["objective/acc"] == 41.0

    # the sweep run by the pipeline: the rebuilt summary and its trials go, and stay gone
    with tracking.MLflowLogger("alpha", "sweep/lr-mini", {"kind": "sweep", "study": "lr-mini", "scale": "mini",
                                                          "paper": "alpha", "stage": "train"}, uri) as own:
        pass
    third = rebuild(tracking_uri=uri, root=tmp_path)
    assert ("skipped", "alpha/sweep/lr-mini", own.run_id) in third
    assert sorted(n for a, n, _ in third if a == "deleted") == [
        "alpha/sweep/lr-mini", "alpha/trial 0", "alpha/trial 1"]
    assert sorted(r.info.run_name for r in active_runs(client, "alpha").values()) == [
        "claims/mini", "compare/t1/mini", "sweep/lr-mini"]
    assert {a for a, _, _ in rebuild(tracking_uri=uri, root=tmp_path)} == {"unchanged", "skipped"}


def test_rebuild_rejects_a_folder_that_is_not_a_scale(tmp_path):
    (tmp_path / "papers" / "alpha" / "results" / "tiny").mkdir(parents=True)
    with pytest.raises(ValueError, match="named by scale"):
        rebuild(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", root=tmp_path)


def test_rebuild_the_committed_results(tmp_path):
    """What a fresh clone gets: every committed table and claims file loads into an empty store."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    table = REPO / "papers" / "gan_simclr" / "results" / "mini" / "table1.json"
    doc = json.loads(table.read_text())
    assert Comparison.from_dict(doc, str(table)).to_dict() == doc
    ids = {name: run_id for action, name, run_id in rebuild(tracking_uri=uri) if action == "created"}
    assert {"gan_simclr/compare/table1/mini", "gan_simclr/claims/mini",
            "gan_simclr/sweep/lars_fake0-mini"} <= set(ids)
    metrics = MlflowClient(uri).get_run(ids["gan_simclr/compare/table1/mini"]).data.metrics
    row = next(r for r in doc["rows"] if r["id"] == "lars_fake10000")
    assert metrics["reported/lars_fake10000"] == 70.323
    assert metrics["reproduced/lars_fake10000"] == pytest.approx(row["reproduced_mean"])


# ---------------------------------------------------------------- the UI command and run tags

def test_ui_command(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert ui_command(uri, port=5123) == [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                          "--host", "127.0.0.1", "--port", "5123", "--workers", "1"]
    with pytest.raises(ValueError, match="tracking server already"):
        ui_command("http://127.0.0.1:5000")
    calls = []
    monkeypatch.setattr(cli.os, "execve", lambda *a: calls.append(a))
    cli.main(["ui", "--tracking-uri", uri, "--port", "5123"])
    (exe, argv, env), = calls
    assert exe == sys.executable and argv == ui_command(uri, port=5123)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "rebuild" in capsys.readouterr().err  # the store does not exist yet: say how to fill it
    assert cli.main(["ui", "--tracking-uri", "http://127.0.0.1:5000"]) == 2


def test_stage_runs_carry_filter_tags():
    suite = SuiteConfig(scale="mini", seed=0, tracking=TrackingConfig(backend="none"))
    with tracking.stage_logger(suite, "gan_simclr", "pretrain/x", {"lr": 0.1}, stage="pretrain",
                               table="table1", row="lars_fake0", seed=2) as log:
        pass
    assert log.tags == {"paper": "gan_simclr", "scale": "mini", "seed": "2", "stage": "pretrain",
                        "table": "table1", "row": "lars_fake0"}
    with tracking.stage_logger(suite, "data", "prepare/cifar10", {}, stage="prepare") as log:
        pass
    assert "paper" not in log.tags and log.tags["seed"] == "0"  # `data` is no paper
