"""记忆：模型写出的文字有多少是从训练文本里原样抄来的。

* :func:`ngram_overlap`：生成文本的字符 n-gram 里，在训练文本中出现过的比例（n 默认 8：8 个字连着一样，
  几乎不可能是巧合）。
* :func:`extraction_rate`：拿训练句子的前 ``prefix_len`` 个字当提示，模型贪心地续写，续写与原句的下文
  （``suffix_len`` 个字）一字不差的句子占多少（Carlini et al., 2021 的"可提取"）。

训练文本可能有几百万个 n-gram：:class:`NgramIndex` 把每个 n-gram 变成一个 64 位的多项式哈希，存成排好序的
整数数组（每个 n-gram 8 个字节），查的时候二分查找。两个不同的 n-gram 哈希相同的概率约为 2^-64，可以忽略。

    >>> index = NgramIndex(["今天天气很好", "明天下雨"], n=3)
    >>> index.overlap("今天天气不好")    # 今天天、天天气 出现过；天气不、气不好 没有
    0.5
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

_BASE = np.uint64(1_000_003)  # 多项式哈希的底数（一个大质数）；运算按 2^64 取模（uint64 溢出即取模）


def _hashes(texts, n: int) -> np.ndarray:
    """每段文字里每个长度为 n 的字符片段的哈希（不跨段），一维 uint64 数组。"""
    if isinstance(texts, str):
        texts = [texts]
    out = []
    for text in texts:
        if len(text) < n:
            continue
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) + np.uint64(1)
        count = len(codes) - n + 1
        h = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i in range(n):  # h = ((c0·B + c1)·B + c2)… ：n 次向量运算，不是逐字的 Python 循环
                h = h * _BASE + codes[i:i + count]
        out.append(h)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


class NgramIndex:
    """训练文本（一段字符串或字符串列表，n-gram 不跨元素）的字符 n-gram 集合，用来反复查。"""

    def __init__(self, training_text, n: int = 8):
        if n < 1:
            raise ValueError(f"n 应 >= 1，收到 {n}。")
        self.n = n
        self.hashes = np.unique(_hashes(training_text, n))  # 排好序、去重

    def __len__(self) -> int:
        return len(self.hashes)

    def contains(self, generated) -> np.ndarray:
        """``generated`` 的每个 n-gram 是否在训练文本里，布尔数组（按出现顺序，不跨元素）。"""
        query = _hashes(generated, self.n)
        if len(self.hashes) == 0:
            return np.zeros(len(query), dtype=bool)
        where = np.searchsorted(self.hashes, query).clip(max=len(self.hashes) - 1)
        return self.hashes[where] == query

    def overlap(self, generated) -> float:
        """``generated`` 的 n-gram 里在训练文本中出现过的比例；一个 n-gram 都没有（文字太短）时为 0。"""
        found = self.contains(generated)
        return float(found.mean()) if len(found) else 0.0


def ngram_overlap(generated, training_text, n: int = 8) -> float:
    """生成文本（字符串或列表）的字符 n-gram 里，在训练文本中出现过的比例。

    ``training_text`` 可以是字符串、字符串列表，或建好的 :class:`NgramIndex`（比较很多段生成文本时只建一次）。
    """
    index = training_text if isinstance(training_text, NgramIndex) else NgramIndex(training_text, n)
    if index.n != n:
        raise ValueError(f"NgramIndex 是按 n={index.n} 建的，这里要 n={n}：请用同一个 n 重新建。")
    return index.overlap(generated)


class ExtractionResult(NamedTuple):
    rate: float  # 被原样续写出来的句子的比例
    tested: int  # 足够长、参加测试的句子数
    extracted: list  # [(前缀, 下文), ...] 被原样续写出来的


def extraction_rate(model_generate_fn: Callable[[str, int], str], sentences: Sequence[str], prefix_len: int,
                    suffix_len: int | None = None) -> ExtractionResult:
    """从前缀复现训练句子的比例。

    ``model_generate_fn(前缀, 要写的字数) -> 续写``，应是确定的（贪心），例如
    ``lambda p, k: gpt.generate(p, max_new_tokens=k, strategy="greedy")``。每句取前 ``prefix_len`` 个字当提示，
    要求续写的前 ``suffix_len`` 个字（None：句子剩下的全部）与原句一字不差。比前缀加下文还短的句子不参加。
    """
    if prefix_len < 1 or (suffix_len is not None and suffix_len < 1):
        raise ValueError(f"prefix_len、suffix_len 应 >= 1，收到 {prefix_len}、{suffix_len}。")
    tested, extracted = 0, []
    for sentence in sentences:
        target = sentence[prefix_len:] if suffix_len is None else sentence[prefix_len:prefix_len + suffix_len]
        if not target or (suffix_len is not None and len(target) < suffix_len):
            continue
        tested += 1
        prefix = sentence[:prefix_len]
        if model_generate_fn(prefix, len(target))[:len(target)] == target:
            extracted.append((prefix, target))
    return ExtractionResult(len(extracted) / tested if tested else 0.0, tested, extracted)
