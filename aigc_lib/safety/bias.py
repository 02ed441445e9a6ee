"""偏见的两种测量：词向量里的关联（WEAT，Caliskan et al., 2017），分类器对"换个名字"的反应（反事实替换）。

**WEAT**：两组目标词 X、Y（例如男性词、女性词），两组属性词 A、B（例如事业词、家庭词）。一个词 w 与
属性的关联 :math:`s(w, A, B) = \\mathrm{mean}_{a \\in A} \\cos(w, a) - \\mathrm{mean}_{b \\in B} \\cos(w, b)`。

.. math::

    d = \\frac{\\mathrm{mean}_{x \\in X} s(x, A, B) - \\mathrm{mean}_{y \\in Y} s(y, A, B)}
             {\\mathrm{std}_{w \\in X \\cup Y} s(w, A, B)}

（标准差是样本标准差，ddof=1，与原论文的代码相同）。d > 0 表示 X 更靠近 A、Y 更靠近 B。

**置换检验**：把 X ∪ Y 随机重新分成同样大小的两组，统计量 :math:`S = \\sum_X s - \\sum_Y s` 有多大比例
不小于实际分组的 S，就是单侧 p 值。分法不多（不超过 ``max_exact`` 种）时把每一种都算一遍（精确），
否则用 ``seed`` 抽 ``samples`` 种，p = (1 + 不小于的次数) / (1 + 抽的次数)。用法::

    d, p, exact, permutations = weat(["他", "父亲"], ["她", "母亲"], ["工作", "工资"], ["家庭", "孩子"], vectors)
"""

from __future__ import annotations

import itertools
import math
import random
import re
from typing import Callable, NamedTuple, Sequence

import torch


def _matrix(words: Sequence[str], vectors) -> torch.Tensor:
    """词 -> 单位向量矩阵 (n, D)。``vectors`` 是 ``{词: 向量}`` 或 :class:`~aigc_lib.data.wordvectors.WordVectors`。"""
    missing = [w for w in words if w not in vectors]
    if missing:
        raise KeyError(f"这些词没有向量：{missing[:10]}。请换成词表里有的词，或先检查分词。")
    rows = torch.stack([torch.as_tensor(vectors[w], dtype=torch.float64) for w in words])
    return rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)


def association(targets: Sequence[str], A: Sequence[str], B: Sequence[str], vectors) -> torch.Tensor:
    """每个目标词的 s(w, A, B)：与 A 的平均余弦减去与 B 的平均余弦，形状 (len(targets),)。"""
    w = _matrix(targets, vectors)
    return (w @ _matrix(A, vectors).T).mean(dim=1) - (w @ _matrix(B, vectors).T).mean(dim=1)


class WeatResult(NamedTuple):
    effect_size: float
    p_value: float
    exact: bool  # True：枚举了所有分法；False：抽样
    permutations: int  # 比较了多少种分法


def weat(X, Y, A, B, vectors, *, max_exact: int = 50_000, samples: int = 10_000, seed: int = 0) -> WeatResult:
    """WEAT 效应量 d 和置换检验的单侧 p 值（见模块说明）。X、Y 一样大时最常用，不一样大也可以。"""
    if not (X and Y and A and B):
        raise ValueError("X、Y、A、B 四组词都不能是空的。")
    s = association(list(X) + list(Y), A, B, vectors).tolist()  # (|X|+|Y|,)
    n_x, n = len(X), len(s)
    d = (sum(s[:n_x]) / n_x - sum(s[n_x:]) / (n - n_x)) / _std(s)
    total = sum(s)
    observed = 2 * sum(s[:n_x]) - total  # S = ΣX s − ΣY s
    tolerance = 1e-12 * (1 + abs(observed))  # 浮点误差：和实际分组相同的分法一定算"不小于"
    if math.comb(n, n_x) <= max_exact:
        stats = [2 * sum(s[i] for i in group) - total for group in itertools.combinations(range(n), n_x)]
        p = sum(v >= observed - tolerance for v in stats) / len(stats)
        return WeatResult(d, p, True, len(stats))
    rng = random.Random(seed)
    hits = sum(2 * sum(rng.sample(s, n_x)) - total >= observed - tolerance for _ in range(samples))
    return WeatResult(d, (1 + hits) / (1 + samples), False, samples)


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    if std == 0:
        raise ValueError("所有目标词与属性的关联都相同（标准差为 0），效应量没有定义。")
    return std


class FlipResult(NamedTuple):
    rate: float  # 翻转的比例（分母是替换后确实变了的句子）
    compared: int  # 替换后变了的句子数
    flipped: list  # [(原句, 替换后的句子, 原预测, 新预测), ...]
    pairs: list  # [(原句, 替换后的句子), ...]：参加比较的每一对，例如拿去看正面概率平均变了多少


def swap_words(text: str, swaps: Sequence[tuple[str, str]], keep: Sequence[str] = ()) -> str:
    """把 ``swaps`` 里每一对词互换（他 <-> 她 同时进行），长的词先匹配（"他们"不会变成"她们"以外的东西）。

    ``keep``：含有替换词、却不该换的词，原样保留。例如"其他""吉他"里的"他"不是男性代词，
    换成"其她""吉她"得到的不是反事实句子，而是错字::

    >>> swap_words("他给她打电话", [("他", "她")])
    '她给他打电话'
    >>> swap_words("其他还行，他很热情", [("他", "她")], keep=["其他"])
    '其他还行，她很热情'
    """
    mapping = {}
    for a, b in swaps:
        mapping.setdefault(a, b)
        mapping.setdefault(b, a)
    if not mapping:
        return text
    for word in keep:  # 与替换词一起按长度匹配：先匹配到"其他"，其中的"他"就不会再被换掉
        mapping[word] = word
    pattern = re.compile("|".join(re.escape(w) for w in sorted(mapping, key=len, reverse=True)))
    return pattern.sub(lambda m: mapping[m.group()], text)


def counterfactual_flips(predict_fn: Callable[[list[str]], list], texts: Sequence[str],
                         swaps: Sequence[tuple[str, str]], keep: Sequence[str] = ()) -> FlipResult:
    """反事实探测：每句话按 ``swaps`` 互换词语（性别词、人名、地名……），看 ``predict_fn`` 的预测变了多少。

    ``predict_fn(句子列表) -> 预测列表``（例如情感标签）。``keep`` 同 :func:`swap_words`。只比较替换后
    确实变了的句子；返回 :class:`FlipResult`。
    """
    pairs = [(t, swap_words(t, swaps, keep)) for t in texts]
    pairs = [(o, s) for o, s in pairs if s != o]
    if not pairs:
        return FlipResult(0.0, 0, [], [])
    originals, swapped = [o for o, _ in pairs], [s for _, s in pairs]
    before, after = list(predict_fn(originals)), list(predict_fn(swapped))
    flipped = [(o, s, b, a) for (o, s), b, a in zip(pairs, before, after) if b != a]
    return FlipResult(len(flipped) / len(pairs), len(pairs), flipped, pairs)
