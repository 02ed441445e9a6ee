"""WEAT 对照逐项写出的暴力实现（随机向量，很多种子）；有关联时 p 很小、随机向量时 p 近似均匀；
反事实翻转率对照暴力计数；n-gram 重叠率、提取率对照暴力实现。"""

import itertools
import random
import statistics

import numpy as np
import pytest

from aigc_lib.safety.bias import counterfactual_flips, swap_words, weat
from aigc_lib.safety.memorization import NgramIndex, extraction_rate, ngram_overlap


def brute_weat(X, Y, A, B, vec):
    def cos(u, v):
        return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))

    def s(w):
        return statistics.mean(cos(vec[w], vec[a]) for a in A) - statistics.mean(cos(vec[w], vec[b]) for b in B)

    d = (statistics.mean(s(x) for x in X) - statistics.mean(s(y) for y in Y)) / statistics.stdev([s(w) for w in X + Y])
    words = X + Y
    observed = sum(s(x) for x in X) - sum(s(y) for y in Y)
    stats = [sum(s(w) for w in group) - sum(s(w) for w in words if w not in group)
             for group in itertools.combinations(words, len(X))]
    return d, sum(v >= observed - 1e-9 for v in stats) / len(stats)


def random_vectors(rng, words, dim=6):
    return {w: rng.standard_normal(dim) for w in words}


def test_weat_matches_brute_force_on_random_vectors():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        nx, ny = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        X, Y = [f"x{i}" for i in range(nx)], [f"y{i}" for i in range(ny)]
        A, B = [f"a{i}" for i in range(int(rng.integers(1, 5)))], [f"b{i}" for i in range(int(rng.integers(1, 5)))]
        vec = random_vectors(rng, X + Y + A + B)
        d, p = brute_weat(X, Y, A, B, vec)
        result = weat(X, Y, A, B, vec)
        assert result.exact and result.effect_size == pytest.approx(d, abs=1e-9) and result.p_value == pytest.approx(p)
        sampled = weat(X, Y, A, B, vec, max_exact=0, samples=4000, seed=seed)
        assert not sampled.exact and abs(sampled.p_value - p) < 0.04


def test_planted_association_small_p_and_random_roughly_uniform():
    rng = np.random.default_rng(0)
    a_dir, b_dir = rng.standard_normal(20), rng.standard_normal(20)
    vec = {}
    for i in range(8):
        vec[f"a{i}"], vec[f"b{i}"] = a_dir + 0.5 * rng.standard_normal(20), b_dir + 0.5 * rng.standard_normal(20)
        vec[f"x{i}"], vec[f"y{i}"] = a_dir + 2 * rng.standard_normal(20), b_dir + 2 * rng.standard_normal(20)
    X, Y, A, B = ([f"{c}{i}" for i in range(8)] for c in "xyab")
    planted = weat(X, Y, A, B, vec)  # C(16, 8) = 12870 种分法：精确
    assert planted.exact and planted.permutations == 12870 and planted.effect_size > 1.0 and planted.p_value < 0.01
    assert weat(Y, X, A, B, vec).p_value > 0.99  # 反过来问：没有这个方向的关联
    ps = []
    for seed in range(400):
        r = np.random.default_rng(1000 + seed)
        words = [f"{c}{i}" for c in "xyab" for i in range(4)]
        v = random_vectors(r, words)
        ps.append(weat(words[:4], words[4:8], words[8:12], words[12:], v).p_value)
    for level in (0.05, 0.1, 0.25, 0.5, 0.75):
        share = sum(p <= level for p in ps) / len(ps)
        assert abs(share - level) < 0.08, (level, share)


def test_counterfactual_flips_against_counting():
    rng = random.Random(0)
    pieces = ["他", "她", "我", "很好", "不错", "他们", "小明", "小红", "。"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))) for _ in range(500)]
    swaps = [("他", "她"), ("小明", "小红")]

    def predict(batch):  # 一个有偏见的"模型"：看到"她"或"小红"就判负面
        return ["neg" if ("她" in t or "小红" in t) else "pos" for t in batch]

    result = counterfactual_flips(predict, texts, swaps)
    changed = [t for t in texts if any(w in t for pair in swaps for w in pair)]
    # 翻转 ⟺ 原句里"女性词"要么全无要么全是：替换后正好反过来
    expected = [t for t in changed
                if (("她" in t or "小红" in t) != ("他" in t.replace("他们", "") or "小明" in t or "他们" in t))]
    assert result.compared == len(changed)
    assert [f[0] for f in result.flipped] == expected
    assert result.rate == pytest.approx(len(expected) / len(changed))
    assert all(f[1] == swap_words(f[0], swaps) and f[2] != f[3] for f in result.flipped)
    assert swap_words(swap_words("他和她、小明", swaps), swaps) == "他和她、小明"
    assert result.pairs == [(t, swap_words(t, swaps)) for t in changed]
    assert counterfactual_flips(predict, ["你好"], swaps) == (0.0, 0, [], [])


def test_swap_words_keep_against_scanning():
    """keep 里的词原样保留：与一个逐位置、最长匹配的手写扫描对照，并检查反事实句子里没有造出"其她"。"""
    rng = random.Random(1)
    pieces = ["其他", "他", "她", "吉他", "其", "吉", "他们", "好", "。"]
    swaps, keep = [("他", "她")], ["其他", "吉他"]
    table = {"他": "她", "她": "他", "其他": "其他", "吉他": "吉他"}

    def scan(text):
        out, i = [], 0
        while i < len(text):
            word = next((w for w in sorted(table, key=len, reverse=True) if text.startswith(w, i)), None)
            out.append(table[word] if word else text[i])
            i += len(word) if word else 1
        return "".join(out)

    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        swapped = swap_words(text, swaps, keep)
        assert swapped == scan(text), text
        assert swapped.count("其她") <= text.count("其她") and swapped.count("吉她") <= text.count("吉她")
    assert swap_words("其他都好，他很热情", swaps, keep) == "其他都好，她很热情"
    assert swap_words("其他都好", swaps) == "其她都好"  # 不给 keep 时照旧逐字替换

    def predict(batch):
        return ["neg" if "她" in t else "pos" for t in batch]

    result = counterfactual_flips(predict, ["其他还行", "吉他不错", "他很热情", "其他还行，他也好"], swaps, keep)
    assert result.compared == 2  # 只含"其他""吉他"的两句替换后不变，不参加比较
    assert [f[1] for f in result.flipped] == ["她很热情", "其他还行，她也好"]


def test_ngram_overlap_against_brute_force():
    rng = random.Random(0)
    for trial in range(60):
        alphabet = "甲乙丙丁"[: rng.randint(2, 4)]
        train = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(rng.randint(1, 4))]
        generated = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(rng.randint(1, 3))]
        n = rng.randint(1, 6)
        grams = {t[i:i + n] for t in train for i in range(len(t) - n + 1)}
        queries = [g[i:i + n] for g in generated for i in range(len(g) - n + 1)]
        expected = sum(q in grams for q in queries) / len(queries) if queries else 0.0
        assert ngram_overlap(generated, train, n) == pytest.approx(expected)
        assert ngram_overlap(generated, NgramIndex(train, n), n) == pytest.approx(expected)
        assert len(NgramIndex(train, n)) == len(grams)
    assert ngram_overlap("今天天气很好", "今天天气很好。", 8) == 0.0  # 不到 8 个字：没有 8-gram
    with pytest.raises(ValueError, match="n=3"):
        ngram_overlap("abc", NgramIndex("abcd", 3), 4)


def test_extraction_rate_against_brute_force():
    rng = random.Random(1)
    training = ["".join(rng.choice("天地人和风雨") for _ in range(rng.randint(3, 20))) for _ in range(200)]
    memorised = set(training[:70])

    def generate_fn(prefix, k):  # 一个"背下了"前 70 句的模型：能找到以 prefix 开头的背过的句子就照抄
        for sentence in training[:70]:
            if sentence.startswith(prefix):
                return sentence[len(prefix):len(prefix) + k].ljust(k, "。")
        return "。" * k

    for prefix_len, suffix_len in ((4, None), (4, 6), (2, 3)):
        result = extraction_rate(generate_fn, training, prefix_len, suffix_len)
        tested = [s for s in training if len(s) > prefix_len and (suffix_len is None or len(s) >= prefix_len + suffix_len)]
        hits = [s for s in tested
                if generate_fn(s[:prefix_len], len(s) - prefix_len if suffix_len is None else suffix_len)
                == (s[prefix_len:] if suffix_len is None else s[prefix_len:prefix_len + suffix_len])]
        assert result.tested == len(tested) and len(result.extracted) == len(hits)
        assert result.rate == pytest.approx(len(hits) / len(tested))
