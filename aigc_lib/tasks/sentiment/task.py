"""情感分类：评论 -> 正面 / 负面。数据是 :func:`~aigc_lib.data.corpora.load_reviews` 去重后的划分。

模型家族：``rnn``、``lstm``、``gru``（:class:`~aigc_lib.models.RNNClassifier`）和 ``transformer``
（:class:`~aigc_lib.models.TransformerClassifier`），调用方式都是 ``model(tokens, lengths) -> logits``。
RNN 家族默认先用训练文本上的 skip-gram 词向量初始化嵌入层（``pretrain_epochs``，见
:func:`pretrained_vectors`；第 05 章第 9 节比较了这样做的效果）。尺寸见 :class:`RNNSizes`、
:class:`TransformerSizes`；读者可以信任的基线（snownlp 的朴素贝叶斯）在同一文件夹的 ``baselines.py``。
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch

from ...data.batching import make_loader
from ...data.corpora import load_reviews
from ...metrics import accuracy, precision_recall_f1
from ...models import RNNClassifier, TransformerClassifier
from ...data.wordvectors import train_skipgram_fast
from ...data.text import Vocab, clean_text, tokenize
from ..base import ModelSpec, Task, TaskError, _is_main_process
from ..sizes import Sizes, size

LABELS = ("负面", "正面")  # 标签 0、1 的中文名


@lru_cache(maxsize=8)
def _tokenized_split(split: str, mode: str) -> tuple[tuple[tuple[str, ...], int], ...]:
    """切好词的一份数据（缓存：同一进程里训练几个模型只切一次词）。"""
    return tuple((tuple(tokenize(text, mode)), label) for text, label in load_reviews(split))


@dataclass
class SentimentSizes(Sizes):
    """两个模型家族共用的尺寸。"""

    tokens: Literal["word", "char"] = size("切分方式：word（jieba 分词）或 char（按字）", "word")
    vocab_size: int = size("词表大小上限（含 <pad>、<unk>）", smoke=3000, cpu=20000, gpu=30000, at_least=3)
    min_freq: int = size("进入词表的最低词频", 2, at_least=1)
    max_tokens: int = size("每条评论最多保留的 token 数（更长的只保留开头）", smoke=64, cpu=160, gpu=256, at_least=1)
    train_limit: int = size("只用前 N 条训练数据（0 表示全部）", smoke=800, cpu=0, gpu=0, at_least=0)
    epochs: int = size("训练轮数", smoke=1, cpu=6, gpu=8, at_least=1)
    batch_size: int = size("每批样本数", smoke=32, cpu=64, gpu=128, at_least=1)
    lr: float = size("峰值学习率（AdamW，先预热再余弦衰减）", 2e-3, above=0)
    dropout: float = size("dropout 比例", smoke=0.0, cpu=0.3, gpu=0.3, at_least=0, below=1)


@dataclass
class RNNSizes(SentimentSizes):
    """``rnn`` / ``lstm`` / ``gru``。"""

    embed_dim: int = size("词向量维数", smoke=32, cpu=128, gpu=256, at_least=1)
    hidden_dim: int = size("隐藏层宽度（每个方向）", smoke=32, cpu=128, gpu=256, at_least=1)
    num_layers: int = size("层数", smoke=1, cpu=1, gpu=2, at_least=1)
    bidirectional: bool = size("双向 RNN（--no-bidirectional 关闭）", True)
    pooling: Literal["last", "mean", "max"] = size("把每个位置的输出汇总成一个向量：last、mean 或 max", "max")
    # 先在训练集的文本上训练几轮 skip-gram（第 04 章），用它初始化嵌入层；0 表示随机初始化
    pretrain_epochs: int = size("先在训练文本上训练几轮 skip-gram 词向量来初始化嵌入层（0 表示随机初始化）",
                                smoke=1, cpu=5, gpu=5, at_least=0)


@dataclass
class TransformerSizes(SentimentSizes):
    """``transformer``：学习率比 RNN 小（注意力层对大学习率更敏感）。"""

    lr: float = size("峰值学习率（AdamW，先预热再余弦衰减）", smoke=1e-3, cpu=5e-4, gpu=3e-4, above=0)
    d_model: int = size("模型宽度（Transformer）", smoke=32, cpu=128, gpu=256, at_least=1)
    num_heads: int = size("注意力头数（Transformer）", smoke=2, cpu=4, gpu=8, at_least=1)
    num_layers: int = size("层数", smoke=1, cpu=2, gpu=4, at_least=1)


def build_rnn(kind: str):
    """``rnn`` / ``lstm`` / ``gru`` 的搭建函数（三者只差 ``kind``）。"""
    def build(sizes: dict, artifacts: dict) -> RNNClassifier:
        return RNNClassifier(len(artifacts["vocab"]), num_classes=2, kind=kind, embed_dim=sizes["embed_dim"],
                             hidden_dim=sizes["hidden_dim"], num_layers=sizes["num_layers"],
                             bidirectional=sizes["bidirectional"], dropout=sizes["dropout"],
                             pooling=sizes["pooling"], pretrained_embeddings=pretrained_vectors(sizes, artifacts))
    return build


def build_transformer(sizes: dict, artifacts: dict) -> TransformerClassifier:
    return TransformerClassifier(len(artifacts["vocab"]), num_classes=2, d_model=sizes["d_model"],
                                 num_heads=sizes["num_heads"], num_layers=sizes["num_layers"],
                                 dim_feedforward=2 * sizes["d_model"], dropout=sizes["dropout"],
                                 context_len=sizes["max_tokens"] + 1)


def _train_tokens(sizes: dict) -> list[tuple[str, ...]]:
    pairs = _tokenized_split("train", sizes["tokens"])
    if sizes["train_limit"]:
        pairs = pairs[: sizes["train_limit"]]
    return [tokens for tokens, _ in pairs]


def pretrained_vectors(sizes: dict, artifacts: dict) -> torch.Tensor | None:
    """``pretrain_epochs`` 大于 0 时：在训练集的文本上（不用标签）训练 skip-gram 词向量，
    按词表顺序拼成嵌入层的初始值（:meth:`~aigc_lib.data.wordvectors.WordVectors.embedding_matrix`）。

    只用训练集，验证集和测试集的文本一个字也不看。单线程训练，同一个种子（``aigc train --seed``）
    得到同样的向量；torchrun 的每个进程因此也得到同样的初始值。
    """
    epochs = sizes.get("pretrain_epochs", 0)
    if not epochs:
        return None
    seed = torch.initial_seed()  # Task.train 已经用 --seed 设好
    start = time.perf_counter()
    vectors, losses = train_skipgram_fast(_train_tokens(sizes), dim=sizes["embed_dim"], window=5,
                                          min_freq=sizes["min_freq"], epochs=epochs, workers=1, seed=seed,
                                          device="cpu")
    itos = artifacts["vocab"]
    if _is_main_process():
        covered = sum(word in vectors for word in itos)
        print(f"预训练词向量：skip-gram {epochs} 轮，{time.perf_counter() - start:.1f} 秒，"
              f"损失 {losses[0]:.3f} -> {losses[-1]:.3f}；词表 {len(itos)} 个词中 {covered} 个有向量", flush=True)
    return vectors.embedding_matrix(itos, seed=seed)


class SentimentTask(Task):
    name = "sentiment"
    metric = "accuracy"
    description = "评论情感分类（正面 / 负面）"
    models = {kind: ModelSpec(build_rnn(kind), RNNClassifier, RNNSizes) for kind in ("rnn", "lstm", "gru")}
    models["transformer"] = ModelSpec(build_transformer, TransformerClassifier, TransformerSizes)
    monitor = "val_accuracy"

    # ---------------------------------------------------------------- 数据
    def _encode(self, split: str, vocab: Vocab, sizes: dict, limit: int = 0):
        pairs = _tokenized_split(split, sizes["tokens"])
        if limit:
            pairs = pairs[:limit]
        return [(vocab.encode(tokens[: sizes["max_tokens"]]), label) for tokens, label in pairs]

    def prepare(self, sizes: dict):
        vocab = Vocab(_train_tokens(sizes), min_freq=sizes["min_freq"], max_size=sizes["vocab_size"])
        train = self._encode("train", vocab, sizes, sizes["train_limit"])
        val = self._encode("val", vocab, sizes)
        train_loader = make_loader(train, batch_size=sizes["batch_size"], shuffle=True)
        val_loader = make_loader(val, batch_size=256)
        return train_loader, val_loader, {"vocab": list(vocab.itos), "tokens": sizes["tokens"],
                                          "max_tokens": sizes["max_tokens"], "labels": list(LABELS)}

    def fit_options(self, sizes: dict) -> dict:
        return {"metrics": {"accuracy": accuracy}}

    # ---------------------------------------------------------------- 评估与预测
    @staticmethod
    def _vocab(config: dict) -> Vocab:
        return Vocab.from_itos(config["artifacts"]["vocab"])

    @torch.inference_mode()
    def _probabilities(self, model, batches, device) -> torch.Tensor:
        probs = []
        for tokens, lengths, *_ in batches:
            logits = model(tokens.to(device), lengths.to(device))
            probs.append(logits.float().softmax(-1)[:, 1].cpu())
        return torch.cat(probs) if probs else torch.empty(0)

    def evaluate(self, model, config, split, device, limit=None) -> dict:
        sizes = config["sizes"]
        vocab = self._vocab(config)
        pairs = self._encode(split, vocab, sizes)[:limit]
        loader = make_loader(pairs, batch_size=256)  # 不打乱、不分桶：顺序与 pairs 一致
        positive = self._probabilities(model, loader, device)
        y_true = [label for _, label in pairs]
        y_pred = (positive >= 0.5).long().tolist()
        precision, recall, f1 = precision_recall_f1(y_true, y_pred, average="binary")
        macro_f1 = precision_recall_f1(y_true, y_pred, average="macro")[2]
        return {"task": self.name, "model": config["model"], "split": split, "n": len(y_true),
                "accuracy": accuracy(y_true, y_pred), "precision": precision, "recall": recall, "f1": f1,
                "macro_f1": macro_f1}

    def format_prediction(self, row: dict) -> str:
        return f"{row['label']}\t{row['probability']:.3f}\t{row['text']}"

    def predict(self, model, config, inputs, device) -> list[dict]:
        vocab = self._vocab(config)
        artifacts = config["artifacts"]
        tokens = [tokenize(clean_text(text), artifacts["tokens"])[: artifacts["max_tokens"]] for text in inputs]
        empty = [i for i, t in enumerate(tokens) if not t]
        if empty:  # 只有表情、网址、空白的评论：清洗之后什么也没剩下，模型给出的只会是一个没有根据的猜测
            shown = "、".join(f"第 {i + 1} 句 {inputs[i]!r}" for i in empty[:5]) + ("……" if len(empty) > 5 else "")
            raise TaskError(f"{shown} 清洗后什么也没剩下（表情、网址、空白都会被去掉），情感模型无从判断："
                            "请去掉这些句子，或写几个字。")
        ids = [vocab.encode(t) for t in tokens]
        loader = make_loader([(seq, 0) for seq in ids], batch_size=256)
        positive = self._probabilities(model, loader, device).tolist()
        return [{"text": text, "label": LABELS[int(p >= 0.5)], "probability": p if p >= 0.5 else 1 - p,
                 "positive_probability": p} for text, p in zip(inputs, positive)]
