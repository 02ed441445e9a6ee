"""字符级语言模型：在《人民日报》1998 年 1 月的文本上学"下一个字是什么"，然后用它写文章。

数据：:func:`~aigc_lib.data.corpora.load_peoples_daily` 的每一句把词拼回原文，句与句之间用换行 ``\\n`` 隔开，
连成一长串字；字表只由训练集建（``min_freq`` 以下的字变成 ``<unk>``）。再把这串字切成首尾相接、
长 ``context_len`` 的片段：输入 x 是片段，目标 y 是同一片段右移一个字。

模型家族：``gpt``（:class:`~aigc_lib.models.GPTLanguageModel`）和 ``lstm``
（:class:`~aigc_lib.models.LSTMLanguageModel`），调用方式都是 ``model(x (B, T)) -> logits (B, T, V)``，
用默认的 flat_cross_entropy 训练。

    aigc train --task lm --model gpt --out runs/gpt
    aigc evaluate runs/gpt --split test --json        # {"perplexity": ..., ...}
    aigc generate runs/gpt "今天" --max-new-tokens 60 --top-p 0.9 --seed 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from ...data.corpora import load_peoples_daily
from ...generation import beam_search, generate
from ...models import GPTLanguageModel, LSTMLanguageModel
from ...data.text import Vocab
from ..base import ModelSpec, Task, TaskError
from ..sizes import Sizes, size

SEPARATOR = "\n"  # 句与句之间的分隔符；空提示时从它开始写，也就是"从一句话的开头写起"


@lru_cache(maxsize=8)
def split_text(split: str, limit: int = 0) -> str:
    """一份数据的全文：每句一行（词拼回原文），``limit`` > 0 时只取前 limit 句。"""
    sentences = load_peoples_daily(split)
    if limit:
        sentences = sentences[:limit]
    return "".join("".join(word for word, _ in sentence) + SEPARATOR for sentence in sentences)


def char_vocab(text: str, min_freq: int = 1, max_size: int | None = None) -> Vocab:
    """按字建词表；换行符一定在表里（它是句子的边界，也是空提示时的开头）。"""
    vocab = Vocab([list(text)], min_freq=min_freq, max_size=max_size)
    if SEPARATOR not in vocab:
        raise TaskError("训练文本里没有换行符，无法建立句子边界。")
    return vocab


def make_blocks(ids: torch.Tensor, context_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """一维编号序列 -> 首尾相接的片段 ``(x, y)``，各 (N, context_len)，y 是 x 右移一位。

    >>> x, y = make_blocks(torch.arange(10), 4)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2, 3], [4, 5, 6, 7]], [[1, 2, 3, 4], [5, 6, 7, 8]])
    """
    n = (len(ids) - 1) // context_len
    if n < 1:
        raise TaskError(f"文本只有 {len(ids)} 个字，不够切出一个长 {context_len} 的片段；请减小 --context-len。")
    x = ids[: n * context_len].view(n, context_len)
    y = ids[1 : n * context_len + 1].view(n, context_len)
    return x, y


@dataclass
class LMSizes(Sizes):
    """两个模型共用的尺寸。"""

    context_len: int = size("每个训练片段的字数（GPT 的上下文长度）", smoke=32, cpu=128, gpu=256, at_least=2)
    train_limit: int = size("只用前 N 句训练（0 表示全部）", smoke=2000, cpu=0, gpu=0, at_least=0)
    samples_per_epoch: int = size("每轮随机抽多少个训练片段（0 表示全部）", smoke=256, cpu=4096, gpu=0, at_least=0)
    val_blocks: int = size("每轮验证用前多少个片段（0 表示全部）", smoke=64, cpu=256, gpu=0, at_least=0)
    min_freq: int = size("进入词表的最低词频（更少见的字变成 <unk>）", smoke=5, cpu=5, gpu=2, at_least=1)
    epochs: int = size("训练轮数", smoke=1, cpu=8, gpu=10, at_least=1)
    batch_size: int = size("每批样本数", smoke=16, cpu=32, gpu=128, at_least=1)
    lr: float = size("峰值学习率（AdamW，先预热再余弦衰减）", smoke=3e-3, cpu=2e-3, gpu=1e-3, above=0)
    weight_decay: float = size("AdamW 的权重衰减", smoke=0.01, cpu=0.01, gpu=0.1, at_least=0)
    dropout: float = size("dropout 比例", smoke=0.0, cpu=0.0, gpu=0.1, at_least=0, below=1)


@dataclass
class GPTSizes(LMSizes):
    d_model: int = size("模型宽度（Transformer）", smoke=32, cpu=128, gpu=384, at_least=1)
    num_heads: int = size("注意力头数（Transformer）", smoke=2, cpu=4, gpu=6, at_least=1)
    num_layers: int = size("层数", smoke=1, cpu=4, gpu=6, at_least=1)
    checkpoint_activations: bool = size("激活检查点：每层只存输入，反向时重算层内激活（省内存，各层的计算多约 1/3）", False)


@dataclass
class LSTMSizes(LMSizes):
    embed_dim: int = size("字向量维数", smoke=32, cpu=128, gpu=384, at_least=1)
    hidden_dim: int = size("LSTM 隐藏层宽度", smoke=32, cpu=384, gpu=1024, at_least=1)
    num_layers: int = size("层数", smoke=1, cpu=1, gpu=2, at_least=1)


def build_gpt(sizes: dict, artifacts: dict) -> GPTLanguageModel:
    return GPTLanguageModel(len(artifacts["vocab"]), d_model=sizes["d_model"], num_heads=sizes["num_heads"],
                            num_layers=sizes["num_layers"], dropout=sizes["dropout"], context_len=sizes["context_len"],
                            checkpoint_activations=sizes.get("checkpoint_activations", False))


def build_lstm(sizes: dict, artifacts: dict) -> LSTMLanguageModel:
    return LSTMLanguageModel(len(artifacts["vocab"]), embed_dim=sizes["embed_dim"], hidden_dim=sizes["hidden_dim"],
                             num_layers=sizes["num_layers"], dropout=sizes["dropout"])


class LanguageModelTask(Task):
    name = "lm"
    metric = "perplexity"
    description = "字符级语言模型（《人民日报》文本），训练后可以生成文本"
    models = {"gpt": ModelSpec(build_gpt, GPTLanguageModel, GPTSizes),
              "lstm": ModelSpec(build_lstm, LSTMLanguageModel, LSTMSizes)}
    monitor = "val_loss"

    # ---------------------------------------------------------------- 数据
    @staticmethod
    def _vocab(config: dict) -> Vocab:
        return Vocab.from_itos(config["artifacts"]["vocab"])

    @staticmethod
    def _encode(text: str, vocab: Vocab) -> torch.Tensor:
        return torch.tensor(vocab.encode(list(text)), dtype=torch.long)

    def prepare(self, sizes: dict):
        train_text = split_text("train", sizes["train_limit"])
        vocab = char_vocab(train_text, min_freq=sizes["min_freq"])
        train = TensorDataset(*make_blocks(self._encode(train_text, vocab), sizes["context_len"]))
        x_val, y_val = make_blocks(self._encode(split_text("val"), vocab), sizes["context_len"])
        if sizes["val_blocks"]:
            x_val, y_val = x_val[: sizes["val_blocks"]], y_val[: sizes["val_blocks"]]
        # 语料很长时，"一轮"只随机抽 samples_per_epoch 个片段：每轮都验证一次，曲线上有足够多的点
        n_samples = sizes["samples_per_epoch"] or None
        generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        sampler = RandomSampler(train, num_samples=n_samples, generator=generator)
        train_loader = DataLoader(train, batch_size=sizes["batch_size"], sampler=sampler)
        val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=128)
        return train_loader, val_loader, {"vocab": list(vocab.itos), "context_len": sizes["context_len"],
                                          "separator": SEPARATOR}

    # ---------------------------------------------------------------- 评估
    def evaluate(self, model, config, split, device, limit=None) -> dict:
        """整份数据上的平均交叉熵（nat/字）和困惑度 exp(交叉熵)。每个片段从头读起，互不相连。
        ``limit``：只用前 limit 个片段。"""
        vocab = self._vocab(config)
        x, y = make_blocks(self._encode(split_text(split), vocab), config["artifacts"]["context_len"])
        x, y = x[:limit], y[:limit]
        total, count = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(x), 128):
                logits = model(x[start : start + 128].to(device))  # (B, T, V)
                target = y[start : start + 128].to(device)
                total += F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="sum").item()
                count += target.numel()
        cross_entropy = total / count
        return {"task": self.name, "model": config["model"], "split": split, "tokens": count,
                "cross_entropy": cross_entropy, "bits_per_char": cross_entropy / math.log(2),
                "perplexity": math.exp(cross_entropy)}

    # ---------------------------------------------------------------- 生成
    def generate(self, model, config, prompt: str, options: dict, device=None) -> str:
        """按 options（``aigc generate`` 的各个参数）续写 prompt，返回新生成的文本。

        options：max_new_tokens、strategy（sample / greedy）、temperature、top_k、top_p、
        repetition_penalty、beam（给了就用束搜索的束宽）、length_penalty、stop（字符串，其中每个字都是停止符）、
        seed、use_cache。空提示从换行符开始，即写一句新的话。
        """
        vocab = self._vocab(config)
        common = dict(vocab=vocab, stop_tokens=[options["stop"]] if options.get("stop") else (),
                      use_cache=options.get("use_cache", True), bos_id=vocab[config["artifacts"]["separator"]])
        max_new = options.get("max_new_tokens", 100)
        try:
            if options.get("beam") is not None:
                return beam_search(model, prompt, options["beam"], max_new,
                                   length_penalty=options.get("length_penalty", 1.0), **common)
            return generate(model, prompt, max_new, strategy=options.get("strategy", "sample"),
                            temperature=options.get("temperature", 1.0), top_k=options.get("top_k"),
                            top_p=options.get("top_p"), repetition_penalty=options.get("repetition_penalty", 1.0),
                            seed=options.get("seed"), **common)
        except ValueError as error:
            raise TaskError(str(error)) from None

    def predict(self, model, config, inputs, device) -> list[dict]:
        """``aigc predict``：对每个提示按默认设置（top-p 0.9，种子 0）续写 100 个字。"""
        options = {"top_p": 0.9, "seed": 0, "max_new_tokens": 100}
        return [{"prompt": text, "text": self.generate(model, config, text, options)} for text in inputs]

    def format_prediction(self, row: dict) -> str:
        return row["prompt"] + row["text"]
