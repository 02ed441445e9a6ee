"""评估指标：全部是普通函数，输入是 Python 列表或张量，输出是浮点数。

本模块在各章逐步扩充：分词 P/R/F1（第 02 章）、分类指标（第 08 章）、实体 F1（第 03 章）、
困惑度、BLEU 等（第 09、10 章）。每个函数都可以单独复制使用，只依赖标准库和 PyTorch。
"""

from __future__ import annotations

from typing import Sequence


def _word_spans(words: Sequence[str]) -> set[tuple[int, int]]:
    """把一句分好的词变成字符区间集合：["我们", "好"] -> {(0, 2), (2, 3)}。"""
    spans, start = set(), 0
    for word in words:
        spans.add((start, start + len(word)))
        start += len(word)
    return spans


def segmentation_prf(
    gold_sentences: Sequence[Sequence[str]],
    predicted_sentences: Sequence[Sequence[str]],
) -> tuple[float, float, float]:
    """按词的字符区间给分词打分，返回 ``(precision, recall, f1)``。

    每句话的标准答案和预测结果都是词的列表，拼起来必须是同一个字符串。一个预测词只有
    起点和终点都与某个标准词相同才算对：

    >>> segmentation_prf([["我们", "爱", "北京"]], [["我们", "爱北京"]])
    (0.5, 0.3333333333333333, 0.4)

    precision = 对的词数 / 预测词数，recall = 对的词数 / 标准词数，F1 为二者的调和平均。
    所有句子的计数先相加再算比例（micro 平均），这也是 SIGHAN Bakeoff 的算法。
    """
    if len(gold_sentences) != len(predicted_sentences):
        raise ValueError(
            f"标准答案有 {len(gold_sentences)} 句，预测结果有 {len(predicted_sentences)} 句，"
            "两者必须一一对应。"
        )
    correct = n_gold = n_pred = 0
    for i, (gold, pred) in enumerate(zip(gold_sentences, predicted_sentences)):
        if "".join(gold) != "".join(pred):
            raise ValueError(
                f"第 {i} 句的标准答案与预测结果拼接后不是同一个字符串："
                f"{''.join(gold)[:30]!r} vs {''.join(pred)[:30]!r}。请对同一段文字分词后再比较。"
            )
        gold_spans, pred_spans = _word_spans(gold), _word_spans(pred)
        correct += len(gold_spans & pred_spans)
        n_gold += len(gold_spans)
        n_pred += len(pred_spans)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
