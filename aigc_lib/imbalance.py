"""类别不均衡的四种对策：重采样、类别权重、Focal Loss、移动判定阈值。

一个 1:10 的数据集上，模型把所有样本都判成多数类，准确率也有 91%，可少数类一个也没找出来。
本模块给出四种常用的补救办法，每一种都能直接用在 ``fit`` 里（损失函数的调用方式都是
``loss_fn(logits, target)``，采样器直接交给 ``DataLoader``）::

    from torch.utils.data import DataLoader
    from aigc_lib.imbalance import class_weights, resampling_sampler, FocalLoss, best_threshold, apply_threshold

    w = class_weights(train_labels, scheme="balanced")               # (C,)
    loss_fn = torch.nn.CrossEntropyLoss(weight=w.to(dev))            # 1) 类别权重
    sampler = resampling_sampler(train_labels, mode="over", seed=0)  # 2) 重采样
    loader = DataLoader(train_set, batch_size=64, sampler=sampler)   #    （不要再传 shuffle=True）
    loss_fn = FocalLoss(gamma=2.0)                                    # 3) Focal Loss
    t, f1 = best_threshold(val_labels, val_probs, metric="f1")        # 4) 在验证集上选阈值
    test_pred = apply_threshold(test_probs, t)

本模块只依赖 PyTorch，可以单独复制使用。
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Sampler, WeightedRandomSampler

# ---------------------------------------------------------------------------
# 标签计数与类别权重
# ---------------------------------------------------------------------------


def _as_label_tensor(labels) -> torch.Tensor:
    """把列表 / NumPy 数组 / 张量形式的类别标签变成一维 int64 张量（在 CPU 上）。"""
    y = torch.as_tensor(labels).detach().cpu().reshape(-1)
    if y.numel() == 0:
        raise ValueError("标签为空：请传入至少一个样本的类别编号（0, 1, 2, ...）。")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError(
            "标签里有小数：类别标签必须是 0, 1, 2, ... 这样的整数编号。"
            "如果传的是概率或分数，请先用 argmax 或阈值转成类别。"
        )
    y = y.long()
    if int(y.min()) < 0:
        raise ValueError(
            f"标签里有负数 {int(y.min())}：类别编号必须从 0 开始。"
            "若 -100 之类的值表示“忽略”，请先把这些样本过滤掉。"
        )
    return y


def class_counts(labels, num_classes: int | None = None) -> torch.Tensor:
    """数一数每个类别有多少个样本。

    参数：
        labels：类别编号序列，列表、NumPy 数组或张量均可，例如 ``[0, 0, 1, 0]``。
        num_classes：类别总数；不传时取 ``max(labels) + 1``。某些类别在这份数据里一个样本
            都没有时，需要显式传入，返回结果里它们的计数为 0。

    返回：形状 ``(C,)`` 的 int64 张量，第 c 个元素是类别 c 的样本数。

    >>> class_counts([0, 0, 1, 0])
    tensor([3, 1])
    """
    y = _as_label_tensor(labels)
    if num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(
            f"标签里出现了类别 {int(y.max())}，但 num_classes={num_classes}："
            "请把 num_classes 设为最大类别编号 + 1，或检查标签。"
        )
    return torch.bincount(y, minlength=num_classes or 0)


def class_weights(
    labels=None,
    scheme: str = "balanced",
    beta: float = 0.999,
    *,
    counts=None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """由每类样本数算出类别权重，交给 ``nn.CrossEntropyLoss(weight=...)`` 或 ``FocalLoss(alpha=...)``。

    参数：
        labels：训练集的类别编号序列（与 ``counts`` 二选一）。
        scheme：计算方式，记 N 为样本总数、C 为类别数、n_c 为类别 c 的样本数：
            - ``"balanced"``：``N / (C * n_c)``，与 scikit-learn 的
              ``compute_class_weight("balanced")`` 完全相同。加权后每个类别的权重总和都是 N / C。
            - ``"inverse"``：与 ``1 / n_c`` 成正比，再缩放到各类权重的平均值为 1。
            - ``"effective"``：Cui 等 (2019) 的“有效样本数” ``(1 - beta) / (1 - beta ** n_c)``，
              缩放到平均值为 1。beta=0 时所有类别权重相同，beta 越接近 1 越接近 ``"inverse"``。
        beta：只用于 ``"effective"``，取值 [0, 1)。
        counts：直接给出每类样本数（例如 ``class_counts`` 的结果），代替 ``labels``。
        num_classes：类别总数，用法同 ``class_counts``。

    返回：形状 ``(C,)`` 的 float32 张量（在 CPU 上，训练时用 ``.to(device)`` 搬过去）。

    >>> class_weights([0, 0, 0, 1])                    # 4 / (2 * 3), 4 / (2 * 1)
    tensor([0.6667, 2.0000])
    """
    if (labels is None) == (counts is None):
        raise ValueError("请在 labels（每个样本的类别）和 counts（每个类别的样本数）中恰好传一个。")
    if counts is None:
        n = class_counts(labels, num_classes).double()
    else:
        n = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
        if num_classes is not None and n.numel() != num_classes:
            raise ValueError(f"counts 有 {n.numel()} 个类别，与 num_classes={num_classes} 不一致。")
        if bool((n < 0).any()):
            raise ValueError("counts 里有负数：每个类别的样本数必须 >= 0。")
    if bool((n == 0).any()):
        empty = torch.nonzero(n == 0).reshape(-1).tolist()
        raise ValueError(
            f"类别 {empty} 一个样本都没有，权重会是无穷大。请检查标签是否从 0 开始连续编号，"
            "或者把 num_classes 改成实际出现的类别数。"
        )
    C, N = n.numel(), n.sum()
    if scheme == "balanced":
        w = N / (C * n)
    elif scheme == "inverse":
        w = 1.0 / n
        w = w * C / w.sum()  # 缩放到平均值为 1：权重的绝对大小不影响加权平均损失，只影响阅读
    elif scheme == "effective":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta={beta} 不合法：有效样本数方案要求 0 <= beta < 1，常用 0.99 ~ 0.9999。")
        w = (1.0 - beta) / (1.0 - beta**n)
        w = w * C / w.sum()
    else:
        raise ValueError(f"未知的 scheme={scheme!r}：请从 'balanced'、'inverse'、'effective' 中选一个。")
    return w.float()


# ---------------------------------------------------------------------------
# 重采样：改变每个 epoch 里各类样本出现的次数
# ---------------------------------------------------------------------------


class _UnderSampler(Sampler[int]):
    """欠采样：每类随机保留 min_c n_c 个样本（由 seed 决定，只抽一次），每个 epoch 重新打乱顺序。"""

    def __init__(self, y: torch.Tensor, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        counts = torch.bincount(y)
        keep = int(counts[counts > 0].min())
        chosen = []
        for c in torch.nonzero(counts).reshape(-1).tolist():
            members = torch.nonzero(y == c).reshape(-1)  # 类别 c 的全部下标
            pick = torch.randperm(members.numel(), generator=self.generator)[:keep]
            chosen.append(members[pick])
        self.indices = torch.cat(chosen)  # (C * keep,)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.indices.numel(), generator=self.generator)
        return iter(self.indices[order].tolist())

    def __len__(self) -> int:
        return self.indices.numel()


def resampling_sampler(
    labels,
    mode: str = "over",
    seed: int = 0,
    num_samples: int | None = None,
) -> Sampler[int]:
    """返回一个让各类别在训练中“出现得一样多”的采样器，直接传给 ``DataLoader(sampler=...)``。

    参数：
        labels：训练集每个样本的类别编号，顺序与 Dataset 相同。
        mode：
            - ``"over"``（过采样）：按 ``1 / n_c`` 的概率有放回地抽，一个 epoch 抽
              ``C * max_c n_c`` 个下标，少数类样本被重复使用，多数类大致每个见一次。
            - ``"balanced"``：同样按 ``1 / n_c`` 有放回地抽，但 epoch 长度保持为样本总数 N。
            - ``"under"``（欠采样）：每类随机保留 ``min_c n_c`` 个样本（由 seed 决定的一个固定
              子集，可从 ``sampler.indices`` 查看），其余多数类样本丢弃；每个 epoch 打乱顺序。
        seed：随机种子。同一个 seed 得到同一串下标，不读写全局随机状态。
        num_samples：每个 epoch 抽多少个下标，只用于 ``"over"`` 和 ``"balanced"``。

    返回：``torch.utils.data.Sampler``，迭代得到样本下标（int）。

    注意：传了 sampler 就不要再传 ``shuffle=True``；验证集和测试集不要重采样。

    >>> sampler = resampling_sampler([0] * 90 + [1] * 10, mode="under", seed=0)
    >>> len(sampler)
    20
    """
    y = _as_label_tensor(labels)
    counts = torch.bincount(y)
    if mode == "under":
        if num_samples is not None:
            raise ValueError(
                "欠采样（mode='under'）的大小由最少的那一类决定，不能指定 num_samples。"
                "想要更多样本，请改用 mode='balanced' 并设置 num_samples。"
            )
        return _UnderSampler(y, seed)
    if mode not in ("over", "balanced"):
        raise ValueError(f"未知的 mode={mode!r}：请从 'over'、'under'、'balanced' 中选一个。")
    # 每个样本的抽取权重 = 1 / 它所在类别的样本数，于是每个类别的总权重都是 1：各类被抽到的机会相同
    sample_weights = 1.0 / counts.double()[y]  # (N,)
    if num_samples is None:
        present = counts[counts > 0]
        num_samples = present.numel() * int(present.max()) if mode == "over" else y.numel()
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(sample_weights, num_samples, replacement=True, generator=generator)


# ---------------------------------------------------------------------------
# Focal Loss：让已经分对的“容易样本”少贡献损失
# ---------------------------------------------------------------------------


class FocalLoss(nn.Module):
    """多分类 Focal Loss（Lin 等, 2017）：``FL = -alpha_y * (1 - p_y) ** gamma * log(p_y)``。

    ``p_y`` 是模型给正确类别的 softmax 概率。一个样本已经分得很对（p_y 接近 1）时，
    ``(1 - p_y) ** gamma`` 接近 0，它几乎不再贡献损失；于是训练的注意力留给难样本和少数类。
    gamma=0 时就是交叉熵：与 ``nn.CrossEntropyLoss(weight=alpha)`` 的结果完全相同。

    参数：
        gamma：聚焦参数，>= 0，常用 2.0。
        alpha：每个类别的权重，形状 ``(C,)``，例如 ``class_weights(labels)``；None 表示不加权。
        reduction：``"mean"``（与 CrossEntropyLoss 相同：有 alpha 时除以 alpha_y 之和）、
            ``"sum"`` 或 ``"none"``（返回每个样本的损失）。
        ignore_index：标签等于它的位置不计入损失（序列标注里的填充位），同 CrossEntropyLoss。

    调用：``loss_fn(logits, target)``，logits 形状 ``(N, C)`` 或 ``(N, C, d1, ...)``，
    target 形状 ``(N,)`` 或 ``(N, d1, ...)``，与 ``nn.CrossEntropyLoss`` 一致。

    >>> loss_fn = FocalLoss(gamma=2.0)
    >>> loss = loss_fn(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    """

    def __init__(self, gamma: float = 2.0, alpha=None, reduction: str = "mean", ignore_index: int = -100):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma={gamma} 不合法：Focal Loss 要求 gamma >= 0（0 即交叉熵，常用 2）。")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"未知的 reduction={reduction!r}：请从 'mean'、'sum'、'none' 中选一个。")
        self.gamma = float(gamma)
        self.reduction = reduction
        self.ignore_index = ignore_index
        alpha = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32).reshape(-1)
        self.register_buffer("alpha", alpha)  # 作为 buffer：model.to(device) / state_dict 都会带上它

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        C = logits.shape[1] if logits.dim() > 1 else None
        if C is None:
            raise ValueError(f"logits 形状 {tuple(logits.shape)} 不对：应为 (N, C)，C 是类别数。")
        if logits.dim() > 2:  # (N, C, d1, ...) -> (N * d1 * ..., C)，与 CrossEntropyLoss 的约定一致
            logits = logits.movedim(1, -1).reshape(-1, C)
        target = target.reshape(-1)  # (M,)
        keep = target != self.ignore_index
        safe_target = target.masked_fill(~keep, 0)  # 被忽略的位置随便填一个合法类别，之后乘 0

        # 至少用 float32 算 log_softmax：混合精度训练时 fp16 / bf16 的 log 概率不够准
        log_p = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # (M, C)
        log_p_y = log_p.gather(1, safe_target[:, None]).squeeze(1)  # (M,)
        # 1 - p_y 写成 -expm1(log p_y) 更准；clamp 让 p_y 恰好为 1 时梯度是 0 而不是 nan
        easy = (-torch.expm1(log_p_y)).clamp_min(torch.finfo(log_p_y.dtype).tiny)
        loss = -(easy**self.gamma) * log_p_y  # (M,)

        weight = keep.to(loss.dtype)  # (M,) 被忽略的位置权重为 0
        if self.alpha is not None:
            if self.alpha.numel() != C:
                raise ValueError(f"alpha 有 {self.alpha.numel()} 个类别权重，但 logits 有 C={C} 个类别，两者必须相等。")
            weight = weight * self.alpha.to(loss.device)[safe_target]
        loss = loss * weight

        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.sum() / weight.sum()  # 加权平均：与 CrossEntropyLoss(weight=...) 相同


# ---------------------------------------------------------------------------
# 移动判定阈值：在验证集上选，在测试集上用
# ---------------------------------------------------------------------------


def best_threshold(y_true, scores, metric: str = "f1") -> tuple[float, float]:
    """在验证集上找让指标最大的判定阈值（二分类）：``score >= 阈值`` 判为正类 1。

    参数：
        y_true：验证集的真实标签，0 或 1，形状 ``(N,)``。
        scores：正类的分数，形状 ``(N,)``，通常是 ``logits.softmax(-1)[:, 1]``；分数越高越像正类。
        metric：
            - ``"f1"``：正类（1）的 F1，同 ``sklearn.metrics.f1_score``。
            - ``"macro_f1"``：两个类别 F1 的平均，同 ``f1_score(average="macro")``。
            - ``"youden"``：Youden 指数 ``TPR - FPR``，即 ROC 曲线上离对角线最远的点。

    返回：``(threshold, value)``，两个 float。候选阈值是验证集里出现过的每个分数；多个阈值
    一样好时取最大的那个。阈值一定要在验证集上选、在测试集上用，否则测试结果虚高。

    >>> best_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    (0.35, 0.8)
    """
    y = _as_label_tensor(y_true)
    # 先搬到 CPU 再转 float64（mps 不支持 float64）：排序和比较不丢精度
    s = scores.detach().cpu().double() if torch.is_tensor(scores) else torch.as_tensor(scores, dtype=torch.float64)
    if s.dim() != 1:
        raise ValueError(
            f"scores 的形状是 {tuple(s.shape)}，应为一维 (N,)："
            "二分类请传正类的概率，例如 logits.softmax(-1)[:, 1]。"
        )
    if s.numel() != y.numel():
        raise ValueError(f"y_true 有 {y.numel()} 个标签，scores 有 {s.numel()} 个分数，两者必须一样多。")
    if bool((y > 1).any()):
        raise ValueError("best_threshold 只用于二分类：y_true 只能含 0 和 1。")
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("验证集里只有一个类别，无法选阈值：请确保 y_true 里既有 0 也有 1（例如按类别分层划分）。")

    # 按分数从高到低排序后，阈值取第 k 个分数时，排在前面（分数 >= 它）的都判为正类
    order = torch.argsort(s, descending=True)
    s_sorted, y_sorted = s[order], y[order].double()
    tp = torch.cumsum(y_sorted, 0)  # (N,) 前 k+1 个里真正类的个数
    fp = torch.cumsum(1.0 - y_sorted, 0)  # (N,)
    # 同分的样本必须一起判：只保留每组相同分数的最后一个位置
    last_of_tie = torch.ones_like(s_sorted, dtype=torch.bool)
    last_of_tie[:-1] = s_sorted[:-1] != s_sorted[1:]
    thresholds, tp, fp = s_sorted[last_of_tie], tp[last_of_tie], fp[last_of_tie]
    fn, tn = n_pos - tp, n_neg - fp

    f1_pos = 2 * tp / (2 * tp + fp + fn)
    if metric == "f1":
        values = f1_pos
    elif metric == "macro_f1":
        f1_neg = 2 * tn / (2 * tn + fn + fp)  # 把 0 当作“正类”时的 F1
        values = (f1_pos + f1_neg) / 2
    elif metric == "youden":
        values = tp / n_pos - fp / n_neg
    else:
        raise ValueError(f"未知的 metric={metric!r}：请从 'f1'、'macro_f1'、'youden' 中选一个。")
    best = int(torch.argmax(values))  # 阈值从大到小排列，argmax 取第一个最大值，即最大的阈值
    return float(thresholds[best]), float(values[best])


def apply_threshold(scores, threshold: float) -> torch.Tensor:
    """用阈值把分数变成 0/1 预测：``score >= threshold`` 为 1。

    参数：scores 形状 ``(N,)``（张量、列表或数组）；threshold 通常来自 ``best_threshold``。
    返回：形状 ``(N,)`` 的 int64 张量，与 scores 在同一设备上。

    >>> apply_threshold(torch.tensor([0.2, 0.5, 0.9]), 0.5)
    tensor([0, 1, 1])
    """
    return (torch.as_tensor(scores) >= threshold).long()
