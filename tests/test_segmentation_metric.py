"""segmentation_prf：手算的例子，以及在大量随机切分上与逐区间枚举的暴力写法比较。"""

import random
from fractions import Fraction

import pytest

from aigc_lib.metrics import segmentation_prf

HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 500)]


def f1(p, r):
    return 2 * p * r / (p + r) if p + r else 0


# 每个例子的计数都是手数出来的：(标准答案, 预测, 对的词数, 预测词数, 标准词数)
HAND_WORKED = [
    # 标准 {我们, 爱, 北京}，预测 {我们, 爱北京}：只有 "我们" 对
    ([["我们", "爱", "北京"]], [["我们", "爱北京"]], 1, 2, 3),
    # 切得太碎：一个词都没对上
    ([["北京大学"]], [["北", "京", "大", "学"]], 0, 4, 1),
    # 完全一样
    ([["研究", "生命", "的", "起源"]], [["研究", "生命", "的", "起源"]], 4, 4, 4),
    # 边界错位："研究生" + "命" 两个词都错，"的"、"起源" 对
    ([["研究", "生命", "的", "起源"]], [["研究生", "命", "的", "起源"]], 2, 4, 4),
    # 两句合计（micro）：第一句 对 5 / 预测 7 / 标准 6，第二句 对 1 / 预测 2 / 标准 3
    (
        [["他", "来到", "了", "网易", "杭研", "大厦"], ["小明", "硕士", "毕业"]],
        [["他", "来到", "了", "网易", "杭", "研", "大厦"], ["小明", "硕士毕业"]],
        6, 9, 9,
    ),
    # 同一个词在一句里出现两次，按位置各算一次
    ([["好", "好", "学习"]], [["好", "好学", "习"]], 1, 3, 3),
]


@pytest.mark.parametrize("gold, pred, correct, n_pred, n_gold", HAND_WORKED)
def test_hand_worked_cases(gold, pred, correct, n_pred, n_gold):
    p, r, f = segmentation_prf(gold, pred)
    expected_p, expected_r = Fraction(correct, n_pred), Fraction(correct, n_gold)
    assert p == pytest.approx(float(expected_p))
    assert r == pytest.approx(float(expected_r))
    assert f == pytest.approx(float(f1(expected_p, expected_r)))


def test_micro_average_is_not_the_mean_of_sentence_scores():
    gold, pred = HAND_WORKED[4][0], HAND_WORKED[4][1]
    per_sentence = [segmentation_prf([g], [p])[2] for g, p in zip(gold, pred)]
    assert segmentation_prf(gold, pred)[2] != pytest.approx(sum(per_sentence) / 2)


def test_edge_cases_and_errors():
    assert segmentation_prf([], []) == (0.0, 0.0, 0.0)
    assert segmentation_prf([[]], [[]]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="一一对应"):
        segmentation_prf([["我"]], [])
    with pytest.raises(ValueError, match="第 1 句"):
        segmentation_prf([["我"], ["你们"]], [["我"], ["他们"]])


def random_segmentation(rng, text):
    """把 text 随机切成词：每个字之间以一定概率断开。"""
    p = rng.random()
    words, current = [], ""
    for ch in text:
        if current and rng.random() < p:
            words.append(current)
            current = ""
        current += ch
    return words + ([current] if current else [])


def brute_force_counts(gold, pred):
    """枚举每个字符区间 [i, j)：在两种切分里都恰好是一个词的才算对。"""
    def is_word(words, i, j):
        boundaries, position = {0}, 0
        for word in words:
            position += len(word)
            boundaries.add(position)
        return i in boundaries and j in boundaries and not any(k in boundaries for k in range(i + 1, j))

    n = len("".join(gold))
    correct = sum(is_word(gold, i, j) and is_word(pred, i, j) for i in range(n) for j in range(i + 1, n + 1))
    return correct, len(pred), len(gold)


@pytest.mark.parametrize("seed", range(50))
def test_matches_brute_force_on_random_segmentations(seed):
    rng = random.Random(seed)
    gold, pred = [], []
    for _ in range(rng.randint(1, 6)):
        text = "".join(rng.choice(HAN[:8]) for _ in range(rng.randint(1, 15)))  # 小字表：重复的词很多
        gold.append(random_segmentation(rng, text))
        pred.append(random_segmentation(rng, text))
    counts = [brute_force_counts(g, p) for g, p in zip(gold, pred)]
    correct, n_pred, n_gold = (sum(c[k] for c in counts) for k in range(3))
    p, r, f = segmentation_prf(gold, pred)
    assert p == pytest.approx(correct / n_pred)
    assert r == pytest.approx(correct / n_gold)
    assert f == pytest.approx(f1(correct / n_pred, correct / n_gold))
    # 交换标准答案和预测，precision 和 recall 互换
    assert segmentation_prf(pred, gold) == pytest.approx((r, p, f))
    assert segmentation_prf(gold, gold) == (1.0, 1.0, 1.0)
