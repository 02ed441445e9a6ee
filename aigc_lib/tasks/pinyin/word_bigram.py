"""第三个经典基线：词二元语法 + 词网格（经典拼音输入法的做法）。

字二元 HMM（``baselines.py``）只知道"哪个字跟哪个字"。《人民日报》语料是人工分好词的，
可以直接数**词**：训练集里每个小句是一串词 :math:`w_1 \\dots w_m`，词二元语法给它的概率是

.. math::
    P(w_1 \\dots w_m) = \\prod_{i=1}^{m+1} P(w_i \\mid w_{i-1}), \\quad w_0 = \\langle s\\rangle,\\ w_{m+1} = \\langle/s\\rangle

平滑用 Witten-Bell：前一个词 v 后面见过 :math:`T(v)` 种不同的词、共 :math:`N(v)` 次，则

.. math::
    P(w \\mid v) = \\frac{N(v, w) + T(v)\\, P_1(w)}{N(v) + T(v)}, \\qquad
    P_1(w) = \\frac{N(w) + \\tfrac12}{N + \\tfrac12 V}

（v 后面接过的词越杂，越要给没见过的搭配留概率）。词表外的单字（只在词里出现过、从没单独成词的字）
按极小的 :math:`P_1 = 0.1 / N` 算，保证任何读音都写得出来。

解码时把音节串上所有"读音对得上"的词连成一张**词网格**：从位置 i 到 j 的边是读作
``音节[i:j]`` 的训练词（词的读音由 :func:`~aigc_lib.tasks.pinyin.data.to_pinyin` 给出，与造语料时的注音方式
相同），长度为 1 的边还包括训练里读过这个音的每一个字。再在网格上做带剪枝的 Viterbi：状态是"走到位置 j、
最后一个词是 w、写出的字串"，每个位置只留得分最高的 ``beam`` 个。

    >>> clauses = [["我们", "爱", "北京"], ["我们", "是", "学生"], ["握", "手"]]
    >>> ime = WordBigram().fit(clauses)
    >>> ime.predict(["wo", "men", "ai", "bei", "jing"])
    '我们爱北京'
    >>> ime.predict(["wo", "shou"])
    '握手'

它只用训练集（分词和词频都来自训练集的标准答案），一次计数、几秒钟建好，不需要梯度；在本课程的测试集上
它比字二元 HMM 强得多（第 10 章），是神经网络真正要面对的经典对手。:meth:`WordBigram.score` 给任意一个
字串打分（在所有切分里取最好的），:mod:`~aigc_lib.tasks.pinyin.rescoring` 用它给神经网络的候选重新打分。
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Iterable, Sequence

from .data import UNKNOWN_CHAR, is_chinese, to_pinyin

BOS, EOS = "<s>", "</s>"


class WordBigram:
    """词二元语法（Witten-Bell 平滑）+ 词网格 Viterbi。

    参数：
        max_word_len: 网格里最长的词（字数）；更长的词不进网格，但仍参与计数。
        beam: Viterbi 每个位置保留的状态数（剪枝）；设得很大就是精确的 Viterbi。

    方法：``fit(小句列表)``（每个小句是一串词）、``predict(音节列表) -> 汉字串``、
    ``kbest(音节列表, k) -> [(对数概率, 汉字串), ...]``、``score(汉字串) -> 最好切分的对数概率``、
    ``log_prob(词列表)``（按给定切分）。
    """

    def __init__(self, max_word_len: int = 8, beam: int = 16) -> None:
        if max_word_len < 1 or beam < 1:
            raise ValueError(f"max_word_len 和 beam 都要 >= 1，收到 max_word_len={max_word_len}、beam={beam}。")
        self.max_word_len, self.beam = max_word_len, beam

    # ------------------------------------------------------------------ 计数
    def fit(self, clauses: Iterable[Sequence[str]]) -> "WordBigram":
        unigram, bigram = Counter(), Counter()
        for words in clauses:
            previous = BOS
            for word in words:
                unigram[word] += 1
                bigram[previous, word] += 1
                previous = word
            if previous != BOS:  # 空小句不算
                bigram[previous, EOS] += 1
                unigram[EOS] += 1
        if not unigram:
            raise ValueError("训练数据是空的：至少需要一个分好词的小句，例如 [['我们', '爱', '北京']]。")
        self.unigram, self.bigram = unigram, bigram
        self.total, self.vocab_size = sum(unigram.values()), len(unigram)
        self.context_total, self.context_types = Counter(), Counter()  # N(v)、T(v)
        for (previous, _), n in bigram.items():
            self.context_total[previous] += n
            self.context_types[previous] += 1
        self._build_lattice_index()
        return self

    def _build_lattice_index(self) -> None:
        """读音 -> 词：``words_by_reading[("bei", "jing")] = ["北京", "背景", ...]``；单字另外从词里拆出来。"""
        self.words_by_reading: dict[tuple[str, ...], list[str]] = defaultdict(list)
        chars_by_syllable: dict[str, set[str]] = defaultdict(set)
        for word in self.unigram:
            if word == EOS or not is_chinese(word):
                continue
            reading = tuple(to_pinyin(word))
            if len(reading) != len(word):
                continue
            if len(word) <= self.max_word_len:
                self.words_by_reading[reading].append(word)
            for syllable, char in zip(reading, word):
                chars_by_syllable[syllable].add(char)
        for syllable, chars in chars_by_syllable.items():  # 长度为 1 的边：读过这个音的每一个字
            known = set(self.words_by_reading[(syllable,)])
            self.words_by_reading[(syllable,)] += sorted(chars - known)

    # ------------------------------------------------------------------ 概率
    def unigram_prob(self, word: str) -> float:
        """:math:`P_1(w)`（加 1/2 平滑）；词表外的词是 0.1 / N。"""
        if word in self.unigram:
            return (self.unigram[word] + 0.5) / (self.total + 0.5 * self.vocab_size)
        return 0.1 / self.total

    def prob(self, word: str, previous: str) -> float:
        """Witten-Bell：:math:`P(w \\mid v) = (N(v,w) + T(v) P_1(w)) / (N(v) + T(v))`；没见过的 v 退回 :math:`P_1`。"""
        n_context = self.context_total.get(previous, 0)
        if not n_context:
            return self.unigram_prob(word)
        types = self.context_types[previous]
        return (self.bigram.get((previous, word), 0) + types * self.unigram_prob(word)) / (n_context + types)

    def log_prob(self, words: Sequence[str]) -> float:
        """按给定切分的 :math:`\\log P(w_1 \\dots w_m)`，含句首 ``<s>`` 和句末 ``</s>``。"""
        sequence = [BOS, *words, EOS]
        return sum(math.log(self.prob(w, v)) for v, w in zip(sequence, sequence[1:]))

    def score(self, text: str) -> float:
        """一个字串在所有切分（词长不超过 ``max_word_len``，词表外只能是单字）里最好的 :meth:`log_prob`。"""
        if not text:
            raise ValueError("score 需要非空的字串。")
        # best[j][w]：前 j 个字、最后一个词是 w 的最好得分（精确的动态规划，不剪枝）
        best: list[dict[str, float]] = [{BOS: 0.0}] + [{} for _ in text]
        for j in range(1, len(text) + 1):
            for i in range(max(0, j - self.max_word_len), j):
                word = text[i:j]
                if j - i > 1 and word not in self.unigram:
                    continue
                for previous, value in best[i].items():
                    value += math.log(self.prob(word, previous))
                    if value > best[j].get(word, -math.inf):
                        best[j][word] = value
        return max(value + math.log(self.prob(EOS, last)) for last, value in best[-1].items())

    # ------------------------------------------------------------------ 解码
    def kbest(self, syllables: Sequence[str], k: int = 1) -> list[tuple[float, str]]:
        """词网格上的剪枝 Viterbi，返回得分最高的 ``k`` 个 ``(对数概率, 汉字串)``（从高到低，字串互不相同）。

        没有任何字读作某个音节时（训练里没见过的音节），那个位置写一个 ``UNKNOWN_CHAR``（□），长度仍与音节数相同。
        """
        n = len(syllables)
        if n == 0:
            return [(0.0, "")]
        # states[j]：{(最后一个词, 已写出的字串): 对数概率}
        states: list[dict[tuple[str, str], float]] = [{(BOS, ""): 0.0}] + [{} for _ in range(n)]
        for j in range(1, n + 1):
            found: dict[tuple[str, str], float] = {}
            for i in range(max(0, j - self.max_word_len), j):
                words = self.words_by_reading.get(tuple(syllables[i:j]), [])
                if j - i == 1 and not words:
                    words = [UNKNOWN_CHAR]
                for word in words:
                    for (previous, text), value in states[i].items():
                        key = (word, text + word)
                        value += math.log(self.prob(word, previous))
                        if value > found.get(key, -math.inf):
                            found[key] = value
            states[j] = dict(sorted(found.items(), key=lambda item: -item[1])[: self.beam])
        finals: dict[str, float] = {}
        for (last, text), value in states[n].items():
            value += math.log(self.prob(EOS, last))
            finals[text] = max(value, finals.get(text, -math.inf))
        return sorted(((value, text) for text, value in finals.items()), key=lambda item: -item[0])[:k]

    def predict(self, syllables: Sequence[str]) -> str:
        """音节列表 -> 得分最高的汉字串（与音节等长）。"""
        return self.kbest(syllables, 1)[0][1]
