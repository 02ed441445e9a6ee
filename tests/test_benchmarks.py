"""benchmarks/：gpt_throughput 的每字 FLOPs 公式与 PyTorch 自己数出来的一致，脚本在 CPU 上跑得通；
quality_bars 的门槛判断，以及它在 smoke 档位下端到端跑通一项；timing 的交替计时与配对比值的置信区间，
fit_overhead 按置信区间决定返回码。"""

import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from aigc_lib.models import GPTLanguageModel

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "gpt_throughput.py"


def load(name):
    if str(BENCHMARKS) not in sys.path:  # 脚本之间用 from timing import ... 互相引用，与直接运行脚本时一样
        sys.path.insert(0, str(BENCHMARKS))
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


# ---------------------------------------------------------------- timing 与 fit_overhead


def test_interleaved_throughput_alternates_the_order_and_times_only_the_work(monkeypatch):
    timing = load("timing")
    fake = {"t": 0.0}  # 假时钟：只有 work 和 prepare 拨动它
    monkeypatch.setattr(timing, "clock", lambda dev: fake["t"])
    calls = []

    def run(name, seconds, items):
        def prepare():
            fake["t"] += 100.0  # 准备阶段的时间不计入
            calls.append(name)

            def work():
                fake["t"] += seconds
            return work, items
        return prepare

    speeds = timing.interleaved_throughput({"a": run("a", 2.0, 10), "b": run("b", 4.0, 10)}, torch.device("cpu"),
                                           repeats=4, warmup=2)
    assert calls == ["a", "b"] * 2 + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert speeds == {"a": [5.0] * 4, "b": [2.5] * 4}


def numpy_ci(ratios, level, resamples, seed):
    """对照：同样的种子、同样的重抽，分位数交给 numpy.percentile（线性插值）。"""
    rng = random.Random(seed)
    meds = [statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples)]
    return tuple(np.percentile(meds, [50 * (1 - level), 50 * (1 + level)]))


def test_paired_ratio_gives_the_median_and_a_bootstrap_interval_that_covers_the_truth():
    timing = load("timing")
    rng = random.Random(0)
    covered = 0
    trials = 150
    for trial in range(trials):
        n = rng.randint(15, 40)
        bare = [rng.uniform(5e3, 1.2e4) for _ in range(n)]  # 机器忽快忽慢：每轮的速度差别很大
        fit = [b * 0.98 * rng.lognormvariate(0, 0.05) for b in bare]  # 真实比值的中位数是 0.98
        median, low, high = timing.paired_ratio(fit, bare, resamples=1000, seed=trial)
        ratios = [f / b for f, b in zip(fit, bare)]
        assert median == statistics.median(ratios)
        assert low <= median <= high
        assert (low, high) == pytest.approx(numpy_ci(ratios, 0.95, 1000, trial), rel=1e-12)
        covered += low <= 0.98 <= high
    assert 0.88 <= covered / trials <= 0.995  # 95% 的区间大约 95% 的时候包住真值
    with pytest.raises(ValueError, match="等长"):
        timing.paired_ratio([1.0, 2.0], [1.0])


@pytest.mark.parametrize("factor, noise, code", [(1.0, 0.01, 0), (0.985, 0.01, 0), (0.9, 0.01, 1), (0.955, 0.01, 1),
                                                 (0.966, 0.08, 0)])
def test_fit_overhead_exits_non_zero_only_when_fit_is_surely_slower(monkeypatch, capsys, factor, noise, code):
    bench = load("fit_overhead")
    rng = random.Random(1)
    bare = [rng.uniform(6e3, 1e4) for _ in range(bench.REPEATS)]
    fit = [b * factor * rng.lognormvariate(0, noise) for b in bare]
    median, low, high = bench.paired_ratio(fit, bare)
    if noise > 0.05:  # 中位数低于 0.97，但区间的上界没有：还不能断定 fit 更慢
        assert median < bench.TARGET <= high
    monkeypatch.setattr(bench, "interleaved_throughput", lambda runs, dev, repeats, warmup: {"fit": fit, "bare": bare})
    monkeypatch.setattr(bench, "device", lambda: torch.device("cpu"))
    assert bench.main() == code
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"ratio {median:.3f} [{low:.3f}, {high:.3f}]"


def test_fit_overhead_runs_both_loops_on_the_same_work(monkeypatch):
    """极小的尺寸真跑一遍：fit 与手写循环训练出完全相同的权重（比的是同一件事），各跑 REPEATS 次。"""
    bench = load("fit_overhead")
    cfg = dict(vocab=50, dim=8, hidden=16, classes=3, seq=5, batch=4, steps=3)
    cfg["data"] = bench.make_data(cfg)
    dev = torch.device("cpu")
    models, make = [], bench.make

    def recording_make(cfg, dev):
        built = make(cfg, dev)
        models.append(built[0])
        return built

    monkeypatch.setattr(bench, "make", recording_make)
    for prepare in (bench.through_fit, bench.bare_loop):
        work, items = prepare(cfg, dev)
        work()
        assert items == 12
    fitted, bare = (m.state_dict() for m in models)
    for key in bare:
        assert torch.equal(fitted[key], bare[key]), key
    assert any(not torch.equal(bare[k], v) for k, v in bench.make(cfg, dev)[0].state_dict().items())  # 确实训练了
    speeds = bench.interleaved_throughput({"fit": lambda: bench.through_fit(cfg, dev),
                                           "bare": lambda: bench.bare_loop(cfg, dev)}, dev, repeats=3, warmup=0)
    assert [len(v) for v in speeds.values()] == [3, 3] and all(x > 0 for v in speeds.values() for x in v)


@pytest.mark.parametrize("args, expected", [
    (["--lanes", "two"], "参数 --lanes 要一个整数，收到的是 'two'"),
    (["--lanes"], "参数 --lanes 后面要跟一个值"),
    (["--export-only=1"], "参数 --export-only 不带值，却收到了 '1'"),
    (["--bogus", "1"], "不认识的参数：--bogus 1"),
])
def test_benchmark_scripts_speak_chinese(args, expected):
    # 在子进程里像用户一样运行：写错参数时返回 2，打印中文用法和说明，不出现 argparse 的英文
    script = BENCHMARKS / "train_reference.py"
    wrong = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, encoding="utf-8")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.startswith("用法：train_reference.py") and expected in wrong.stderr
    assert "usage" not in wrong.stderr and "error" not in wrong.stderr


def test_benchmark_help_and_untranslated_messages():
    help_text = subprocess.run([sys.executable, str(BENCHMARKS / "quality_bars.py"), "--help"],
                               capture_output=True, text=True, encoding="utf-8", check=True).stdout
    assert help_text.startswith("用法：quality_bars.py") and "选项" in help_text and "显示帮助并退出" in help_text
    assert "--budget X" in help_text and "--profile {cpu,gpu,smoke}" in help_text and "options" not in help_text
    zh_args = load("zh_args")
    assert zh_args.chinese_message("argument --x: invalid float value: 'a'") == "参数 --x 要一个数，收到的是 'a'"
    assert zh_args.chinese_message("something new") == "something new"  # 不认识的原样留下
