"""语言模型：在《人民日报》1998 年 1 月的文本上学"下一个字（或词元）是什么"，然后用它写文章。

数据：:func:`~aigc_lib.data.corpora.load_peoples_daily` 的每一句把词拼回原文，句与句之间用换行 ``\\n`` 隔开，
连成一长串字；字表只由训练集建（``min_freq`` 以下的字变成 ``<unk>``）。再把这串字切成首尾相接、
长 ``context_len`` 的片段：输入 x 是片段，目标 y 是同一片段右移一个字。

模型家族：``gpt``（:class:`~aigc_lib.models.GPTLanguageModel`）和 ``lstm``
（:class:`~aigc_lib.models.LSTMLanguageModel`），调用方式都是 ``model(x (B, T)) -> logits (B, T, V)``，
用默认的 flat_cross_entropy 训练。

词元（``--tokens``）：默认 ``char`` 按字；``bpe`` 在训练文本上训练手写的字节级 BPE
（:mod:`~aigc_lib.data.bpe`，词表 ``--bpe-vocab-size``），合并表存进检查点，评估和生成都用它。
两种词元的困惑度不能直接比（一个词元可以是半个字，也可以是几个字），所以评估还报告
``bits_per_char``：整份文本的总负对数似然（比特）/ 文本的字数。

    aigc train --task lm --model gpt --out runs/gpt
    aigc evaluate runs/gpt --split test --json        # {"perplexity": ..., "bits_per_char": ..., ...}
    aigc train --task lm --model gpt --tokens bpe --out runs/gpt-bpe
    aigc generate runs/gpt "今天" --max-new-tokens 60 --top-p 0.9 --seed 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from ...data.bpe import BPETokenizer, train_bpe
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


@lru_cache(maxsize=4)
def train_text_bpe(train_limit: int, vocab_size: int) -> BPETokenizer:
    """在训练文本（``split_text("train", train_limit)``）上训练的字节级 BPE；同一进程里只训练一次。"""
    return train_bpe(split_text("train", train_limit), vocab_size)


class CharTokenizer:
    """把字表包成与 :class:`~aigc_lib.data.bpe.BPETokenizer` 相同的接口：encode(文本) / decode(编号)。"""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(list(text))

    def decode(self, ids) -> str:
        return "".join(self.vocab.decode(list(ids)))


def tokenizer_of(artifacts: dict):
    """训练时存下的 artifacts -> 分词器：有 ``merges`` 的是 BPE，否则是字表（老的运行目录和模型库都是字表）。"""
    if artifacts.get("tokens", "char") == "bpe":
        return BPETokenizer([tuple(pair) for pair in artifacts["merges"]])
    return CharTokenizer(Vocab.from_itos(artifacts["vocab"]))


def vocab_size(artifacts: dict) -> int:
    """模型的词表大小：字表的长度，或 BPE 合并表重放出的词元数。"""
    if artifacts.get("tokens", "char") == "bpe":
        return len(tokenizer_of(artifacts))
    return len(artifacts["vocab"])


def characters_ended(tokenizer, ids: list[int]) -> torch.Tensor:
    """每个词元里结束了几个字：UTF-8 字符的最后一个字节落在哪个词元里，这个字就算那个词元的。

    按字的词元每个正好一个字（``<unk>`` 也代表原文的一个字）。BPE 的词元是字节串：一个汉字 3 个字节，
    可能被切在两个词元里，那它只算在含最后一个字节的那个词元上。所以任意一段连续词元的和，就是
    这段词元写完了多少个字，两种词元在同一段文本上数出的字数相同。

    >>> tok = BPETokenizer([(228, 189), (256, 142)])      # 合并出 "低" 的前两个字节，再合成整个 "低"
    >>> characters_ended(tok, tok.encode("低调")).tolist() # "低" 一个词元；"调" 的 3 个字节各一个词元
    [1, 0, 0, 1]
    """
    if isinstance(tokenizer, CharTokenizer):
        return torch.ones(len(ids), dtype=torch.long)
    pieces = [tokenizer.token_bytes(i) for i in ids]
    data = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    is_end = np.ones(len(data), dtype=np.int64)
    is_end[:-1] = (data[1:] & 0xC0) != 0x80  # 下一个字节不是 10xxxxxx 的续字节：这个字节结束了一个字
    ended = np.concatenate([[0], np.cumsum(is_end)])
    bounds = np.cumsum([0] + [len(piece) for piece in pieces])
    return torch.from_numpy(ended[bounds[1:]] - ended[bounds[:-1]])


def score_text(model, tokenizer, text: str, context_len: int, device, limit: int | None = None) -> dict:
    """把 ``text`` 编码后切成首尾相接的片段（:func:`make_blocks`），每个片段从头读起，返回
    ``{"nll": 总负对数似然（nat）, "tokens": 目标词元数, "characters": 这些目标词元写完的字数}``。
    ``limit``：只用前 limit 个片段。"""
    ids = tokenizer.encode(text)
    x, y = make_blocks(torch.tensor(ids, dtype=torch.long), context_len)
    x, y = x[:limit], y[:limit]
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(x), 128):
            logits = model(x[start : start + 128].to(device))  # (B, T, V)
            target = y[start : start + 128].to(device)
            total += F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="sum").item()
    # 目标是 ids[1 : n*T + 1]（第一个词元没有上文，不预测）
    characters = int(characters_ended(tokenizer, ids)[1 : y.numel() + 1].sum())
    return {"nll": total, "tokens": y.numel(), "characters": characters}


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
    tokens: Literal["char", "bpe"] = size("词元：char（按字）或 bpe（在训练文本上训练的字节级 BPE）", "char")
    bpe_vocab_size: int = size("BPE 的词表大小（--tokens bpe 时用；含 256 个单字节）", smoke=512, cpu=4000,
                               gpu=8000, at_least=257)


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
    return GPTLanguageModel(vocab_size(artifacts), d_model=sizes["d_model"], num_heads=sizes["num_heads"],
                            num_layers=sizes["num_layers"], dropout=sizes["dropout"], context_len=sizes["context_len"],
                            checkpoint_activations=sizes.get("checkpoint_activations", False))


def build_lstm(sizes: dict, artifacts: dict) -> LSTMLanguageModel:
    return LSTMLanguageModel(vocab_size(artifacts), embed_dim=sizes["embed_dim"], hidden_dim=sizes["hidden_dim"],
                             num_layers=sizes["num_layers"], dropout=sizes["dropout"])


class LanguageModelTask(Task):
    name = "lm"
    metric = "perplexity"
    description = "语言模型（《人民日报》文本，按字或 BPE 词元），训练后可以生成文本"
    models = {"gpt": ModelSpec(build_gpt, GPTLanguageModel, GPTSizes),
              "lstm": ModelSpec(build_lstm, LSTMLanguageModel, LSTMSizes)}
    monitor = "val_loss"

    # ---------------------------------------------------------------- 数据
    @staticmethod
    def _vocab(config: dict) -> Vocab:
        return Vocab.from_itos(config["artifacts"]["vocab"])

    def prepare(self, sizes: dict):
        train_text = split_text("train", sizes["train_limit"])
        if sizes["tokens"] == "bpe":
            bpe = train_text_bpe(sizes["train_limit"], sizes["bpe_vocab_size"])
            artifacts = {"tokens": "bpe", "merges": [list(pair) for pair in bpe.merges]}
        else:
            artifacts = {"vocab": list(char_vocab(train_text, min_freq=sizes["min_freq"]).itos)}
        artifacts.update(context_len=sizes["context_len"], separator=SEPARATOR)
        tokenizer = tokenizer_of(artifacts)

        def encode(text: str) -> torch.Tensor:
            return torch.tensor(tokenizer.encode(text), dtype=torch.long)

        train = TensorDataset(*make_blocks(encode(train_text), sizes["context_len"]))
        x_val, y_val = make_blocks(encode(split_text("val")), sizes["context_len"])
        if sizes["val_blocks"]:
            x_val, y_val = x_val[: sizes["val_blocks"]], y_val[: sizes["val_blocks"]]
        # 语料很长时，"一轮"只随机抽 samples_per_epoch 个片段：每轮都验证一次，曲线上有足够多的点
        n_samples = sizes["samples_per_epoch"] or None
        generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        sampler = RandomSampler(train, num_samples=n_samples, generator=generator)
        train_loader = DataLoader(train, batch_size=sizes["batch_size"], sampler=sampler)
        val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=128)
        return train_loader, val_loader, artifacts

    # ---------------------------------------------------------------- 评估
    def evaluate(self, model, config, split, device, limit=None) -> dict:
        """整份数据上每个词元的平均交叉熵（nat）和困惑度 exp(交叉熵)，以及每个字的比特数
        ``bits_per_char`` = 总负对数似然 / ln 2 / 字数（按字的模型就是 交叉熵 / ln 2）。
        每个片段从头读起，互不相连。``limit``：只用前 limit 个片段。"""
        artifacts = config["artifacts"]
        scores = score_text(model, tokenizer_of(artifacts), split_text(split), artifacts["context_len"], device,
                            limit)
        cross_entropy = scores["nll"] / scores["tokens"]
        return {"task": self.name, "model": config["model"], "split": split, "tokens": scores["tokens"],
                "characters": scores["characters"], "cross_entropy": cross_entropy,
                "bits_per_char": scores["nll"] / math.log(2) / scores["characters"],
                "perplexity": math.exp(cross_entropy)}

    # ---------------------------------------------------------------- 生成
    def generate(self, model, config, prompt: str, options: dict, device=None) -> str:
        """按 options（``aigc generate`` 的各个参数）续写 prompt，返回新生成的文本。

        options：max_new_tokens、strategy（sample / greedy）、temperature、top_k、top_p、
        repetition_penalty、beam（给了就用束搜索的束宽）、length_penalty、stop（字符串，其中每个字都是停止符）、
        seed、use_cache、watermark（一个 :class:`~aigc_lib.safety.watermark.Watermark`，加绿名单水印，第 16 章；
        只用于按字的模型、采样或贪心）。空提示从换行符开始，即写一句新的话。

        BPE 模型：提示先用 BPE 编码，生成的是词元（max_new_tokens 数的是词元），最后解码成文本；
        含停止符的词元都是停止词元，解码后在第一个停止符之后截断。结尾的词元可能只是半个汉字，显示成 ``�``。
        """
        artifacts = config["artifacts"]
        stop = options.get("stop") or ""
        common = dict(use_cache=options.get("use_cache", True))
        if options.get("watermark") is not None:
            if options.get("beam") is not None:
                raise TaskError("水印（--watermark）不能和束搜索（--beam）一起用：水印改的是每一步的概率，要用采样（默认）或贪心。")
            if artifacts.get("tokens", "char") == "bpe":
                raise TaskError("水印目前只用于按字的语言模型（检测时按字编码）；这个模型用的是 BPE 词元。")
            common["watermark"] = options["watermark"]
        if artifacts.get("tokens", "char") == "bpe":
            bpe = tokenizer_of(artifacts)
            stops = [i for i in range(len(bpe)) if any(ch in bpe.token_bytes(i).decode("utf-8", "ignore") for ch in stop)]
            common.update(stop_tokens=stops, bos_id=bpe.encode(artifacts["separator"])[0])
            text = bpe.decode(self._search(model, bpe.encode(prompt), options, common))
            cut = min((text.index(ch) + 1 for ch in stop if ch in text), default=len(text))
            return text[:cut]
        vocab = self._vocab(config)
        common.update(vocab=vocab, stop_tokens=[stop] if stop else (), bos_id=vocab[artifacts["separator"]])
        return self._search(model, prompt, options, common)

    @staticmethod
    def _search(model, prompt, options: dict, common: dict):
        """按 options 选束搜索或采样/贪心；提示是文本（按字）或编号列表（BPE）。"""
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
