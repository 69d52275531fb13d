import json
import subprocess
import sys

import pytest
import torch

from shared.bench import bench_ssl
from shared.device import autocast, pick_device, prepare_batch, to_device
from shared.models import resnet18

from shared.config import REPO_ROOT as REPO


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="key 'device' asks for 'cuda'"):
            pick_device("cuda")


def test_channels_last_model_matches_contiguous_and_autocast_is_a_cpu_no_op():
    torch.manual_seed(0)
    model = resnet18(width=1 / 16).eval()
    x = torch.rand(2, 3, 16, 16)
    ref = model(x)
    cl_model = to_device(model, torch.device("cpu"))
    assert cl_model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = prepare_batch(x, torch.device("cpu"))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    with autocast(torch.device("cpu")):
        out = cl_model(batch)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_autocast_is_bf16():
    device = torch.device("cuda")
    model = to_device(resnet18(width=0.25), device)
    with autocast(device):
        assert model(prepare_batch(torch.rand(2, 3, 32, 32, device=device), device)).dtype == torch.bfloat16


def test_bench_reports_the_three_throughputs():
    result = bench_ssl(width=1 / 16, batch_size=8, steps=2, warmup=1, workers=0, repeats=1)
    for key in ("suite_ips", "model_only_ips", "pil_pipeline_ips"):
        assert result[key] > 0
    assert result["suite_over_model"] == pytest.approx(result["suite_ips"] / result["model_only_ips"], rel=1e-2)


def test_bench_cli_prints_one_json_line():
    out = subprocess.run([sys.executable, "-m", "shared.bench", "ssl", "--json", "--width", "0.0625",
                          "--batch-size", "8", "--steps", "1", "--warmup", "1", "--repeats", "1",
                          "--workers", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["bench"] == "ssl"
