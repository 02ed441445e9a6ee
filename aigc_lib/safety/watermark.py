"""绿名单水印（Kirchenbauer et al., 2023, "A Watermark for Large Language Models"）：生成时悄悄偏向一半
（准确地说是 gamma）的词，检测时数一数偏向的词有多少——检测只要编号、词表大小和密钥，不要模型。

生成第 t 个词之前::

    种子 = 哈希(密钥, 上一个词的编号)
    绿名单 = 用这个种子把 V 个词随机排列，取前 gamma·V 个
    logits[绿名单] += delta          # 然后照常采样（温度、top-p 都不变）

检测：文本里有 T 个词可以打分（每个词都有上一个词），其中 g 个落在各自的绿名单里。没有水印时每个词
落进绿名单的概率是 gamma，g 近似服从正态分布，于是

.. math:: z = \\frac{g - \\gamma T}{\\sqrt{T \\gamma (1 - \\gamma)}}

论文用正态分布的尾巴 :math:`1 - \\Phi(z)` 当 p 值，阈值 z > 2.33 对应 1%。但 g 是整数：T = 200 时
z > 2.33 等于 g >= 65，而没有水印时 P(g >= 65) = 1.03%，比名义上的 1% 略高。所以这里的 p 值用精确的
二项分布尾巴 :math:`P(G \\ge g), G \\sim \\mathrm{Binomial}(T, \\gamma)`，p <= ``alpha``（默认 0.01）判为"有水印"：
没有水印的文本被误判的概率对任何 T 都不超过 alpha。z 仍然给出，用来比较强弱。

重复的（上一个词, 这个词）只算一次（``ignore_repeated=True``，默认）：同一对词在正常文本里反复出现时，
它们的"绿不绿"不是独立的，全算进去会让没有水印的文本也得到偏大的 z（Kirchenbauer et al. 的
后续论文 "On the Reliability of Watermarks for LLMs" 也这样做）。用法::

    wm = Watermark("我的密钥")
    text = generate(model, "今天", 200, vocab=vocab, watermark=wm)              # aigc_lib.generate
    detect_watermark(vocab.encode(list("今天" + text)), len(vocab), wm).p_value  # 远小于 0.01
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

ALPHA = 0.01  # 默认的假阳性率上限


@functools.lru_cache(maxsize=8192)
def _green_ids(key: str, gamma: float, previous: int, vocab_size: int) -> torch.Tensor:
    """上一个词是 ``previous`` 时的绿名单（编号，长度 round(gamma·V)）。同样的参数总得到同样的结果，
    与进程、设备、全局随机数都无关：种子来自 sha256，而不是 Python 的 hash()（它每次启动都不同）。"""
    digest = hashlib.sha256(f"{key}\x00{previous}".encode("utf-8")).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randperm(vocab_size, generator=generator)[: round(gamma * vocab_size)]


@dataclass(frozen=True)
class Watermark:
    """水印的参数：``key`` 密钥（字符串），``gamma`` 绿名单占词表的比例，``delta`` 给绿名单加的 logit。

    delta 越大水印越强、越容易检测，也越改变模型本来的选择（困惑度变高）；论文常用 gamma 0.25、delta 2。
    作为 :func:`~aigc_lib.generate` 的 ``watermark=`` 参数使用。
    """

    key: str
    gamma: float = 0.25
    delta: float = 2.0

    def __post_init__(self):
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("水印的密钥 key 应是一个非空字符串；检测时要用同一个密钥。")
        if not 0 < self.gamma < 1:
            raise ValueError(f"gamma（绿名单的比例）应在 (0, 1) 之间，常用 0.25 或 0.5，收到 {self.gamma}。")
        if not math.isfinite(self.delta) or self.delta < 0:
            raise ValueError(f"delta（给绿名单加的 logit）应 >= 0，常用 1~4，收到 {self.delta}。")

    def green_list(self, previous: int, vocab_size: int) -> torch.Tensor:
        """上一个词是 ``previous`` 时的绿名单：形状 (V,) 的布尔张量，绿的为 True。"""
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[_green_ids(self.key, float(self.gamma), int(previous), int(vocab_size))] = True
        return mask

    def __call__(self, logits: torch.Tensor, previous: int) -> torch.Tensor:
        """logits 处理器：``logits`` (V,) 或 (B, V)（每行的上一个词都是 ``previous``），返回绿名单加了
        delta 的新张量（不改原张量）。"""
        green = self.green_list(previous, logits.size(-1)).to(logits.device)
        return logits + self.delta * green.to(logits.dtype)


class Detection(NamedTuple):
    """检测结果：``z``、精确的单侧 ``p_value``、绿词数 ``green``、打分的词数 ``scored``、是否判为有水印。"""

    z: float
    p_value: float
    green: int
    scored: int
    watermarked: bool


def binomial_tail(g: int, n: int, p: float) -> float:
    """:math:`P(G \\ge g)`，:math:`G \\sim \\mathrm{Binomial}(n, p)`：在对数空间里把每一项加起来（n 上万也不会溢出）。

    >>> round(binomial_tail(65, 200, 0.25), 5)
    0.01033
    """
    if g <= 0:
        return 1.0
    if g > n:
        return 0.0
    log_terms = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
                 + (n - k) * math.log1p(-p) for k in range(g, n + 1)]
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))


def detect_watermark(token_ids: Sequence[int], vocab_size: int, watermark, gamma: float = 0.25,
                     alpha: float = ALPHA, ignore_repeated: bool = True) -> Detection:
    """检测一串编号里有没有水印。不需要模型：只要编号、词表大小和密钥。

    ``watermark`` 是 :class:`Watermark`，或者密钥字符串（此时用 ``gamma``）。第一个编号没有上一个词，不打分；
    ``ignore_repeated`` 见模块说明。p 值 <= ``alpha`` 时判为有水印。可打分的词为 0 时 z = 0、p = 1。
    """
    wm = watermark if isinstance(watermark, Watermark) else Watermark(str(watermark), gamma)
    ids = [int(i) for i in token_ids]
    if any(not 0 <= i < vocab_size for i in ids):
        raise ValueError(f"编号应在 [0, {vocab_size}) 之间：vocab_size 是不是生成时那个词表的大小？")
    pairs = list(zip(ids[:-1], ids[1:]))
    if ignore_repeated:
        pairs = list(dict.fromkeys(pairs))  # 去重，保持顺序
    green = sum(int(token in _green_set(wm, previous, vocab_size)) for previous, token in pairs)
    scored = len(pairs)
    if scored == 0:
        return Detection(0.0, 1.0, 0, 0, False)
    z = (green - wm.gamma * scored) / math.sqrt(scored * wm.gamma * (1 - wm.gamma))
    p_value = binomial_tail(green, scored, wm.gamma)
    return Detection(z, p_value, green, scored, p_value <= alpha)


def detection_rate(sequences, vocab_size: int, watermark, alpha: float = ALPHA, **options) -> float:
    """一组编号序列里被判为有水印的比例：水印文本上是检出率，普通文本上是假阳性率。"""
    results = [detect_watermark(ids, vocab_size, watermark, alpha=alpha, **options) for ids in sequences]
    return sum(r.watermarked for r in results) / len(results) if results else 0.0


def _green_set(wm: Watermark, previous: int, vocab_size: int) -> frozenset:
    return _green_frozenset(wm.key, float(wm.gamma), previous, vocab_size)


@functools.lru_cache(maxsize=8192)
def _green_frozenset(key: str, gamma: float, previous: int, vocab_size: int) -> frozenset:
    return frozenset(_green_ids(key, gamma, previous, vocab_size).tolist())


def replace_tokens(token_ids: Sequence[int], fraction: float, vocab_size: int, seed: int = 0,
                   protect_first: int = 0) -> list[int]:
    """改写攻击：随机挑 ``fraction`` 比例的位置（不动前 ``protect_first`` 个，例如提示），每个换成另一个随机编号。

    换掉一个词会影响两个打分：它自己，和以它为"上一个词"的下一个词（绿名单变了）。
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction 应在 [0, 1] 之间，收到 {fraction}。")
    rng = random.Random(seed)
    ids = [int(i) for i in token_ids]
    positions = list(range(protect_first, len(ids)))
    for i in rng.sample(positions, round(fraction * len(positions))):
        ids[i] = rng.choice([t for t in range(vocab_size) if t != ids[i]]) if vocab_size > 1 else ids[i]
    return ids
