"""缩放定律与预算：fit_power_law 对照 scipy.optimize.curve_fit（同一个目标函数）在许多条带噪声的合成曲线上；
无噪声时恢复真值；6ND、20 个词/参数、天数、外推表对照手算。"""

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

from aigc_lib.scale import (
    PowerLaw,
    chinchilla_tokens,
    extrapolation_table,
    fit_power_law,
    training_days,
    training_flops,
)


def power_law(n, E, A, alpha):
    return E + A * n ** (-alpha)


def random_curve(seed, noise):
    rng = np.random.default_rng(seed)
    E, A, alpha = rng.uniform(1.0, 3.0), rng.uniform(5.0, 300.0), rng.uniform(0.1, 0.7)
    n = np.geomspace(rng.uniform(1e4, 1e5), rng.uniform(3e6, 1e8), rng.integers(5, 10))
    loss = power_law(n, E, A, alpha) * (1 + noise * rng.standard_normal(len(n)))
    return n, loss, (E, A, alpha)


def sse(params, n, loss):
    return float(((loss - power_law(n, *params)) ** 2).sum())


@pytest.mark.parametrize("seed", range(40))
def test_matches_curve_fit_on_noisy_curves(seed):
    """带 1% 噪声：两者最小化同一个残差平方和，手写的不比 curve_fit 差；参数和外推到 10 倍大小的预测都一致。"""
    n, loss, truth = random_curve(seed, noise=0.01)
    ours = fit_power_law(n, loss)
    reference, _ = curve_fit(power_law, n, loss, p0=truth, maxfev=20000, xtol=1e-14, ftol=1e-14)
    assert sse(ours, n, loss) <= sse(reference, n, loss) * (1 + 1e-6) + 1e-15
    bigger = n.max() * np.array([1.0, 3.0, 10.0])
    assert np.allclose(ours.predict(bigger), power_law(bigger, *reference), rtol=1e-4)
    assert np.allclose(ours, reference, rtol=1e-3, atol=1e-6), (ours, reference)


@pytest.mark.parametrize("seed", range(20))
def test_recovers_noise_free_parameters(seed):
    n, loss, truth = random_curve(seed, noise=0.0)
    fit = fit_power_law(n, loss)
    assert isinstance(fit, PowerLaw)
    assert np.allclose(fit, truth, rtol=1e-6)
    assert fit.predict(1e9) == pytest.approx(power_law(1e9, *truth), rel=1e-9)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="至少 3 个点"):
        fit_power_law([1e5, 1e6], [3.0, 2.5])
    with pytest.raises(ValueError, match="大于 0"):
        fit_power_law([0, 1e5, 1e6], [3.0, 2.8, 2.5])


def test_budget_formulas_by_hand():
    # 7B：20 × 7e9 = 1.4e11 个词；6 × 7e9 × 1.4e11 = 5.88e21 次运算；
    # 8 块 × 989e12 × 0.4 = 3.1648e15 次/秒 -> 5.88e21 / 3.1648e15 = 1 857 937 秒 ≈ 21.504 天
    assert chinchilla_tokens(7e9) == 1.4e11
    assert training_flops(7e9, 1.4e11) == pytest.approx(5.88e21)
    assert training_days(5.88e21, 8, 989e12, 0.4) == pytest.approx(21.504, abs=1e-3)
    assert training_days(3.6e18, 1, 1e12, 0.5) == pytest.approx(3.6e18 / 5e11 / 86400)  # 83 333.3 天
    assert chinchilla_tokens(1e9, tokens_per_param=10) == 1e10
    with pytest.raises(ValueError):
        training_days(1e20, 8, 989e12, 1.5)


def test_extrapolation_table_by_hand():
    rows = extrapolation_table(sizes=(1e9, 70e9), n_gpus=8, utilization=0.4)
    one, seventy = rows
    assert one["params"] == 1e9 and one["tokens"] == 2e10 and one["flops"] == pytest.approx(1.2e20)
    assert one["days"] == pytest.approx(1.2e20 / (8 * 989e12 * 0.4) / 86400)  # ≈ 0.44 天
    # 70B、AdamW：16 B/参数 = 1.12e12 B（1043 GiB）；FSDP 切成 8 份 = 1.4e11 B
    for precision in ("fp32", "bf16-mixed"):
        assert seventy[f"memory_single_{precision}"] == seventy[f"memory_ddp_{precision}"] == 1.12e12
        assert seventy[f"memory_fsdp_{precision}"] == 1.4e11
    assert seventy["days"] == pytest.approx(5.88e23 / (8 * 989e12 * 0.4) / 86400)  # ≈ 2150 天
    assert math.isclose(seventy["days"] / one["days"], 70**2)  # 词数也随 N 增长：时间 ∝ N²
