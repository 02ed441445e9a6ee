"""阈值与排序曲线（二分类，第 08 章）：ROC、AUC、PR 曲线、平均精度，与 scikit-learn 对照。"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import _paired

def _counts_at_thresholds(y_true: Any, scores: Any, pos_label: Any) -> tuple[np.ndarray, ...]:
    """把分数从高到低排好，在每个不同的分数处累计 FP 和 TP。

    阈值取第 k 个不同的分数时，“分数 >= 阈值”的样本都被判为正类。返回 ``(fps, tps, thresholds)``，
    三者等长，阈值从大到小。这就是 sklearn 里 ROC 与 PR 曲线共用的那一步。
    """
    y_true, scores = _paired(y_true, scores, ("y_true", "scores"))
    is_positive = np.array([t == pos_label for t in y_true], dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores 里有 NaN，请先检查模型输出（例如 loss 是否已经发散）。")
    order = np.argsort(-scores, kind="stable")                  # 分数从高到低
    scores, is_positive = scores[order], is_positive[order]
    # 相同分数必须一起越过阈值，所以只在每组相同分数的最后一个位置取累计值
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(is_positive)[last]
    fps = (last + 1) - tps
    return fps, tps, scores[last]


def roc_curve(
    y_true: Any, scores: Any, pos_label: Any = 1, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC 曲线：阈值从高到低移动时的 (假正率 FPR, 真正率 TPR)，返回 ``(fpr, tpr, thresholds)``。

    参数：
        y_true: 一维真实标签，等于 ``pos_label`` 的是正类，其余都是负类。
        scores: 一维分数，越大越像正类（概率、logit 都行）。
        pos_label: 正类标签，默认 1。
        drop_intermediate: 去掉落在直线段中间、不改变曲线形状的点（同 sklearn 的默认值）。

    第一个点是 (0, 0)，对应阈值 ``inf``（没有样本被判为正）；最后一个点是 (1, 1)。
    正负样本都至少要有一个，否则 FPR 或 TPR 没有定义，会报错。

    >>> fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    fps, tps, thresholds = _counts_at_thresholds(y_true, scores, pos_label)
    if tps[-1] == 0 or fps[-1] == 0:
        which = "正类" if tps[-1] == 0 else "负类"
        raise ValueError(f"y_true 里没有{which}样本（pos_label={pos_label!r}），ROC 曲线需要正负两类都有。")
    if drop_intermediate and len(fps) > 2:
        # 二阶差分为 0 说明这个点和左右两点共线，去掉它曲线不变
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fpr = np.r_[0.0, fps] / fps[-1]
    tpr = np.r_[0.0, tps] / tps[-1]
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(y_true: Any, scores: Any, pos_label: Any = 1) -> float:
    """ROC 曲线下面积（梯形法）。等于“随机取一个正样本和一个负样本，正样本分数更高”的概率
    （分数相同算一半）。0.5 是随机猜，1 是完美排序。与 sklearn 的 ``roc_auc_score`` 相同。

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    fpr, tpr, _ = roc_curve(y_true, scores, pos_label)
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def precision_recall_curve(
    y_true: Any, scores: Any, pos_label: Any = 1, drop_intermediate: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PR 曲线：每个阈值下的精确率和召回率，返回 ``(precision, recall, thresholds)``（同 sklearn）。

    thresholds 从小到大；precision 和 recall 比 thresholds 多一个元素：末尾补上约定的点
    (recall=0, precision=1)。y_true 里至少要有一个正类样本。
    ``drop_intermediate=True`` 时去掉召回率不变的中间点（画图不变，点更少）。

    >>> p, r, t = precision_recall_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> p.tolist(), r.tolist(), t.tolist()
    ([0.5, 0.6666666666666666, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5, 0.0], [0.1, 0.35, 0.4, 0.8])
    """
    fps, tps, thresholds = _counts_at_thresholds(y_true, scores, pos_label)
    if tps[-1] == 0:
        raise ValueError(f"y_true 里没有正类样本（pos_label={pos_label!r}），召回率没有定义。")
    if drop_intermediate and len(fps) > 2:
        keep = np.r_[True, np.logical_or(np.diff(tps[:-1]), np.diff(tps[1:])), True]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    precision = tps / (tps + fps)   # 每个阈值下至少有一个样本被判为正，分母不为 0
    recall = tps / tps[-1]
    # 倒过来让阈值从小到大，并补上 (recall=0, precision=1)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(y_true: Any, scores: Any, pos_label: Any = 1) -> float:
    """平均精确率 AP：PR 曲线下的阶梯面积 :math:`\\sum_n (R_n - R_{n-1}) P_n`（同 sklearn，不插值）。

    >>> round(average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    precision, recall, _ = precision_recall_curve(y_true, scores, pos_label)
    return max(0.0, float(np.sum((recall[:-1] - recall[1:]) * precision[:-1])))
