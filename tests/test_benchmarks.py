"""benchmarks/：gpt_throughput 的每字 FLOPs 公式与 PyTorch 自己数出来的一致，脚本在 CPU 上跑得通；\nquality_bars 的门槛判断，以及它在 smoke 档位下端到端跑通一项。"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from aigc_lib.models import GPTLanguageModel

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "gpt_throughput.py"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load("gpt_throughput")


@pytest.mark.parametrize("vocab, d_model, heads, layers, block", [
    (300, 32, 4, 2, 16), (1000, 64, 4, 3, 64), (200, 48, 6, 1, 128), (50, 16, 2, 4, 8),
])
def test_flops_per_token_matches_torch_flop_counter(bench, vocab, d_model, heads, layers, block):
    torch.manual_seed(0)
    model = GPTLanguageModel(vocab, d_model=d_model, num_heads=heads, num_layers=layers, dropout=0.0, context_len=block)
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
        [sys.executable, str(SCRIPT), "--d-model", "16", "--num-heads", "2", "--num-layers", "1", "--context-len", "8",
         "--batch-size", "4", "--batches", "3", "--vocab", "40"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("设备：CPU") and "宽 16、1 层、2 头" in lines[0]
    throughput = [line for line in lines if line.startswith("训练吞吐")]
    assert len(throughput) == 1 and float(throughput[0].split("：")[1].split(" ")[0].replace(",", "")) > 0
    assert lines[-1] == "MFU 只在 CUDA 上计算（CPU 没有公认的 bf16 峰值）。"


def test_quality_bars_compare_each_profile_with_its_thresholds():
    bars = load("quality_bars")
    cpu = {"sentiment-gru": 0.8616, "sentiment-lstm": 0.8399, "segment": 0.93, "ner": 0.86, "pinyin": 0.80}
    rows = {row["bar"]: row for row in bars.check_bars("cpu", cpu)}
    assert [r["passed"] for r in rows.values()] == [True, False, True, True, True]  # 0.8399 < 0.84；0.80 恰好达标
    assert rows["情感分类 GRU 准确率 ≥ 0.84"]["value"] == 0.8616
    # gpu：情感分类看最好的家族；GPT 要比 LSTM 的困惑度低；没测的项目不判断
    gpu = bars.check_bars("gpu", {"sentiment-gru": 0.87, "sentiment-lstm": 0.885, "lm-gpt": 90.0, "lm-lstm": 100.0})
    by_bar = {row["bar"]: row for row in gpu}
    assert by_bar["情感分类 最好的家族 准确率 ≥ 0.88"] == {"bar": "情感分类 最好的家族 准确率 ≥ 0.88", "measured": True,
                                                         "value": 0.885, "passed": True}
    assert by_bar["GPT 困惑度 / LSTM 困惑度 < 1"]["value"] == pytest.approx(0.9)
    assert by_bar["GPT 困惑度 / LSTM 困惑度 < 1"]["passed"]
    assert not by_bar["拼音 -> 汉字 字准确率 ≥ 0.93"]["measured"]
    worse = bars.check_bars("gpu", {"sentiment-gru": 0.8, "lm-gpt": 120.0, "lm-lstm": 100.0})
    assert [row.get("passed") for row in worse if row["measured"]] == [False, False]


def test_quality_bars_runs_one_job_end_to_end_in_smoke(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = str(BENCHMARKS / "quality_bars.py")
    result = subprocess.run([sys.executable, script, "--profile", "smoke", "--only", "lm-gpt", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "passed 0/0"  # smoke 档位没有门槛
    saved = json.loads((tmp_path / "bars.json").read_text("utf-8"))
    job = saved["jobs"]["lm-gpt"]
    assert saved["profile"] == "smoke" and list(saved["jobs"]) == ["lm-gpt"]
    assert job["metric"] == "perplexity" and job["value"] == job["evaluate"]["perplexity"] > 1
    assert (tmp_path / "lm-gpt" / "best.pt").is_file()
    # 预算用完：不再开始新的一项，写明原因
    skipped = subprocess.run([sys.executable, script, "--profile", "smoke", "--only", "lm-gpt", "--budget", "-1",
                              "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env, timeout=60)
    assert skipped.returncode == 0
    assert "已用完" in json.loads((tmp_path / "b" / "bars.json").read_text("utf-8"))["jobs"]["lm-gpt"]["skipped"]
    bad = subprocess.run([sys.executable, script, "--only", "poetry"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "不认识的项目：poetry" in bad.stderr
