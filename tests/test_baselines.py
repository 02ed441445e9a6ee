"""SnowNLPBayes：与 snownlp 自己的 Sentiment 逐条对照，并与手写的公式对照。"""

import math
import random

import pytest

from aigc_lib.tasks.sentiment.baselines import SnowNLPBayes, snownlp_tokens

pytest.importorskip("snownlp")
from snownlp import normal, sentiment  # noqa: E402

# 词表里混进 snownlp 的停用词（“的”“了”“是”），这样去停用词这一步也被检查到
WORDS = ["好", "差", "喜欢", "失望", "便宜", "贵", "快", "慢", "的", "了", "是", "书", "房间", "服务"]


def random_corpus(rng, n_docs):
    docs, labels = [], []
    for _ in range(n_docs):
        label = rng.randint(0, 1)
        # 两类的用词分布不同，但有大量重叠，概率才不会全是 0 或 1
        weights = [3 if (i % 2 == label) else 1 for i in range(len(WORDS))]
        docs.append(rng.choices(WORDS, weights=weights, k=rng.randint(0, 12)))
        labels.append(label)
    return docs, labels


class SplitSentiment(sentiment.Sentiment):
    """snownlp 的 Sentiment，只把它的分词换成“按空格切开”，其余（去停用词、训练、打分）原样。"""

    def handle(self, doc):
        return normal.filter_stop(doc.split())


@pytest.mark.parametrize("seed", range(5))
def test_matches_snownlp_sentiment_on_random_corpora(seed):
    rng = random.Random(seed)
    docs, labels = random_corpus(rng, 60)
    reference = SplitSentiment()
    reference.train([" ".join(d) for d, y in zip(docs, labels) if y == 0],
                    [" ".join(d) for d, y in zip(docs, labels) if y == 1])
    ours = SnowNLPBayes().fit(docs, labels)
    test_docs, _ = random_corpus(rng, 40)
    test_docs.append(["没见过的词", "好"])  # 训练集里没有的词
    expected = [reference.classify(" ".join(d)) for d in test_docs]
    got = ours.predict_proba(test_docs)
    assert got == pytest.approx(expected, abs=1e-12)
    assert ours.predict(test_docs) == [int(p >= 0.5) for p in expected]


def formula_proba(train_docs, train_labels, doc):
    """模块文档里写的公式，逐项算出 P(正面)。"""
    scores = {}
    totals = {}
    counts = {}
    for c in (0, 1):
        counts[c] = {}
        for d, y in zip(train_docs, train_labels):
            if y == c:
                for w in d:
                    counts[c][w] = counts[c].get(w, 0) + 1
        totals[c] = sum(counts[c].values()) + len(counts[c])  # 词次 + 不同词数
    grand = sum(totals.values())
    for c in (0, 1):
        scores[c] = math.log(totals[c]) - math.log(grand)
        scores[c] += sum(math.log((counts[c].get(w, 0) + 1) / totals[c]) for w in doc)
    top = max(scores.values())
    return math.exp(scores[1] - top) / sum(math.exp(s - top) for s in scores.values())


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_documented_formula(seed):
    rng = random.Random(100 + seed)
    docs, labels = random_corpus(rng, 50)
    model = SnowNLPBayes(stopwords=False).fit(docs, labels)
    test_docs, _ = random_corpus(rng, 30)
    expected = [formula_proba(docs, labels, d) for d in test_docs]
    assert model.predict_proba(test_docs) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_stopwords_are_removed_only_when_asked():
    docs, labels = [["好", "的"], ["差", "的", "的", "的"]], [1, 0]
    with_stop = SnowNLPBayes(stopwords=False).fit(docs, labels)
    without = SnowNLPBayes().fit(docs, labels)
    # “的”只在负面里多次出现：保留它时偏向负面，去掉之后两边一样
    assert with_stop.predict_proba([["的"]])[0] < 0.5
    assert without.predict_proba([["的"]])[0] == pytest.approx(without.predict_proba([[]])[0])


def test_separable_data_is_learned():
    rng = random.Random(7)
    docs = [["好"] * rng.randint(1, 4) for _ in range(20)] + [["差"] * rng.randint(1, 4) for _ in range(20)]
    labels = [1] * 20 + [0] * 20
    model = SnowNLPBayes().fit(docs, labels)
    assert model.predict(docs) == labels


def test_shipped_model_is_snownlps_own():
    texts = ["这本书很好看，推荐", "质量太差了，再也不买", "房间一般，服务还行"]
    model = SnowNLPBayes.shipped()
    got = model.predict_proba([snownlp_tokens(t) for t in texts])
    assert got == pytest.approx([sentiment.classify(t) for t in texts], abs=1e-12)


def test_clear_errors():
    with pytest.raises(RuntimeError, match="还没有训练"):
        SnowNLPBayes().predict_proba([["好"]])
    with pytest.raises(ValueError, match="一一对应"):
        SnowNLPBayes().fit([["好"]], [1, 0])
    with pytest.raises(ValueError, match="0（负面）或 1（正面）"):
        SnowNLPBayes().fit([["好"], ["差"]], [1, 2])
    with pytest.raises(ValueError, match="只有一种标签"):
        SnowNLPBayes().fit([["好"], ["差"]], [1, 1])
    with pytest.raises(TypeError, match="切好的词列表"):
        SnowNLPBayes().fit(["很好", "很差"], [1, 0])
