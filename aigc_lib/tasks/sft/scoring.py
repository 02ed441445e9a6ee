"""每种指令怎样打分，以及不用神经网络的基线。

打分规则（每种一个 0–1 的数，越大越好；都按整份数据汇总，不是逐条平均）：

==========  ==================  ==========================================================
种类         指标                 规则
==========  ==================  ==========================================================
sentiment   accuracy             回答（去掉首尾空白）与"正面"/"负面"完全相同才算对
segment     word_f1              按空格切出的词在原句里的位置 (起点, 终点) 与标准答案比，算 F1
pinyin      char_accuracy        逐位比字（长度不同，多出或缺少的都算错），同第 10 章
ner         entity_f1            回答解析成 {(类型, 名字)}，与标准答案比，算 F1
continue    char_accuracy        续写与原句的后半句逐位比字
==========  ==================  ==========================================================

基线（都只看训练集）：sentiment 答训练集里最多的标签；segment 每个字单独成词；pinyin 每个音节
取训练集里最常对应的字（第 10 章的 ``MostFrequentChar``）；ner 用训练集里出现过的实体做词典，
从左到右最长匹配；continue 答训练集里最常见的续写（多数基线）。
"""

from __future__ import annotations

from collections import Counter, defaultdict

from ...metrics.sequence import span_prf, word_spans
from ..pinyin.baselines import MostFrequentChar
from ..pinyin.data import char_accuracy
from .data import ENTITY_NAMES, KINDS, NO_ENTITY

METRICS = {"sentiment": "accuracy", "segment": "word_f1", "pinyin": "char_accuracy", "ner": "entity_f1",
           "continue": "char_accuracy"}


def parse_entities(answer: str) -> set[tuple[str, str]]:
    """"人名：江泽民、李鹏；地名：北京" -> {("人名", "江泽民"), ("人名", "李鹏"), ("地名", "北京")}；
    "没有"或看不懂的部分 -> 空集（看不懂的不算对，也不报错）。"""
    found = set()
    for part in answer.strip().split("；"):
        kind, sep, names = part.partition("：")
        if sep and kind in ENTITY_NAMES.values():
            found |= {(kind, name) for name in names.split("、") if name}
    return found


def _f1(gold_sets, pred_sets) -> float:
    """micro F1（:func:`~aigc_lib.metrics.span_prf`）；标准答案和回答都一个片段也没有时算全对（1.0）。"""
    if not any(gold_sets) and not any(pred_sets):
        return 1.0
    return span_prf(gold_sets, pred_sets)[2]


def score(kind: str, answers, predictions) -> float:
    """一种指令在一批样本上的分数（见模块说明）。``answers``、``predictions`` 是一一对应的字符串。"""
    answers, predictions = list(answers), [p.strip() for p in predictions]
    if len(answers) != len(predictions):
        raise ValueError(f"标准答案有 {len(answers)} 条，预测有 {len(predictions)} 条，两者必须一一对应。")
    if not answers:
        raise ValueError(f"没有 {kind} 的样本，无法打分。")
    if kind == "sentiment":
        return sum(a == p for a, p in zip(answers, predictions)) / len(answers)
    if kind == "segment":
        return _f1([word_spans(a.split()) for a in answers], [word_spans(p.split()) for p in predictions])
    if kind == "ner":
        return _f1([parse_entities(a) for a in answers], [parse_entities(p) for p in predictions])
    if kind in ("pinyin", "continue"):
        return char_accuracy(answers, predictions)
    raise ValueError(f"没有指令种类 {kind!r}；可选：{', '.join(KINDS)}。")


# ---------------------------------------------------------------------------
# 基线
# ---------------------------------------------------------------------------


class Baseline:
    """按训练集的样本建好，``answer(example)`` 给出基线的回答。"""

    def __init__(self, train_examples) -> None:
        by_kind = defaultdict(list)
        for e in train_examples:
            by_kind[e.kind].append(e)
        self.majority = {k: Counter(e.answer for e in by_kind[k]).most_common(1)[0][0] for k in by_kind}
        # 拼音：每个音节最常对应的字（提示里的音节与答案的字一一对应）
        pairs = [(_syllables(e.prompt), e.answer) for e in by_kind["pinyin"]]
        self.pinyin = MostFrequentChar().fit(pairs) if pairs else None
        # 实体：训练集里见过的每个名字 -> 它最常见的类型
        names: dict[str, Counter] = defaultdict(Counter)
        for e in by_kind["ner"]:
            for kind, name in parse_entities(e.answer):
                names[name][kind] += 1
        self.entity_kind = {n: c.most_common(1)[0][0] for n, c in names.items() if len(n) >= 2}
        self.longest = max(map(len, self.entity_kind), default=0)

    def answer(self, example) -> str:
        kind, source = example.kind, example.source
        if kind == "segment":
            return " ".join(source)
        if kind == "pinyin" and self.pinyin is not None:
            return self.pinyin.predict(_syllables(example.prompt))
        if kind == "ner":
            return self._dictionary_entities(source)
        return self.majority.get(kind, "")

    def _dictionary_entities(self, text: str) -> str:
        found: dict[str, list[str]] = {}
        i = 0
        while i < len(text):
            for length in range(min(self.longest, len(text) - i), 1, -1):
                name = text[i:i + length]
                if name in self.entity_kind:
                    found.setdefault(self.entity_kind[name], []).append(name)
                    i += length
                    break
            else:
                i += 1
        parts = [f"{k}：{'、'.join(dict.fromkeys(found[k]))}" for k in ENTITY_NAMES.values() if k in found]
        return "；".join(parts) or NO_ENTITY


def _syllables(prompt: str) -> list[str]:
    """拼音指令里的音节（提示里连续的小写字母段）。"""
    return "".join(ch if "a" <= ch <= "z" else " " for ch in prompt).split()
