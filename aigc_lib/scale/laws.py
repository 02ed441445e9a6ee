"""缩放定律：用 L(N) = E + A / N^α 拟合"损失随参数量 N 怎样下降"，再外推到没训练过的大小。

E 是不可约的损失（数据本身的熵，模型再大也降不下去），A / N^α 是"模型不够大"多付的损失。
Kaplan et al. (2020) 在大语言模型上测得 α ≈ 0.076（损失随参数量，数据足够多时），
Hoffmann et al. (2022, Chinchilla) 的拟合是 L(N, D) = E + A/N^0.34 + B/D^0.28。

拟合的做法（变量投影）：α 固定时，模型 E + A·x（x = N^-α）对 E、A 是线性的，最小二乘有闭式解；
于是只剩一个未知数 α，先在网格上找到最好的一段，再用黄金分割搜索把它找准。目标函数与
``scipy.optimize.curve_fit`` 相同（原尺度上的残差平方和），测试里拿两者对照。
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class PowerLaw(NamedTuple):
    """拟合结果 L(N) = E + A / N^alpha；可以直接解包 ``E, A, alpha = fit``。"""

    E: float
    A: float
    alpha: float

    def predict(self, n) -> np.ndarray | float:
        """在参数量 ``n``（一个数或数组）处的预测损失。"""
        value = self.E + self.A * np.power(np.asarray(n, dtype=float), -self.alpha)
        return float(value) if np.ndim(value) == 0 else value


def _linear_fit(x: np.ndarray, loss: np.ndarray) -> tuple[float, float, float]:
    """loss ≈ E + A·x 的最小二乘解 (E, A) 和残差平方和。"""
    design = np.stack([np.ones_like(x), x], axis=1)  # (n, 2)
    (E, A), *_ = np.linalg.lstsq(design, loss, rcond=None)
    residual = loss - E - A * x
    return float(E), float(A), float(residual @ residual)


def fit_power_law(n, loss, alpha_range: tuple[float, float] = (1e-3, 3.0), grid: int = 300,
                  tol: float = 1e-10) -> PowerLaw:
    """拟合 L(N) = E + A / N^α，返回 :class:`PowerLaw` (E, A, alpha)。

    参数：
        n: 各个模型的参数量（或任何正的"规模"，例如计算量）；loss: 对应的损失。至少 3 个点。
        alpha_range: 在这个区间里找 α；grid: 先在网格上试多少个 α；tol: 黄金分割停止时 α 的区间宽度。

    为了数值稳定，先把 N 除以它们的几何平均 N₀：x = (N/N₀)^-α，拟合出 A' 后再换回 A = A'·N₀^α。

    >>> n = np.array([1e5, 3e5, 1e6, 3e6, 1e7])
    >>> fit = fit_power_law(n, 1.5 + 40.0 / n ** 0.3)
    >>> [round(v, 4) for v in fit]
    [1.5, 40.0, 0.3]
    """
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if n.shape != loss.shape or n.ndim != 1 or len(n) < 3:
        raise ValueError(f"fit_power_law 要两个等长的一维序列、至少 3 个点（三个未知数），收到 {n.shape} 和 {loss.shape}。")
    if np.any(n <= 0) or not np.all(np.isfinite(loss)):
        raise ValueError("fit_power_law：参数量必须都大于 0，损失必须都是有限的数。")
    scale = math.exp(np.log(n).mean())  # 几何平均 N₀
    log_ratio = np.log(n / scale)

    def sse(alpha: float) -> float:
        return _linear_fit(np.exp(-alpha * log_ratio), loss)[2]

    # 1) 网格：找到残差最小的 α 和它左右两个邻居，最小值就夹在这一段里
    alphas = np.linspace(*alpha_range, grid)
    errors = [sse(a) for a in alphas]
    best = int(np.argmin(errors))
    lo, hi = alphas[max(best - 1, 0)], alphas[min(best + 1, grid - 1)]
    # 2) 黄金分割：每步把区间缩成 0.618 倍，保留夹着最小值的那段
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo + (1 - ratio) * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = sse(a), sse(b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - ratio) * (hi - lo)
            fa = sse(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = sse(b)
    alpha = (lo + hi) / 2
    E, A_scaled, _ = _linear_fit(np.exp(-alpha * log_ratio), loss)
    return PowerLaw(E, float(A_scaled * scale**alpha), float(alpha))
