"""benchmarks/gpt_throughput.py：MFU 用的每字 FLOPs 公式与 PyTorch 自己数出来的一致；脚本在 CPU 上跑得通。"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from aigc_lib.models import GPTLanguageModel

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpt_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpt_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("vocab, d_model, heads, layers, block", [
    (300, 32, 4, 2, 16), (1000, 64, 4, 3, 64), (200, 48, 6, 1, 128), (50, 16, 2, 4, 8),
])
def test_flops_per_token_matches_torch_flop_counter(bench, vocab, d_model, heads, layers, block):
    torch.manual_seed(0)
    model = GPTLanguageModel(vocab, d_model=d_model, num_heads=heads, num_layers=layers, dropout=0.0, max_len=block)
    batch = 2
    tokens = torch.randint(0, vocab, (batch, block))
    # 数学路径的注意力由普通的矩阵乘法组成，FlopCounterMode 能数到（按完整的 T×T 计，与公式的约定相同）
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens).logsumexp(-1).mean().backward()
    # 计数器只数矩阵乘法；公式的 6N 还含偏置和 LayerNorm 的参数（每个 6 次运算）
    vector_params = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    counted = counter.get_total_flops() / (batch * block) + 6 * vector_params
    assert bench.flops_per_token(model, block) == pytest.approx(counted, rel=1e-9)


def test_peak_table_picks_the_specific_name_first(bench):
    cases = {
        "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H100 NVL": 835.0, "NVIDIA H200": 989.0,
        "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA L40S": 362.0, "NVIDIA L40": 181.0, "NVIDIA L4": 121.0,
        "NVIDIA A10G": 70.0, "NVIDIA A10": 125.0, "NVIDIA GeForce RTX 4090": 165.0,
    }
    for name, peak in cases.items():
        assert bench.peak_tflops(name) == peak, name
    assert bench.peak_tflops("Tesla T4") is None


def test_script_runs_on_cpu_with_tiny_sizes():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--d-model", "16", "--heads", "2", "--layers", "1", "--block-size", "8",
         "--batch-size", "4", "--batches", "3", "--vocab", "40"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("设备：CPU") and "宽 16、1 层、2 头" in lines[0]
    throughput = [line for line in lines if line.startswith("训练吞吐")]
    assert len(throughput) == 1 and float(throughput[0].split("：")[1].split(" ")[0].replace(",", "")) > 0
    assert lines[-1] == "MFU 只在 CUDA 上计算（CPU 没有公认的 bf16 峰值）。"
