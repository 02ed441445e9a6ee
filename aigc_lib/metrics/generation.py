"""语言模型与生成文本的指标（第 08–10 章）：困惑度、BLEU（与 sacrebleu 对照）、ROUGE-L、distinct-n。"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

from ._common import _as_list, _paired, _ratio

def perplexity(mean_cross_entropy: Any) -> float:
    """困惑度 = exp(平均交叉熵)。交叉熵以 nat 为单位（PyTorch 的 ``F.cross_entropy`` 就是）。

    直观含义：模型平均在多少个候选里“犹豫”。均匀地猜 V 个字的困惑度正好是 V。
    参数可以是 float 或 0 维张量；以 bit 为单位的交叉熵请用 ``2 ** bits``。

    >>> perplexity(math.log(4))  # 每步都在 4 个字里均匀猜
    4.0
    """
    value = float(mean_cross_entropy)
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"平均交叉熵应 >= 0，收到 {value}。请传入 F.cross_entropy 的结果（负对数似然），"
            "而不是对数似然本身；NaN 通常说明训练已经发散。"
        )
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _tokens(text: Any, tokenize: str) -> list[str]:
    """按 tokenize 把一段文本切成词元列表。

    ``"char"``：每个非空白字符一个词元（中文常用，与 sacrebleu 的 ``tokenize='char'`` 相同）；
    ``"word"``：用 jieba 分词；``"none"``：已经分好词，传入词列表或用空格隔开的字符串。
    """
    if tokenize == "none":
        return text.split() if isinstance(text, str) else [str(t) for t in text]
    if not isinstance(text, str):
        raise TypeError(f"tokenize={tokenize!r} 需要字符串，收到 {type(text).__name__}；已分好词请用 tokenize='none'。")
    if tokenize == "char":
        return [ch for ch in text if not ch.isspace()]
    if tokenize == "word":
        import jieba  # 只有用到词级别时才导入

        return [w for w in jieba.lcut(text) if not w.isspace()]
    raise ValueError(f"tokenize={tokenize!r} 无效，请从 'char'、'word'、'none' 中选择。")


def _ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _reference_set(item: Any, tokenize: str, tokenized: bool) -> list[list[str]]:
    """一条假设对应的参考，统一成若干个词元列表。写法跟着假设走：

    假设是字符串时，参考是一个字符串（一条）或字符串列表（多条）；
    假设是词列表时（tokenize='none'），参考是一个词列表（一条）或词列表的列表（多条）。
    """
    if isinstance(item, str):
        return [_tokens(item, tokenize)]
    item = list(item)
    if tokenized and all(isinstance(x, str) for x in item):
        return [_tokens(item, tokenize)]  # 一条已分好词的参考
    if not item:
        raise ValueError("某条假设的参考列表是空的：每条假设至少需要一条参考。")
    return [_tokens(x, tokenize) for x in item]


_SMOOTH_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1.0, "exp": None}


def bleu(
    references: Sequence,
    hypotheses: Sequence,
    tokenize: str = "char",
    max_order: int = 4,
    smooth: str = "exp",
    smooth_value: float | None = None,
) -> float:
    """语料级 BLEU，0-100 分，与 ``sacrebleu.corpus_bleu`` 相同。

    .. math::
        \\mathrm{BLEU} = 100 \\cdot \\mathrm{BP} \\cdot \\exp\\Big(\\frac{1}{N}\\sum_{n=1}^{N} \\log p_n\\Big),
        \\quad \\mathrm{BP} = \\min\\big(1, e^{1 - r/c}\\big)

    :math:`p_n` 是全语料的 n-gram 精确率（每个 n-gram 的命中数不超过它在参考里出现的最多次数），
    c 是全部假设的长度，r 是每条假设最接近的参考长度之和（一样近取较短的）。

    参数：
        references: 每条假设对应的参考：一条参考，或多条参考组成的列表。参考的写法与假设
            相同（字符串，或 tokenize='none' 时的词列表）。
        hypotheses: 模型生成的句子列表，与 references 等长。
        tokenize: ``"char"`` 按字（中文默认），``"word"`` 用 jieba 分词，
            ``"none"`` 表示已分好词（词列表或空格隔开的字符串）。
        max_order: 最长的 n-gram，默认 4。
        smooth: 某阶 n-gram 一个都没命中时怎么办——``"exp"``（默认，与 sacrebleu 的默认相同）
            第 k 次遇到时用 1/(2^k·总数) 代替命中率（mteval 的做法）；``"none"`` 整体得 0
            （原始论文的定义）；``"floor"`` 用 smooth_value/总数代替（默认 0.1）；``"add-k"``
            对 n >= 2 的命中数和总数都加 smooth_value（默认 1）。
        smooth_value: floor/add-k 的数值，None 取上面的默认值。

    >>> round(bleu(["今天天气很好"], ["今天天气很好"]), 6)
    100.0
    """
    references, hypotheses = _paired(references, hypotheses, ("references", "hypotheses"), flat=False)
    if smooth not in _SMOOTH_DEFAULTS:
        raise ValueError(f"smooth={smooth!r} 无效，请从 {tuple(_SMOOTH_DEFAULTS)} 中选择。")
    if max_order < 1:
        raise ValueError(f"max_order={max_order} 无效：至少为 1。")
    k = _SMOOTH_DEFAULTS[smooth] if smooth_value is None else smooth_value

    correct, total = [0.0] * max_order, [0.0] * max_order  # 全语料每一阶的命中数与总数
    hyp_len = ref_len = 0
    for ref_item, hyp in zip(references, hypotheses):
        refs = _reference_set(ref_item, tokenize, tokenized=not isinstance(hyp, str))
        hyp = _tokens(hyp, tokenize)
        hyp_len += len(hyp)
        ref_len += min((len(r) for r in refs), key=lambda n: (abs(n - len(hyp)), n))
        for n in range(1, max_order + 1):
            hyp_counts = _ngram_counts(hyp, n)
            max_ref_counts = Counter()
            for r in refs:
                max_ref_counts |= _ngram_counts(r, n)  # | 取每个 n-gram 在各参考里的最大次数
            correct[n - 1] += sum(min(c, max_ref_counts[g]) for g, c in hyp_counts.items())
            total[n - 1] += sum(hyp_counts.values())

    if not any(correct):  # 一个都没命中：任何平滑都救不了，直接 0 分
        return 0.0
    precisions, exp_factor = [], 1.0
    for n in range(max_order):
        c, t = correct[n], total[n]
        if smooth == "add-k" and n > 0:
            c, t = c + k, t + k
        if t == 0:  # 假设都比 n 短：这一阶没有定义，得 0 分
            return 0.0
        if c == 0 and smooth == "exp":
            exp_factor *= 2
            c = 1 / exp_factor
        elif c == 0 and smooth == "floor":
            c = k
        if c == 0:
            return 0.0
        precisions.append(c / t)
    brevity = 1.0 if hyp_len >= ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len else 0.0)
    return 100 * brevity * math.exp(sum(map(math.log, precisions)) / max_order)


def _lcs_length(a: Sequence, b: Sequence) -> int:
    """最长公共子序列的长度（动态规划，只保留一行）。"""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(reference: Any, hypothesis: Any, tokenize: str = "char", beta: float = 1.0) -> float:
    """ROUGE-L：基于最长公共子序列（LCS）的 F 值，0 到 1。

    :math:`P = \\mathrm{LCS}/|hyp|`，:math:`R = \\mathrm{LCS}/|ref|`，
    :math:`F = (1+\\beta^2) P R / (R + \\beta^2 P)`；beta=1 即 P 与 R 的调和平均。
    子序列不要求连续，所以它奖励“顺序对、中间可以有别的字”的生成结果。
    tokenize 同 :func:`bleu`，默认按字。任一方为空时返回 0。

    >>> round(rouge_l("我爱北京天安门", "我爱天安门"), 4)  # LCS=5，P=5/5，R=5/7
    0.8333
    """
    ref, hyp = _tokens(reference, tokenize), _tokens(hypothesis, tokenize)
    lcs = _lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(hyp), lcs / len(ref)
    return (1 + beta**2) * p * r / (r + beta**2 * p)


def rouge_l_corpus(
    references: Sequence, hypotheses: Sequence, tokenize: str = "char", beta: float = 1.0
) -> float:
    """逐句算 :func:`rouge_l` 后取平均（语料级 ROUGE-L 的常见报法）。

    >>> rouge_l_corpus(["你好", "再见"], ["你好", "拜拜"])
    0.5
    """
    references, hypotheses = _paired(references, hypotheses, ("references", "hypotheses"), flat=False)
    scores = [rouge_l(r, h, tokenize, beta) for r, h in zip(references, hypotheses)]
    return sum(scores) / len(scores)


def distinct_n(texts: Sequence, n: int = 2, tokenize: str = "char") -> float:
    """distinct-n：所有文本里不重复的 n-gram 数 / n-gram 总数（Li et al., 2016），衡量生成的多样性。

    越接近 1 越不重复；模型翻来覆去说同样的话时接近 0。没有任何 n-gram 时返回 0。

    >>> distinct_n(["我我我", "我们"], n=1)  # 词元：我 我 我 我 们，不同的 2 个
    0.4
    """
    texts = _as_list(texts, "texts")
    if not texts:
        raise ValueError("texts 是空的：至少需要一段文本。")
    if n < 1:
        raise ValueError(f"n={n} 无效：n-gram 的长度至少为 1。")
    counts = Counter()
    for text in texts:
        counts.update(_ngram_counts(_tokens(text, tokenize), n))
    return _ratio(len(counts), sum(counts.values()))
