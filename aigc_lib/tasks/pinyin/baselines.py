"""拼音 -> 汉字的两个经典基线：逐字查"最常用的字"，和字二元语法的隐马尔可夫模型（HMM）+ Viterbi。

两者都只是数数，训练几秒钟，却是神经网络必须超过的标杆（第 10 章）::

    >>> train = [(["wo", "men"], "我们"), (["wo", "men"], "我们"), (["wo"], "握")]
    >>> MostFrequentChar().fit(train).predict(["wo", "men"])
    '我们'
    >>> BigramHMM(k=0.1).fit(train).predict(["wo", "men"])
    '我们'

**最常用的字**：每个音节各自选训练集里最常写成的那个字，完全不看上下文，所以
"shi" 永远是"是"，"de" 永远是"的"。

**字二元 HMM**：隐藏状态是汉字 :math:`c_1\\dots c_n`，观测是音节 :math:`s_1\\dots s_n`，

.. math::
    P(c, s) = \\prod_{t=1}^{n} P(c_t \\mid c_{t-1})\\, P(s_t \\mid c_t) \\cdot P(\\langle/s\\rangle \\mid c_n),
    \\quad c_0 = \\langle s\\rangle

转移概率用加 k 平滑 :math:`P(b\\mid a) = \\frac{N(a,b)+k}{N(a)+kV}`（V 是字数加上句末符号），
发射概率 :math:`P(s\\mid c) = N(c, s) / N(c)` 是一个字读成这个音的比例。Viterbi 用动态规划在
所有候选字序列里找联合概率最大的一条；每个音节的候选字只有训练里见过读这个音的字。
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Sequence

import numpy as np

Pair = tuple[Sequence[str], str]


def _check_pair(syllables: Sequence[str], text: str) -> None:
    if len(syllables) != len(text):
        raise ValueError(
            f"音节数 {len(syllables)} 与字数 {len(text)} 不同（{list(syllables)[:6]} / {text[:6]!r}）："
            "拼音 -> 汉字的每个音节必须正好对应一个字。"
        )


class MostFrequentChar:
    """每个音节输出训练集里最常对应的字；没见过的音节输出全体最常见的字（必错，但长度不变）。

    ``fit(pairs)`` 的 pairs 是 ``[(音节列表, 汉字串), ...]``；``predict(音节列表) -> 汉字串``。
    """

    def fit(self, pairs: Iterable[Pair]) -> "MostFrequentChar":
        counts: dict[str, Counter] = defaultdict(Counter)
        overall = Counter()
        for syllables, text in pairs:
            _check_pair(syllables, text)
            for syllable, char in zip(syllables, text):
                counts[syllable][char] += 1
            overall.update(text)
        if not overall:
            raise ValueError("训练数据是空的：至少需要一对 (音节列表, 汉字串)。")
        # 次数相同时取先出现的字（Counter.most_common 保持插入顺序），结果可复现
        self.best = {syllable: counter.most_common(1)[0][0] for syllable, counter in counts.items()}
        self.fallback = overall.most_common(1)[0][0]
        return self

    def predict(self, syllables: Sequence[str]) -> str:
        return "".join(self.best.get(s, self.fallback) for s in syllables)


class BigramHMM:
    """字二元语法 HMM，Viterbi 解码（见模块说明里的公式）。

    参数：
        k: 转移概率的加 k 平滑。k 越小越相信训练里见过的字对；0 表示不平滑（没见过的字对概率为 0）。

    属性（fit 之后）：``chars``（状态表，第 0 个是句首/句末符号）、``candidates``（音节 -> 候选字编号）、
    ``log_transition``（(V+1, V+1) 对数转移概率，行 = 前一个字，列 = 后一个字）。

    方法：``predict(音节列表) -> 汉字串``；``log_prob(音节列表, 汉字串)`` 是联合对数概率
    :math:`\\log P(c, s)`，测试里用它暴力枚举，验证 Viterbi 找到的就是最大的那条。
    """

    BOUNDARY = "<s>"  # 句首和句末共用一个状态：第 0 行是 P(c_1 | <s>)，第 0 列是 P(</s> | c_n)

    def __init__(self, k: float = 0.01) -> None:
        if k < 0:
            raise ValueError(f"平滑参数 k={k} 不能是负数；常用 0.001～1，0 表示不平滑。")
        self.k = k

    def fit(self, pairs: Iterable[Pair]) -> "BigramHMM":
        pairs = list(pairs)
        chars, emission_counts = Counter(), Counter()  # 字 -> 次数；(音节, 字) -> 次数
        for syllables, text in pairs:
            _check_pair(syllables, text)
            chars.update(text)
            emission_counts.update(zip(syllables, text))
        if not chars:
            raise ValueError("训练数据是空的：至少需要一对 (音节列表, 汉字串)。")
        self.chars = [self.BOUNDARY, *chars]
        index = {c: i for i, c in enumerate(self.chars)}
        V = len(self.chars)

        # 所有小句首尾相接成一条状态序列 <s> c1 .. cn <s> c1' .. <s>，相邻两个就是一个字对
        states = [0]
        for _, text in pairs:
            states += [index[c] for c in text]
            states.append(0)
        states = np.asarray(states, dtype=np.int64)
        codes, n = np.unique(states[:-1] * V + states[1:], return_counts=True)  # 字对 (a, b) 编码成 a*V+b
        table = np.zeros(V * V, dtype=np.float32)
        table[codes] = n
        table = table.reshape(V, V)  # (V, V)：N(a, b)；float32，5000 个字也只占约 100 MB
        row = table.sum(axis=1, keepdims=True)  # (V, 1)：N(a) = 以 a 开头的字对数
        # 原地计算 log((N(a,b) + k) / (N(a) + kV))，不再复制这张大表
        table += self.k
        table /= np.maximum(row + self.k * V, 1e-30)
        with np.errstate(divide="ignore"):  # k=0 时没见过的字对是 log 0 = -inf
            self.log_transition = np.log(table, out=table)  # (V, V)
        self.log_transition[0, 0] = -np.inf  # 空句子不存在：<s> 后面不能直接结束

        emissions: dict[str, Counter] = defaultdict(Counter)  # 音节 -> {字: 次数}
        for (syllable, char), n in emission_counts.items():
            emissions[syllable][char] = n
        self.candidates, self.log_emission = {}, {}
        for syllable, counter in emissions.items():
            ids = np.array([index[c] for c in counter], dtype=np.int64)
            self.candidates[syllable] = ids
            self.log_emission[syllable] = np.log(np.array([counter[c] / chars[c] for c in counter]))
        self.fallback = index[chars.most_common(1)[0][0]]
        return self

    def _options(self, syllable: str) -> tuple[np.ndarray, np.ndarray]:
        """一个音节的 (候选字编号, 对数发射概率)；没见过的音节只有一个候选（最常见的字），发射概率记为 1。"""
        if syllable in self.candidates:
            return self.candidates[syllable], self.log_emission[syllable]
        return np.array([self.fallback]), np.zeros(1)

    def predict(self, syllables: Sequence[str]) -> str:
        """Viterbi：delta_t(j) = max_i [delta_{t-1}(i) + log P(j|i)] + log P(s_t|j)，再回溯。"""
        if not len(syllables):
            return ""
        ids, emit = self._options(syllables[0])
        delta = self.log_transition[0, ids] + emit  # (K1,)：从 <s> 出发
        back = []
        for syllable in syllables[1:]:
            new_ids, emit = self._options(syllable)
            scores = delta[:, None] + self.log_transition[np.ix_(ids, new_ids)]  # (K_prev, K_new)
            best_prev = scores.argmax(axis=0)  # (K_new,)
            delta = scores[best_prev, np.arange(len(new_ids))] + emit
            back.append((ids, best_prev))
            ids = new_ids
        delta = delta + self.log_transition[ids, 0]  # 走到句末 </s>
        j = int(delta.argmax())
        path = [ids[j]]
        for prev_ids, best_prev in reversed(back):
            j = int(best_prev[j])
            path.append(prev_ids[j])
        return "".join(self.chars[i] for i in reversed(path))

    def log_prob(self, syllables: Sequence[str], text: str) -> float:
        """联合对数概率 log P(字序列, 音节序列)；某个字不读这个音时是 -inf。"""
        _check_pair(syllables, text)
        index = {c: i for i, c in enumerate(self.chars)}
        total, prev = 0.0, 0
        for syllable, char in zip(syllables, text):
            ids, emit = self._options(syllable)
            where = np.flatnonzero(ids == index.get(char, -1))
            if not len(where):
                return -np.inf
            cur = int(ids[where[0]])
            total += float(self.log_transition[prev, cur]) + float(emit[where[0]])
            prev = cur
        return total + float(self.log_transition[prev, 0])
