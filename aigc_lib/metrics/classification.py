"""分类指标（第 08 章）：准确率、P/R/F1、混淆矩阵、分类报告，规则与 scikit-learn 相同。"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from ..console import display_width, pad
from ._common import _AVERAGES, _as_list, _paired, _prf, _ratio, _sorted_labels

def accuracy(y_true: Any, y_pred: Any) -> float:
    """准确率：预测对的样本占全部样本的比例。

    参数是等长的一维标签（列表、NumPy 数组或张量均可），返回 0 到 1 之间的浮点数：

    >>> accuracy([0, 1, 1, 0], [0, 1, 0, 0])
    0.75
    """
    y_true, y_pred = _paired(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def _class_counts(y_true: list, y_pred: list, labels: list) -> list[tuple[int, int, int]]:
    """每个类别的 (TP, FP, FN)：把这一类当作正类、其余都当负类来数。"""
    hits = Counter(t for t, p in zip(y_true, y_pred) if t == p)
    true_count, pred_count = Counter(y_true), Counter(y_pred)
    return [(hits[c], pred_count[c] - hits[c], true_count[c] - hits[c]) for c in labels]


def precision_recall_f1(
    y_true: Any,
    y_pred: Any,
    average: str = "binary",
    pos_label: Any = 1,
    labels: Sequence | None = None,
) -> tuple[float, float, float]:
    """精确率、召回率、F1，返回 ``(precision, recall, f1)``，与 sklearn 的
    ``precision_recall_fscore_support(..., zero_division=0)`` 相同。

    参数：
        y_true, y_pred: 等长的一维标签（列表、NumPy 数组或张量）。
        average: 怎样把各类合成一个数——
            ``"binary"``：只看 ``pos_label`` 这一类（二分类，默认）；
            ``"micro"``：各类的 TP、FP、FN 先相加再算（单标签多分类时三者都等于准确率）；
            ``"macro"``：每类算出 P、R、F1 后简单平均，小类和大类同样重要；
            ``"weighted"``：按每类的真实样本数加权平均。
        pos_label: ``average="binary"`` 时的正类标签。
        labels: 参与平均的类别，默认为 y_true 和 y_pred 里出现过的全部类别。

    某类从未被预测时它的 precision 记为 0（不是报错或 NaN），从未出现时 recall 记为 0。

    >>> precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 0])
    (0.5, 0.5, 0.5)
    >>> precision_recall_f1(["猫", "狗", "鸟"], ["猫", "狗", "狗"], average="macro")
    (0.5, 0.6666666666666666, 0.5555555555555555)
    """
    y_true, y_pred = _paired(y_true, y_pred)
    if average not in _AVERAGES:
        raise ValueError(f"average={average!r} 无效，请从 {_AVERAGES} 中选择。")
    present = _sorted_labels(y_true, y_pred)
    if average == "binary":
        if len(present) > 2:
            raise ValueError(
                f"数据里有 {len(present)} 个类别 {present[:8]}，average='binary' 只适用于二分类。"
                "多分类请用 average='macro'、'micro' 或 'weighted'。"
            )
        if len(present) == 2 and pos_label not in present:
            raise ValueError(f"pos_label={pos_label!r} 不在标签 {present} 里，请把 pos_label 设为正类的标签。")
        labels = [pos_label]
    elif labels is None:
        labels = present
    else:
        labels = _as_list(labels, "labels")
        if not labels:
            raise ValueError("labels 是空的：至少给出一个要参与平均的类别，或传 labels=None 使用全部类别。")
    counts = _class_counts(y_true, y_pred, labels)
    if average == "micro":
        tp, fp, fn = (sum(column) for column in zip(*counts))
        return _prf(tp, fp, fn)
    per_class = [_prf(*c) for c in counts]  # 每类的 (P, R, F1)
    if average == "binary":
        return per_class[0]
    weights = [1] * len(labels) if average == "macro" else [tp + fn for tp, _, fn in counts]
    total = sum(weights)
    return tuple(_ratio(sum(w * m[k] for w, m in zip(weights, per_class)), total) for k in range(3))


def confusion_matrix(y_true: Any, y_pred: Any, labels: Sequence | None = None) -> np.ndarray:
    """混淆矩阵：第 i 行第 j 列是“真实为 labels[i]、预测为 labels[j]”的样本数。

    ``labels`` 决定行列顺序，默认为出现过的全部标签排序后的结果；不在 labels 里的样本不计。
    返回形状 (K, K) 的整数 NumPy 数组（与 sklearn 相同），对角线是预测对的样本。

    >>> confusion_matrix(["正", "负", "正"], ["正", "正", "正"], labels=["正", "负"]).tolist()
    [[2, 0], [1, 0]]
    """
    y_true, y_pred = _paired(y_true, y_pred)
    labels = _sorted_labels(y_true, y_pred) if labels is None else _as_list(labels, "labels")
    if not labels:
        raise ValueError("labels 是空的：至少需要一个类别。")
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return matrix


def classification_report(
    y_true: Any,
    y_pred: Any,
    labels: Sequence | None = None,
    target_names: Sequence[str] | None = None,
    digits: int = 4,
    output_dict: bool = False,
) -> str | dict:
    """按类列出精确率、召回率、F1 和样本数，再给出准确率、宏平均和加权平均（同 sklearn）。

    参数：
        y_true, y_pred: 等长的一维标签。
        labels: 要列出的类别，默认为出现过的全部类别。只列一部分时，“准确率”一行换成“微平均”。
        target_names: 与 labels 一一对应的显示名称，例如 ``["负面", "正面"]``。
        digits: 表格里保留几位小数。
        output_dict: 为 True 时返回字典，键与 sklearn 的 ``output_dict=True`` 完全相同
            （``"precision"``、``"recall"``、``"f1-score"``、``"support"``，以及
            ``"accuracy"``/``"micro avg"``、``"macro avg"``、``"weighted avg"``）。

    返回一张对齐的文本表（中文名称也能对齐），``print`` 出来即可。
    """
    y_true, y_pred = _paired(y_true, y_pred)
    present = _sorted_labels(y_true, y_pred)
    labels = present if labels is None else _as_list(labels, "labels")
    names = [str(label) for label in labels] if target_names is None else list(target_names)
    if len(names) != len(labels):
        raise ValueError(f"target_names 有 {len(names)} 个名称，但类别有 {len(labels)} 个 {labels[:8]}，请一一对应。")
    counts = _class_counts(y_true, y_pred, labels)
    rows = {name: (*_prf(*c), c[0] + c[2]) for name, c in zip(names, counts)}
    support = sum(c[0] + c[2] for c in counts)
    micro_is_accuracy = set(labels) >= set(present)  # 列出了全部类别时，微平均就是准确率
    summary = {}
    if not micro_is_accuracy:
        summary["micro avg"] = (*precision_recall_f1(y_true, y_pred, "micro", labels=labels), support)
    for average in ("macro", "weighted"):
        summary[f"{average} avg"] = (*precision_recall_f1(y_true, y_pred, average, labels=labels), support)

    if output_dict:
        keys = ("precision", "recall", "f1-score", "support")
        report: dict = {name: dict(zip(keys, values)) for name, values in rows.items()}
        if micro_is_accuracy:
            report["accuracy"] = accuracy(y_true, y_pred)
        report.update({name: dict(zip(keys, values)) for name, values in summary.items()})
        return report

    titles = {"micro avg": "微平均", "macro avg": "宏平均", "weighted avg": "加权平均"}
    name_width = max(display_width(s) for s in [*names, "加权平均", "类别"]) + 2
    col = max(digits + 5, 10)
    number = lambda x: f"{x:.{digits}f}"
    line = lambda name, cells: pad(name, name_width) + "".join(pad(c, col, right=True) for c in cells)
    out = [line("类别", ["精确率", "召回率", "F1", "样本数"]), ""]
    out += [line(name, [number(p), number(r), number(f), str(n)]) for name, (p, r, f, n) in rows.items()]
    out.append("")
    if micro_is_accuracy:
        out.append(line("准确率", ["", "", number(accuracy(y_true, y_pred)), str(len(y_true))]))
    for key, (p, r, f, n) in summary.items():
        out.append(line(titles[key], [number(p), number(r), number(f), str(n)]))
    return "\n".join(out)
