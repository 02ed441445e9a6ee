"""情感分类：评论 -> 正面 / 负面。数据是 :func:`~aigc_lib.corpora.load_reviews` 去重后的划分。

模型家族：``rnn``、``lstm``、``gru``（:class:`~aigc_lib.models.RNNClassifier`）和 ``transformer``
（:class:`~aigc_lib.models.TransformerClassifier`），调用方式都是 ``model(tokens, lengths) -> logits``。
RNN 家族默认先用训练文本上的 skip-gram 词向量初始化嵌入层（``pretrain_epochs``，见
:meth:`SentimentTask.pretrained_vectors`；第 05 章第 9 节比较了这样做的效果）。
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch

from ..batching import make_loader
from ..corpora import load_reviews
from ..metrics import accuracy, precision_recall_f1
from ..models import RNNClassifier, TransformerClassifier
from ..wordvectors import train_skipgram_fast
from ..runtime import pick
from ..text import Vocab, clean_text, tokenize
from .base import Task, TaskError, _is_main_process

LABELS = ("负面", "正面")  # 标签 0、1 的中文名


@lru_cache(maxsize=8)
def _tokenized_split(split: str, mode: str) -> tuple[tuple[tuple[str, ...], int], ...]:
    """切好词的一份数据（缓存：同一进程里训练几个模型只切一次词）。"""
    return tuple((tuple(tokenize(text, mode)), label) for text, label in load_reviews(split))


class SentimentTask(Task):
    name = "sentiment"
    description = "评论情感分类（正面 / 负面）"
    models = ("rnn", "lstm", "gru", "transformer")
    monitor = "val_accuracy"

    def defaults(self, model: str) -> dict:
        sizes = {
            "tokens": "word",                       # word：jieba 分词；char：按字
            "vocab_size": pick(smoke=3000, cpu=20000, gpu=30000),
            "min_freq": 2,
            "max_len": pick(smoke=64, cpu=160, gpu=256),  # 更长的评论只保留开头
            "train_limit": pick(smoke=800, cpu=0, gpu=0),  # 0 表示用全部训练数据
            "epochs": pick(smoke=1, cpu=6, gpu=8),
            "batch_size": pick(smoke=32, cpu=64, gpu=128),
            "lr": 2e-3,
            "embed_dim": pick(smoke=32, cpu=128, gpu=256),
            "dropout": pick(smoke=0.0, cpu=0.3, gpu=0.3),
        }
        if model == "transformer":
            sizes.update(d_model=sizes.pop("embed_dim"), heads=pick(smoke=2, cpu=4, gpu=8),
                         layers=pick(smoke=1, cpu=2, gpu=4), lr=pick(smoke=1e-3, cpu=5e-4, gpu=3e-4))
        else:
            sizes.update(hidden_dim=pick(smoke=32, cpu=128, gpu=256), layers=pick(smoke=1, cpu=1, gpu=2),
                         bidirectional=True, pooling="max",
                         # 先在训练集的文本上训练几轮 skip-gram（第 04 章），用它初始化嵌入层；0 表示随机初始化
                         pretrain_epochs=pick(smoke=1, cpu=5, gpu=5))
        return sizes

    # ---------------------------------------------------------------- 数据
    def _encode(self, split: str, vocab: Vocab, sizes: dict, limit: int = 0):
        pairs = _tokenized_split(split, sizes["tokens"])
        if limit:
            pairs = pairs[:limit]
        return [(vocab.encode(tokens[: sizes["max_len"]]), label) for tokens, label in pairs]

    @staticmethod
    def _train_tokens(sizes: dict) -> list[tuple[str, ...]]:
        pairs = _tokenized_split("train", sizes["tokens"])
        if sizes["train_limit"]:
            pairs = pairs[: sizes["train_limit"]]
        return [tokens for tokens, _ in pairs]

    def prepare(self, sizes: dict):
        if sizes["tokens"] not in ("word", "char"):
            raise TaskError(f"--tokens 只能是 word 或 char，收到 {sizes['tokens']!r}。")
        vocab = Vocab(self._train_tokens(sizes), min_freq=sizes["min_freq"], max_size=sizes["vocab_size"])
        train = self._encode("train", vocab, sizes, sizes["train_limit"])
        val = self._encode("val", vocab, sizes)
        train_loader = make_loader(train, batch_size=sizes["batch_size"], shuffle=True)
        val_loader = make_loader(val, batch_size=256)
        return train_loader, val_loader, {"vocab": list(vocab.itos), "tokens": sizes["tokens"],
                                          "max_len": sizes["max_len"], "labels": list(LABELS)}

    # ---------------------------------------------------------------- 模型
    def model_class(self, model: str):
        return TransformerClassifier if model == "transformer" else RNNClassifier

    def build_model(self, model: str, sizes: dict, artifacts: dict):
        vocab_size = len(artifacts["vocab"])
        if model == "transformer":
            return TransformerClassifier(vocab_size, num_classes=2, d_model=sizes["d_model"],
                                         num_heads=sizes["heads"], num_layers=sizes["layers"],
                                         dim_feedforward=2 * sizes["d_model"], dropout=sizes["dropout"],
                                         context_len=sizes["max_len"] + 1)
        return RNNClassifier(vocab_size, num_classes=2, kind=model, embed_dim=sizes["embed_dim"],
                             hidden_dim=sizes["hidden_dim"], num_layers=sizes["layers"],
                             bidirectional=sizes["bidirectional"], dropout=sizes["dropout"],
                             pooling=sizes["pooling"], pretrained_embeddings=self.pretrained_vectors(sizes, artifacts))

    def pretrained_vectors(self, sizes: dict, artifacts: dict) -> torch.Tensor | None:
        """``pretrain_epochs`` 大于 0 时：在训练集的文本上（不用标签）训练 skip-gram 词向量，
        按词表顺序拼成嵌入层的初始值（:meth:`~aigc_lib.wordvectors.WordVectors.embedding_matrix`）。

        只用训练集，验证集和测试集的文本一个字也不看。单线程训练，同一个种子（``aigc train --seed``）
        得到同样的向量；torchrun 的每个进程因此也得到同样的初始值。
        """
        epochs = sizes.get("pretrain_epochs", 0)
        if not epochs:
            return None
        if epochs < 0:
            raise TaskError(f"--pretrain-epochs 不能是负数，收到 {epochs}；0 表示不预训练。")
        seed = torch.initial_seed()  # Task.train 已经用 --seed 设好
        start = time.perf_counter()
        vectors, losses = train_skipgram_fast(self._train_tokens(sizes), dim=sizes["embed_dim"], window=5,
                                              min_freq=sizes["min_freq"], epochs=epochs, workers=1, seed=seed,
                                              device="cpu")
        itos = artifacts["vocab"]
        if _is_main_process():
            covered = sum(word in vectors for word in itos)
            print(f"预训练词向量：skip-gram {epochs} 轮，{time.perf_counter() - start:.1f} 秒，"
                  f"损失 {losses[0]:.3f} -> {losses[-1]:.3f}；词表 {len(itos)} 个词中 {covered} 个有向量", flush=True)
        return vectors.embedding_matrix(itos, seed=seed)

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

    def evaluate(self, model, config, split, device) -> dict:
        sizes = config["sizes"]
        vocab = self._vocab(config)
        pairs = self._encode(split, vocab, sizes)
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
        ids = [vocab.encode(tokenize(clean_text(text), artifacts["tokens"])[: artifacts["max_len"]]) or [1]
               for text in inputs]
        loader = make_loader([(seq, 0) for seq in ids], batch_size=256)
        positive = self._probabilities(model, loader, device).tolist()
        return [{"text": text, "label": LABELS[int(p >= 0.5)], "probability": p if p >= 0.5 else 1 - p,
                 "positive_probability": p} for text, p in zip(inputs, positive)]
