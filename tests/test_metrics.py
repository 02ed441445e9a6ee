"""aigc_lib.metrics 的测试：分类指标对照 scikit-learn，BLEU 对照 sacrebleu，实体 F1 对照 seqeval，
困惑度对照 PyTorch 的交叉熵，ROUGE-L 对照暴力枚举的最长公共子序列。

每个对照都在许多随机输入上进行（随机种子循环），并专门覆盖边界情况：某类从未被预测、
只有一个类别、分数相同（并列）、不合规的 BIO 序列。
"""

from __future__ import annotations

import itertools
import math
import random
import unicodedata
import warnings

import numpy as np
import pytest
import torch
from sacrebleu.metrics import BLEU
from seqeval.metrics import classification_report as seqeval_report
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from sklearn import metrics as skm

from aigc_lib import metrics as M

SEEDS = range(60)


@pytest.fixture(autouse=True)
def _quiet_reference_warnings():
    """sklearn/seqeval 在除以 0 时会发警告；我们直接比较数值（zero_division=0）。"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------- 分类指标 vs scikit-learn

LABEL_SETS = [[0, 1, 2, 3, 4], ["负面", "正面", "中性", "好", "坏"], [-1, 1, 7, 3, 9]]


def _random_classification(seed: int):
    """随机标签；按种子轮流制造边界情况。返回 (y_true, y_pred, 可能的类别)。"""
    rng = random.Random(seed)
    k = rng.choice([1, 2, 2, 3, 4, 5])
    names = LABEL_SETS[seed % len(LABEL_SETS)][:k]
    n = rng.randint(1, 30)
    y_true = [rng.choice(names) for _ in range(n)]
    pool = names
    case = seed % 4
    if case == 1 and k > 1:
        pool = names[:-1]                       # 最后一类从未被预测
    if case == 2:
        y_true = [names[0]] * n                 # y_true 里只有一个类别
    y_pred = [rng.choice(pool) for _ in range(n)]
    if case == 3:
        y_pred = [t if rng.random() < 0.7 else rng.choice(names) for t in y_true]  # 大部分预测对
    return y_true, y_pred, names


def _input_kinds(values: list):
    """同一组标签的几种写法：列表、NumPy 数组，整数标签再加一个张量。"""
    kinds = [values, np.array(values)]
    if all(isinstance(v, int) for v in values):
        kinds.append(torch.tensor(values))
    return kinds


def test_accuracy_and_confusion_matrix_match_sklearn():
    for seed in SEEDS:
        y_true, y_pred, names = _random_classification(seed)
        for a, b in zip(_input_kinds(y_true), _input_kinds(y_pred)):
            assert M.accuracy(a, b) == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
            assert np.array_equal(M.confusion_matrix(a, b), skm.confusion_matrix(y_true, y_pred))
        order = random.Random(seed).sample(names, len(names))  # 打乱顺序，且含从未出现的类别
        assert np.array_equal(M.confusion_matrix(y_true, y_pred, labels=order),
                              skm.confusion_matrix(y_true, y_pred, labels=order))


def test_precision_recall_f1_matches_sklearn_for_every_average():
    for seed in SEEDS:
        rng = random.Random(seed)
        y_true, y_pred, names = _random_classification(seed)
        subset = rng.sample(names, rng.randint(1, len(names)))
        for average, labels in itertools.product(["micro", "macro", "weighted"], [None, subset]):
            expected = skm.precision_recall_fscore_support(
                y_true, y_pred, average=average, labels=labels, zero_division=0)[:3]
            for a, b in zip(_input_kinds(y_true), _input_kinds(y_pred)):
                got = M.precision_recall_f1(a, b, average=average, labels=labels)
                assert got == pytest.approx(expected, abs=1e-12), (seed, average, labels)
        present = sorted(set(y_true) | set(y_pred))
        for pos_label in names[:2]:
            if len(present) > 2 or (len(present) == 2 and pos_label not in present):
                with pytest.raises(ValueError):
                    skm.precision_recall_fscore_support(y_true, y_pred, average="binary",
                                                        pos_label=pos_label)
                with pytest.raises(ValueError, match="pos_label|binary"):
                    M.precision_recall_f1(y_true, y_pred, average="binary", pos_label=pos_label)
                continue
            expected = skm.precision_recall_fscore_support(
                y_true, y_pred, average="binary", pos_label=pos_label, zero_division=0)[:3]
            got = M.precision_recall_f1(y_true, y_pred, average="binary", pos_label=pos_label)
            assert got == pytest.approx(expected, abs=1e-12), (seed, pos_label)


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def test_classification_report_matches_sklearn():
    for seed in SEEDS:
        rng = random.Random(seed)
        y_true, y_pred, names = _random_classification(seed)
        labels = None if seed % 2 else rng.sample(names, rng.randint(1, len(names)))
        shown = labels if labels is not None else sorted(set(y_true) | set(y_pred))
        target_names = [f"类{label}" for label in shown] if seed % 3 == 0 else None
        expected = skm.classification_report(y_true, y_pred, labels=labels,
                                             target_names=target_names, output_dict=True,
                                             zero_division=0)
        got = M.classification_report(y_true, y_pred, labels=labels, target_names=target_names,
                                      output_dict=True)
        assert got.keys() == expected.keys()
        for key, row in expected.items():
            if isinstance(row, dict):
                assert got[key] == pytest.approx(row, abs=1e-12), (seed, key)
            else:
                assert got[key] == pytest.approx(row, abs=1e-12)
        # 文本表：每一类那一行打印的数字就是上面的数值，并且所有行按显示宽度对齐
        digits = 2 + seed % 3
        text = M.classification_report(y_true, y_pred, labels=labels, target_names=target_names,
                                       digits=digits)
        lines = [line for line in text.splitlines() if line.strip()]
        assert len({_display_width(line) for line in lines}) == 1, text
        for name in (target_names or [str(x) for x in shown]):
            row = next(line for line in lines if line.split()[0] == name)
            p, r, f, n = row.split()[1:]
            assert p == f"{expected[name]['precision']:.{digits}f}"
            assert r == f"{expected[name]['recall']:.{digits}f}"
            assert f == f"{expected[name]['f1-score']:.{digits}f}"
            assert int(n) == expected[name]["support"]


# ---------------------------------------------------------------- 曲线 vs scikit-learn 与暴力计算


def _random_scores(seed: int):
    """随机二分类标签（正负都有）和分数；一半种子把分数取整到一位小数，制造大量并列。"""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    rng.shuffle(y)
    scores = rng.random(n)
    if seed % 2:
        scores = np.round(scores, 1)
    if seed % 7 == 0:
        scores = np.full(n, 0.5)  # 全部并列
    neg, pos = [(0, 1), ("差", "好"), (-1, 1)][seed % 3]
    labels = np.where(y == 1, pos, neg).tolist()
    return labels, scores, pos


def _brute_force_auc(is_pos: list[bool], scores) -> float:
    """所有 (正, 负) 样本对里正样本分数更高的比例，并列算一半。"""
    pos = [s for p, s in zip(is_pos, scores) if p]
    neg = [s for p, s in zip(is_pos, scores) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_roc_and_pr_curves_match_sklearn():
    for seed in SEEDS:
        y, scores, pos = _random_scores(seed)
        is_pos = [label == pos for label in y]
        for drop in (True, False):
            for mine, ref in zip(M.roc_curve(y, scores, pos_label=pos, drop_intermediate=drop),
                                 skm.roc_curve(y, scores, pos_label=pos, drop_intermediate=drop)):
                np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-12)
            for mine, ref in zip(
                    M.precision_recall_curve(y, scores, pos_label=pos, drop_intermediate=drop),
                    skm.precision_recall_curve(y, scores, pos_label=pos, drop_intermediate=drop)):
                np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-12)
        auc = M.roc_auc(y, torch.tensor(scores), pos_label=pos)
        assert auc == pytest.approx(skm.roc_auc_score(is_pos, scores), abs=1e-12)
        assert auc == pytest.approx(_brute_force_auc(is_pos, scores), abs=1e-12)
        assert M.average_precision(y, scores, pos_label=pos) == pytest.approx(
            skm.average_precision_score(is_pos, scores), abs=1e-12)


def test_curves_with_a_single_class():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scores = rng.random(int(rng.integers(1, 10)))
        all_neg, all_pos = [0] * len(scores), [1] * len(scores)
        for y in (all_neg, all_pos):
            with pytest.raises(ValueError, match="正类|负类"):
                M.roc_curve(y, scores)
            with pytest.raises(ValueError, match="正类|负类"):
                M.roc_auc(y, scores)
        with pytest.raises(ValueError, match="正类"):
            M.precision_recall_curve(all_neg, scores)
        # 只有正类时 PR 曲线仍有定义：precision 处处为 1
        for mine, ref in zip(M.precision_recall_curve(all_pos, scores),
                             skm.precision_recall_curve(all_pos, scores)):
            np.testing.assert_allclose(mine, ref, atol=1e-12)
        assert M.average_precision(all_pos, scores) == pytest.approx(
            skm.average_precision_score(all_pos, scores))


# ---------------------------------------------------------------- 输入检查


def test_mismatched_and_empty_inputs_raise_clear_errors():
    pairs = {
        "accuracy": M.accuracy,
        "precision_recall_f1": lambda a, b: M.precision_recall_f1(a, b, average="macro"),
        "confusion_matrix": M.confusion_matrix,
        "classification_report": M.classification_report,
        "roc_curve": M.roc_curve,
        "roc_auc": M.roc_auc,
        "precision_recall_curve": M.precision_recall_curve,
        "average_precision": M.average_precision,
    }
    for name, fn in pairs.items():
        with pytest.raises(ValueError, match="一一对应"):
            fn([0, 1, 1], [0.1, 0.2])
        with pytest.raises(ValueError, match="空"):
            fn([], [])
    for fn in (M.bleu, M.rouge_l_corpus):
        with pytest.raises(ValueError, match="一一对应"):
            fn(["你好", "再见"], ["你好"])
        with pytest.raises(ValueError, match="空"):
            fn([], [])
    for fn in (M.entity_prf, M.token_accuracy):
        with pytest.raises(ValueError, match="一一对应"):
            fn([["O"], ["O"]], [["O"]])
        with pytest.raises(ValueError, match="逐词对应"):
            fn([["O", "O"]], [["O"]])
        with pytest.raises(ValueError, match="至少"):
            fn([], [])
        with pytest.raises(ValueError, match=r"\[tags\]"):
            fn(["B-PER", "O"], ["B-PER", "O"])  # 忘了套一层列表
    with pytest.raises(ValueError, match="argmax"):
        M.accuracy([0, 1], [[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match="average"):
        M.precision_recall_f1([0, 1], [0, 1], average="mean")
    with pytest.raises(ValueError, match="target_names"):
        M.classification_report([0, 1], [0, 1], target_names=["只有一个"])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_curve([0, 1], [0.5, float("nan")])


# ---------------------------------------------------------------- 困惑度 vs PyTorch 交叉熵


def test_perplexity_matches_cross_entropy_and_brute_force():
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        vocab, n = int(torch.randint(2, 12, (1,), generator=g)), int(torch.randint(1, 20, (1,), generator=g))
        logits = torch.randn(n, vocab, generator=g, dtype=torch.float64) * 3
        targets = torch.randint(0, vocab, (n,), generator=g)
        ce = torch.nn.functional.cross_entropy(logits, targets)
        # 暴力：每个目标字的概率 p_i，困惑度是 1/p_i 的几何平均
        z = logits.numpy()
        probs = np.exp(z - z.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        expected = np.prod(1 / probs[np.arange(n), targets.numpy()]) ** (1 / n)
        assert M.perplexity(ce) == pytest.approx(expected, rel=1e-9)
        assert M.perplexity(ce.item()) == pytest.approx(expected, rel=1e-9)
        uniform = torch.nn.functional.cross_entropy(torch.zeros(n, vocab), targets)
        assert M.perplexity(uniform) == pytest.approx(vocab, rel=1e-5)  # 均匀猜 V 个字
    assert M.perplexity(1e6) == math.inf
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="交叉熵"):
            M.perplexity(bad)


# ---------------------------------------------------------------- BLEU vs sacrebleu

CHARS = "我你他的了是在有人这中大天气很好北京"
PUNCT = "，。！？、“”"


def _edit(rng: random.Random, tokens: list, vocab) -> list:
    """在参考上随机删、改、插几处，得到一个部分重合的假设。"""
    out = []
    for t in tokens:
        r = rng.random()
        if r < 0.15:
            continue
        out.append(rng.choice(vocab) if r < 0.3 else t)
        if rng.random() < 0.1:
            out.append(rng.choice(vocab))
    return out


def _random_corpus(seed: int, vocab, n_refs: int = 1):
    """返回 (hyps, refs)，都是词元列表；refs[i] 是第 i 条假设的 n_refs 条参考。"""
    rng = random.Random(seed)
    hyps, refs = [], []
    for _ in range(rng.randint(1, 8)):
        ref_set = [[rng.choice(vocab) for _ in range(rng.randint(0, 18))] for _ in range(n_refs)]
        hyp = _edit(rng, ref_set[0], vocab) if rng.random() < 0.85 else \
            [rng.choice(vocab) for _ in range(rng.randint(0, 10))]
        hyps.append(hyp)
        refs.append(ref_set)
    return hyps, refs


def _smoothing_settings(seed: int):
    yield "none", None
    yield "exp", None
    yield "floor", None if seed % 2 else 0.01
    yield "add-k", None if seed % 2 else 0.5


def _sacrebleu(hyps: list[str], refs: list[list[str]], tokenize, smooth, value, max_order):
    streams = [list(stream) for stream in zip(*refs)]  # sacrebleu 要的是“第 k 条参考”组成的列表
    return BLEU(tokenize=tokenize, smooth_method=smooth, smooth_value=value,
                max_ngram_order=max_order).corpus_score(hyps, streams).score


def test_bleu_on_chinese_characters_matches_sacrebleu():
    vocab = list(CHARS[:8] + PUNCT) + ["a", "1", " "]
    for seed in SEEDS:
        n_refs = 1 + seed % 2
        hyps, refs = _random_corpus(seed, vocab, n_refs)
        hyps = ["".join(h) for h in hyps]
        refs = [["".join(r) for r in rs] for rs in refs]
        max_order = 4 if seed % 3 else random.Random(seed).randint(1, 4)
        ours_refs = [rs[0] for rs in refs] if n_refs == 1 else refs
        for smooth, value in _smoothing_settings(seed):
            expected = _sacrebleu(hyps, refs, "char", smooth, value, max_order)
            got = M.bleu(ours_refs, hyps, tokenize="char", max_order=max_order,
                         smooth=smooth, smooth_value=value)
            assert got == pytest.approx(expected, abs=1e-9), (seed, smooth, hyps, refs)


def test_bleu_matches_sacrebleu_zh_tokenizer_on_chinese_text():
    vocab = list(CHARS + PUNCT)  # 只有汉字和中文标点时，sacrebleu 的 'zh' 分词就是逐字
    for seed in SEEDS:
        hyps, refs = _random_corpus(seed + 1000, vocab)
        hyps = ["".join(h) for h in hyps]
        refs = [["".join(r) for r in rs] for rs in refs]
        for smooth, value in _smoothing_settings(seed):
            expected = _sacrebleu(hyps, refs, "zh", smooth, value, 4)
            got = M.bleu([rs[0] for rs in refs], hyps, smooth=smooth, smooth_value=value)
            assert got == pytest.approx(expected, abs=1e-9), (seed, smooth)


def test_bleu_on_pretokenized_words_matches_sacrebleu_none():
    vocab = ["我们", "今天", "天气", "很好", "北京", "的", "学习", "模型", "训练", "数据"]
    for seed in SEEDS:
        n_refs = 1 + seed % 3
        hyps, refs = _random_corpus(seed + 2000, vocab, n_refs)
        as_text = lambda tokens: " ".join(tokens)
        for smooth, value in _smoothing_settings(seed):
            expected = _sacrebleu([as_text(h) for h in hyps],
                                  [[as_text(r) for r in rs] for rs in refs], "none", smooth, value, 4)
            # 词列表的写法与空格字符串的写法都要对
            got_lists = M.bleu(refs, hyps, tokenize="none", smooth=smooth, smooth_value=value)
            got_text = M.bleu([[as_text(r) for r in rs] if n_refs > 1 else as_text(rs[0]) for rs in refs],
                              [as_text(h) for h in hyps], tokenize="none", smooth=smooth,
                              smooth_value=value)
            assert got_lists == pytest.approx(expected, abs=1e-9), (seed, smooth)
            assert got_text == pytest.approx(expected, abs=1e-9), (seed, smooth)


def test_bleu_word_tokenize_uses_jieba():
    import jieba

    sentences = ["今天北京的天气很好", "我们在学习训练模型", "数据很好，模型也很好", "他是中国人"]
    rng = random.Random(0)
    for seed in range(10):
        refs = rng.sample(sentences, 2)
        hyps = ["".join(_edit(rng, list(r), list(CHARS))) for r in refs]
        expected = _sacrebleu([" ".join(jieba.lcut(h)) for h in hyps],
                              [[" ".join(jieba.lcut(r))] for r in refs], "none", "exp", None, 4)
        assert M.bleu(refs, hyps, tokenize="word") == pytest.approx(expected, abs=1e-9)


def test_bleu_simple_cases_and_errors():
    assert M.bleu(["今天天气很好"], ["今天天气很好"]) == pytest.approx(100.0)
    assert M.bleu(["今天天气很好"], ["我你他"]) == 0.0
    with pytest.raises(ValueError, match="smooth"):
        M.bleu(["好"], ["好"], smooth="laplace")
    with pytest.raises(ValueError, match="tokenize"):
        M.bleu(["好"], ["好"], tokenize="bpe")


# ---------------------------------------------------------------- ROUGE-L 与 distinct-n


def _brute_force_lcs(a: str, b: str) -> int:
    """枚举较短串的所有子序列，找出也是另一串子序列的最长者。"""
    short, long = sorted((a, b), key=len)

    def is_subsequence(sub, text):
        it = iter(text)
        return all(ch in it for ch in sub)

    for r in range(len(short), 0, -1):
        if any(is_subsequence(c, long) for c in itertools.combinations(short, r)):
            return r
    return 0


def test_rouge_l_hand_worked_cases():
    # 参考 7 个字，假设 5 个字，LCS = “我爱天安门” = 5：P = 5/5，R = 5/7，F = 2PR/(P+R)
    p, r = 5 / 5, 5 / 7
    assert M.rouge_l("我爱北京天安门", "我爱天安门") == pytest.approx(2 * p * r / (p + r))
    # 《算法导论》里的例子：ABCBDAB 与 BDCABA 的 LCS 长度为 4
    p, r = 4 / 6, 4 / 7
    assert M.rouge_l("ABCBDAB", "BDCABA") == pytest.approx(2 * p * r / (p + r))
    assert M.rouge_l("今天 天气 很好", ["今天", "很好"], tokenize="none") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert M.rouge_l("你好", "你好") == 1.0
    assert M.rouge_l("你好", "再见") == 0.0
    assert M.rouge_l("你好", "") == 0.0


def test_rouge_l_matches_brute_force_lcs():
    for seed in range(200):
        rng = random.Random(seed)
        ref = "".join(rng.choice("甲乙丙丁") for _ in range(rng.randint(0, 8)))
        hyp = "".join(rng.choice("甲乙丙丁") for _ in range(rng.randint(0, 8)))
        beta = rng.choice([0.5, 1.0, 2.0])
        lcs = _brute_force_lcs(ref, hyp)
        if lcs == 0:
            expected = 0.0
        else:
            p, r = lcs / len(hyp), lcs / len(ref)
            expected = (1 + beta**2) * p * r / (r + beta**2 * p)
        assert M.rouge_l(ref, hyp, beta=beta) == pytest.approx(expected, abs=1e-12), (ref, hyp)


def test_rouge_l_corpus_is_the_mean():
    for seed in range(20):
        rng = random.Random(seed)
        refs = ["".join(rng.choice(CHARS) for _ in range(rng.randint(1, 10))) for _ in range(5)]
        hyps = ["".join(_edit(rng, list(r), list(CHARS))) for r in refs]
        expected = sum(M.rouge_l(r, h) for r, h in zip(refs, hyps)) / len(refs)
        assert M.rouge_l_corpus(refs, hyps) == pytest.approx(expected)


def test_distinct_n_hand_worked_and_properties():
    # 字：我 我 我 | 我 们 -> 一元组 5 个、不同的 2 个；二元组 我我 我我 | 我们 -> 3 个、不同的 2 个
    assert M.distinct_n(["我我我", "我们"], n=1) == pytest.approx(2 / 5)
    assert M.distinct_n(["我我我", "我们"], n=2) == pytest.approx(2 / 3)
    assert M.distinct_n(["我我我", "我们"], n=3) == pytest.approx(1.0)
    assert M.distinct_n(["我们 今天 我们"], n=1, tokenize="none") == pytest.approx(2 / 3)
    assert M.distinct_n(["好"], n=2) == 0.0  # 没有任何二元组
    for seed in range(50):
        rng = random.Random(seed)
        n = rng.randint(1, 3)
        texts = ["".join(rng.choice("甲乙丙") for _ in range(rng.randint(0, 9))) for _ in range(rng.randint(1, 5))]
        grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]  # 暴力列出所有 n-gram
        expected = len(set(grams)) / len(grams) if grams else 0.0
        assert M.distinct_n(texts, n) == pytest.approx(expected)
        repeats = rng.randint(2, 4)  # 同样的文本重复 k 遍：不同的个数不变，总数乘 k
        assert M.distinct_n(texts * repeats, n) == pytest.approx(expected / repeats)
    with pytest.raises(ValueError, match="n="):
        M.distinct_n(["你好"], n=0)
    with pytest.raises(ValueError, match="空"):
        M.distinct_n([], n=1)
    with pytest.raises(TypeError, match="字符串"):
        M.distinct_n("你好", n=1)


# ---------------------------------------------------------------- 实体 F1 vs seqeval

TYPES = ["PER", "LOC", "ORG"]


def _random_tags(rng: random.Random, length: int, style: str) -> list[str]:
    if style == "wellformed":  # 合规的 BIO：I- 只跟在同类型的 B-/I- 后面
        tags, current = [], None
        for _ in range(length):
            r = rng.random()
            if current and r < 0.4:
                tags.append(f"I-{current}")
            elif r < 0.7:
                current = rng.choice(TYPES)
                tags.append(f"B-{current}")
            else:
                current = None
                tags.append("O")
        return tags
    prefixes = {"illformed": "BIO", "bioes": "BIOES", "bare": "BIO"}[style]
    tags = []
    for _ in range(length):
        prefix = rng.choice(prefixes)
        if prefix == "O":
            tags.append("O")
        elif style == "bare":
            tags.append(prefix)  # 不带类型的 B / I
        else:
            tags.append(f"{prefix}-{rng.choice(TYPES)}")
    return tags


def _random_tagging(seed: int):
    rng = random.Random(seed)
    style = ["wellformed", "illformed", "bioes", "bare"][seed % 4]
    gold, pred = [], []
    for _ in range(rng.randint(1, 6)):
        g = _random_tags(rng, rng.randint(0, 12), style)
        if rng.random() < 0.7:  # 大部分预测是在标准答案上改几个标签，这样会有命中
            p = [rng.choice(_random_tags(rng, 1, style)) if rng.random() < 0.25 else t for t in g]
        else:
            p = _random_tags(rng, len(g), style)
        gold.append(g)
        pred.append(p)
    return gold, pred


def test_bio_to_spans_matches_seqeval_get_entities():
    for seed in range(200):
        for sentence in itertools.chain(*_random_tagging(seed)):
            expected = [(t, start, end + 1) for t, start, end in get_entities(sentence)]  # seqeval 的终点含在内
            assert M.bio_to_spans(sentence) == expected, sentence
    assert M.bio_to_spans(["B-PER", "I-PER", "O", "B-LOC", "I-ORG"]) == [
        ("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 5)]


def test_entity_prf_matches_seqeval():
    for seed in range(200):
        gold, pred = _random_tagging(seed)
        expected = (precision_score(gold, pred), recall_score(gold, pred), f1_score(gold, pred))
        assert M.entity_prf(gold, pred) == pytest.approx(expected, abs=1e-12), (gold, pred)
        report = M.entity_prf(gold, pred, per_type=True)
        assert report["overall"]["f1"] == pytest.approx(expected[2], abs=1e-12)
        if not any(get_entities(s) for s in gold + pred):
            continue  # seqeval 在一个实体都没有时不出报告
        ref = seqeval_report(gold, pred, output_dict=True)
        types = {k for k in ref if not k.endswith(" avg")}
        assert set(report) - {"overall"} == types
        for t in types:
            mine = report[t]
            assert (mine["precision"], mine["recall"], mine["f1"], mine["support"]) == pytest.approx(
                (ref[t]["precision"], ref[t]["recall"], ref[t]["f1-score"], ref[t]["support"]),
                abs=1e-12), (seed, t)
        assert report["overall"]["support"] == ref["micro avg"]["support"]


def test_token_accuracy_and_tag_errors():
    for seed in range(50):
        gold, pred = _random_tagging(seed)
        flat_gold, flat_pred = sum(gold, []), sum(pred, [])
        if flat_gold:
            assert M.token_accuracy(gold, pred) == pytest.approx(
                skm.accuracy_score(flat_gold, flat_pred), abs=1e-12)
    with pytest.raises(ValueError, match="BPER"):
        M.entity_prf([["B-PER", "BPER"]], [["O", "O"]])  # 漏了连字符
    with pytest.raises(ValueError, match="标签"):
        M.bio_to_spans([1, 2, 0])
