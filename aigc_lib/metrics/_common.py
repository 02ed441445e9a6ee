"""各指标共用的输入检查：列表、数组、张量统一成列表，检查等长、非空。"""

from __future__ import annotations

from typing import Any

_AVERAGES = ("binary", "micro", "macro", "weighted")


def _as_list(values: Any, name: str) -> list:
    """列表、元组、NumPy 数组、任意设备上的张量，统一成 Python 列表。"""
    if isinstance(values, str):
        raise TypeError(f"{name} 应该是一组值（列表/数组/张量），收到的是一个字符串 {values[:20]!r}。")
    if hasattr(values, "tolist"):  # NumPy 数组和 torch 张量（GPU 上的也行）都有 tolist()
        values = values.tolist()
        if not isinstance(values, list):
            raise TypeError(f"{name} 应该是一组值，收到的是一个标量 {values!r}。")
        return values
    return list(values)


def _paired(
    a: Any, b: Any, names: tuple[str, str] = ("y_true", "y_pred"), flat: bool = True
) -> tuple[list, list]:
    """把两组一一对应的值转成列表，并检查非空、等长；``flat=True`` 时还要求一维（每个样本一个值）。"""
    a, b = _as_list(a, names[0]), _as_list(b, names[1])
    if len(a) != len(b):
        raise ValueError(f"{names[0]} 有 {len(a)} 个值，{names[1]} 有 {len(b)} 个，两者必须一一对应。")
    if not a:
        raise ValueError(f"{names[0]} 和 {names[1]} 都是空的：至少需要一个样本才能计算指标。")
    if flat and (isinstance(a[0], list) or isinstance(b[0], list)):
        raise ValueError(
            f"{names[0]}/{names[1]} 应该是一维的（每个样本一个值）。如果手里是每类的概率或 logits："
            "算分类指标请先取 argmax，例如 logits.argmax(dim=-1)；画 ROC/PR 曲线请取正类那一列，例如 probs[:, 1]。"
        )
    return a, b


def _sorted_labels(*groups: list) -> list:
    """出现过的所有标签，排好序（与 sklearn 的 unique_labels 相同）。"""
    labels = set().union(*map(set, groups))
    try:
        return sorted(labels)
    except TypeError:  # 混合了不能比较的类型，例如 1 和 "1"
        raise ValueError(
            f"标签类型不一致，无法排序：{sorted(map(repr, labels))[:10]}。请统一成 int 或 str。"
        ) from None


def _ratio(numerator: float, denominator: float) -> float:
    """分母为 0 时返回 0，即 sklearn 的 zero_division=0。"""
    return numerator / denominator if denominator else 0.0


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """由 TP、FP、FN 算 precision、recall、F1；F1 = 2TP / (2TP + FP + FN)，等于 P 与 R 的调和平均。"""
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)
