"""序列标注的指标：分词 P/R/F1（第 02 章）、实体级 P/R/F1 与逐字准确率（第 03 章）。

实体的切分规则与 conlleval / seqeval 的默认模式相同，测试与 seqeval 对照。
"""

from __future__ import annotations

from typing import Any, Sequence

from ._common import _as_list, _prf


def word_spans(words: Sequence[str]) -> set[tuple[int, int]]:
    """把一句分好的词变成字符区间集合。

    >>> sorted(word_spans(["我们", "爱", "北京"]))
    [(0, 2), (2, 3), (3, 5)]
    """
    spans, start = set(), 0
    for word in words:
        spans.add((start, start + len(word)))
        start += len(word)
    return spans


def span_prf(gold_sets: Sequence[set], pred_sets: Sequence[set]) -> tuple[float, float, float]:
    """每句一个"片段"集合（词的 ``(起点, 终点)``、实体的 ``(类型, 名字)``……），与标准答案完全相同的才算对；
    所有句子的计数先相加再算比例（micro 平均），返回 ``(precision, recall, f1)``，分母为 0 时记 0。

    >>> span_prf([{(0, 2), (2, 3)}], [{(0, 2), (2, 4), (4, 5)}])
    (0.3333333333333333, 0.5, 0.4)
    """
    correct = sum(len(gold & pred) for gold, pred in zip(gold_sets, pred_sets, strict=True))
    n_gold, n_pred = sum(map(len, gold_sets)), sum(map(len, pred_sets))
    return _prf(correct, n_pred - correct, n_gold - correct)


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
    所有句子的计数先相加再算比例（micro 平均），这也是 SIGHAN Bakeoff 的算法（:func:`span_prf`）。
    """
    if len(gold_sentences) != len(predicted_sentences):
        raise ValueError(
            f"标准答案有 {len(gold_sentences)} 句，预测结果有 {len(predicted_sentences)} 句，"
            "两者必须一一对应。"
        )
    for i, (gold, pred) in enumerate(zip(gold_sentences, predicted_sentences)):
        if "".join(gold) != "".join(pred):
            raise ValueError(
                f"第 {i} 句的标准答案与预测结果拼接后不是同一个字符串："
                f"{''.join(gold)[:30]!r} vs {''.join(pred)[:30]!r}。请对同一段文字分词后再比较。"
            )
    return span_prf([word_spans(g) for g in gold_sentences], [word_spans(p) for p in predicted_sentences])


_CHUNK_PREFIXES = ("B", "I", "E", "S")


def _split_tag(tag: Any) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``，``"O"`` -> ``("O", "")``；不带类型的 ``"B"`` 类型记为 ``"_"``。"""
    if tag == "O":
        return "O", ""
    prefix, _, entity_type = str(tag).partition("-")
    if prefix not in _CHUNK_PREFIXES:
        raise ValueError(
            f"无法识别的标签 {tag!r}：应为 'O'，或 'B-类型'、'I-类型'（也接受 BIOES 的 'E-'、'S-'）。"
            "如果手里是标签编号，请先用词表换回字符串标签。"
        )
    return prefix, entity_type or "_"


def _chunk_ends(prev: str, tag: str, prev_type: str, entity_type: str) -> bool:
    """上一个词元是不是一个实体的最后一个（conlleval 的规则）。"""
    return (prev in ("E", "S")
            or (prev in ("B", "I") and tag in ("B", "S", "O"))
            or (prev != "O" and prev_type != entity_type))


def _chunk_starts(prev: str, tag: str, prev_type: str, entity_type: str) -> bool:
    """当前词元是不是一个新实体的开头。注意 O 或别的类型后面的 I- 也算开头（conlleval 的宽松规则）。"""
    return (tag in ("B", "S")
            or (prev in ("E", "S", "O") and tag in ("E", "I"))
            or (tag != "O" and prev_type != entity_type))


def bio_to_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """把一句话的 BIO 标签变成实体列表 ``[(类型, 起点, 终点), ...]``，终点不含（同 Python 切片）。

    规则与 conlleval 和 seqeval 的默认模式相同：不合规的 I- （前面是 O 或别的类型）开始一个新实体。
    也接受 BIOES 标签（E- 结束、S- 单字实体）。

    >>> bio_to_spans(["B-PER", "I-PER", "O", "B-LOC", "I-ORG"])
    [('PER', 0, 2), ('LOC', 3, 4), ('ORG', 4, 5)]
    """
    tags = _as_list(tags, "tags")
    spans = []
    prev, prev_type, start = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):  # 末尾补一个 O，让最后一个实体也能结束
        prefix, entity_type = _split_tag(tag)
        if _chunk_ends(prev, prefix, prev_type, entity_type):
            spans.append((prev_type, start, i))
        if _chunk_starts(prev, prefix, prev_type, entity_type):
            start = i
        prev, prev_type = prefix, entity_type
    return spans


def _paired_sequences(gold: Any, pred: Any) -> tuple[list, list]:
    """检查两组句子：句数相同、每句等长、确实是“列表的列表”。"""
    gold, pred = _as_list(gold, "gold"), _as_list(pred, "pred")
    if len(gold) != len(pred):
        raise ValueError(f"标准答案有 {len(gold)} 句，预测结果有 {len(pred)} 句，两者必须一一对应。")
    if not gold:
        raise ValueError("没有句子：gold 和 pred 至少要有一句。")
    pairs = []
    for i, (g, p) in enumerate(zip(gold, pred)):
        if isinstance(g, str) or isinstance(p, str):
            raise ValueError(
                f"第 {i} 句是字符串 {g!r}，而这里需要“句子的列表”，每句是一串标签。"
                "只有一句时请写成 [tags]。"
            )
        g, p = _as_list(g, f"gold[{i}]"), _as_list(p, f"pred[{i}]")
        if len(g) != len(p):
            raise ValueError(f"第 {i} 句的标准答案有 {len(g)} 个标签，预测有 {len(p)} 个，必须逐词对应。")
        pairs.append((g, p))
    return [g for g, _ in pairs], [p for _, p in pairs]


def entity_prf(
    gold_tag_seqs: Sequence[Sequence[str]],
    pred_tag_seqs: Sequence[Sequence[str]],
    per_type: bool = False,
) -> tuple[float, float, float] | dict[str, dict[str, float]]:
    """实体级精确率、召回率、F1（与 conlleval、seqeval 默认模式相同）。

    一个预测实体只有类型、起点、终点都与某个标准实体相同才算对；所有句子的计数相加后再算
    （micro 平均）。

    参数：
        gold_tag_seqs, pred_tag_seqs: 句子列表，每句是 BIO 标签列表，如 ``[["B-PER", "I-PER", "O"]]``。
        per_type: False 返回 ``(precision, recall, f1)``；True 返回字典，每个实体类型一项，
            外加 ``"overall"``，每项是 ``{"precision", "recall", "f1", "support"}``
            （support 是标准实体个数）。

    >>> entity_prf([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    (0.5, 0.5, 0.5)
    """
    gold_seqs, pred_seqs = _paired_sequences(gold_tag_seqs, pred_tag_seqs)
    gold = {(i, *span) for i, tags in enumerate(gold_seqs) for span in bio_to_spans(tags)}
    pred = {(i, *span) for i, tags in enumerate(pred_seqs) for span in bio_to_spans(tags)}

    def score(g: set, p: set) -> tuple[float, float, float]:
        hits = len(g & p)
        return _prf(hits, len(p) - hits, len(g) - hits)

    if not per_type:
        return score(gold, pred)
    report = {}
    for entity_type in sorted({span[1] for span in gold | pred}):
        g = {s for s in gold if s[1] == entity_type}
        p = {s for s in pred if s[1] == entity_type}
        report[entity_type] = dict(zip(("precision", "recall", "f1"), score(g, p)), support=len(g))
    report["overall"] = dict(zip(("precision", "recall", "f1"), score(gold, pred)), support=len(gold))
    return report


def token_accuracy(gold: Sequence[Sequence], pred: Sequence[Sequence]) -> float:
    """逐词元的准确率：所有句子里标签相同的位置数 / 总位置数（如词性标注准确率）。

    >>> token_accuracy([["n", "v"], ["n"]], [["n", "n"], ["n"]])
    0.6666666666666666
    """
    gold, pred = _paired_sequences(gold, pred)
    total = sum(len(g) for g in gold)
    if total == 0:
        raise ValueError("所有句子都是空的：没有可以比较的标签。")
    return sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / total
