"""指令微调（SFT）：从参考语言模型 lm-gpt 出发，学会按指令回答、在对话里轮流说话。

    aigc train --task sft --model gpt --out runs/sft                  # 全量微调
    aigc train --task sft --model gpt --lora-rank 8 --out runs/lora   # 只训练 LoRA 支路
    aigc evaluate runs/sft --split test --json                        # 每种指令的分数、基线、零样本 lm-gpt
    aigc chat runs/sft                                                # 在终端里对话

模型：lm-gpt 的结构和权重，词表追加特殊标记、字母和拼音音节等新 token（:func:`~.data.chat_vocab`）。
新 token 的词向量取**已有词向量的平均**再加一点噪声（N(0, 0.02²)，让它们彼此不同）：平均向量的输出
logit 与"一个普通的字"相当，刚开始训练时不会因为某个新 token 的概率奇大而产生很大的梯度。拼音音节
例外：取读这个音的字的词向量的平均（:func:`init_syllable_rows`）。输出层与词向量
共用权重，所以输出层也一起扩大了。``--lora-rank R`` > 0 时冻结全部原有参数（包括原有的词向量），只训练注意力和前馈层上的 LoRA 支路
（:mod:`aigc_lib.models.lora`）和新 token 的词向量（``trainable_rows_from``：否则 ``<|end|>`` 等新 token
停在几乎相同的初值，模型学不会什么时候停）。

损失：只在助手回答的 token 上算（:func:`~.data.encode_conversation`：其余位置的目标是 -100）。
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.data import DataLoader

from ...core.runtime import pick
from ...generation import generate
from ...models import LoRAGPT
from ...data.text import Vocab
from ..base import ModelSpec, Task, TaskError, load_pretrained
from ..sizes import Sizes, size
from .data import (END, KINDS, chat_tokens, chat_vocab, conversations, encode_conversation, instruction_examples,
                   reading_groups, render_chat, syllables, to_model_text)
from .scoring import METRICS, Baseline, score

BASE_MODEL = "lm-gpt"  # 出发点：模型库里的参考字符 GPT
ANSWER_RESERVE = 48  # 对话时给回答留的位置：历史加新问题最多占 context_len - ANSWER_RESERVE 个 token


@dataclass
class SFTSizes(Sizes):
    train_per_type: int = size("每种指令最多用多少条训练样本（0 表示全部）", smoke=24, cpu=2000, gpu=0, at_least=0)
    val_per_type: int = size("每种指令用多少条验证样本算验证损失", smoke=8, cpu=100, gpu=300, at_least=1)
    multi_turn: float = size("拼成多轮对话的比例（其余是一问一答）", 0.3, at_least=0, below=1)
    epochs: int = size("训练轮数", smoke=1, cpu=3, gpu=5, at_least=1)
    batch_size: int = size("每批样本数", smoke=8, cpu=32, gpu=64, at_least=1)
    # 默认值是给全量微调的；LoRA 只训练很少的参数，B 又从 0 出发，要大几倍才学得动（第 15 章用 5e-3）
    lr: float = size("峰值学习率（AdamW，先预热再余弦衰减）；用 --lora-rank 时通常要大几倍，例如 5e-3（第 15 章）",
                     smoke=1e-3, cpu=1e-3, gpu=5e-4, above=0)
    dropout: float = size("dropout 比例", 0.1, at_least=0, below=1)
    lora_rank: int = size("LoRA 的秩（0 = 全量微调，所有参数都训练）", 0, at_least=0)
    lora_alpha: float = size("LoRA 的缩放分子 alpha（支路乘以 alpha / rank）", 16.0, above=0)
    lora_dropout: float = size("LoRA 支路输入上的 dropout", 0.0, at_least=0, below=1)


@lru_cache(maxsize=1)
def _base():
    return load_pretrained(BASE_MODEL, device="cpu")  # 模型库在导入时登记的读取函数（tasks 不导入 zoo）


def extend_rows(weight: torch.Tensor, n_new: int, seed: int = 0) -> torch.Tensor:
    """词向量矩阵 (V, C) -> (V + n_new, C)：原有的行不变，新行 = 所有行的平均 + N(0, 0.02²) 噪声。"""
    gen = torch.Generator().manual_seed(seed)
    mean = weight.mean(0, keepdim=True)  # (1, C)
    new = mean + 0.02 * torch.randn(n_new, weight.size(1), generator=gen, dtype=weight.dtype)
    return torch.cat([weight, new])  # (V + n_new, C)


def init_syllable_rows(rows: torch.Tensor, base_itos, itos) -> int:
    """把 ``rows``（扩大后的词向量矩阵，(len(itos), C)）里新加的拼音音节 token 的那一行，就地改成
    读这个音的原有汉字的词向量的平均（:func:`~.data.reading_groups`）；返回改了几行。
    字表里没有字读这个音的音节保持 :func:`extend_rows` 给的初值。"""
    groups = reading_groups(base_itos)
    changed = 0
    for index in range(len(base_itos), len(itos)):
        members = groups.get(itos[index])
        if members and itos[index] in syllables() and len(itos[index]) > 1:
            rows[index] = rows[members].mean(0)
            changed += 1
    return changed


def build_chat_gpt(sizes: dict, artifacts: dict) -> LoRAGPT:
    """lm-gpt 的结构 + 扩大的词表 + （可选的）LoRA，装上 lm-gpt 的权重。"""
    base = _base().model
    config = {**base.config, "vocab_size": len(artifacts["vocab"]), "dropout": sizes["dropout"]}
    model = LoRAGPT(**config, lora_rank=sizes["lora_rank"], lora_alpha=sizes["lora_alpha"],
                    lora_dropout=sizes["lora_dropout"],
                    trainable_rows_from=base.config["vocab_size"] if sizes["lora_rank"] else 0)
    state = dict(base.state_dict())
    rows = extend_rows(state["embedding.weight"].float(), len(artifacts["vocab"]) - base.config["vocab_size"])
    init_syllable_rows(rows, artifacts["vocab"][: base.config["vocab_size"]], artifacts["vocab"])
    state["embedding.weight"] = rows
    if "head.weight" in state:
        state["head.weight"] = rows  # 输出层与词向量共用同一个矩阵
    model.load_base_weights(state)
    return model


def pad_conversations(batch: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(ids, labels), ...]`` -> ``(x, y)``，各 (B, T)，T 是这批最长的长度减 1：x = ids[:-1] 右侧补 0（<pad>），
    y = labels[1:] 右侧补 -100（补的位置不算损失）。"""
    T = max(len(ids) for ids, _ in batch) - 1
    x = torch.zeros(len(batch), T, dtype=torch.long)
    y = torch.full((len(batch), T), -100, dtype=torch.long)
    for i, (ids, labels) in enumerate(batch):
        x[i, : len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, : len(labels) - 1] = torch.tensor(labels[1:])
    return x, y


class SFTTask(Task):
    name = "sft"
    metric = "mean_score"
    description = "指令微调：从参考 GPT（lm-gpt）出发，学会回答五种指令、多轮对话（aigc chat）"
    models = {"gpt": ModelSpec(build_chat_gpt, LoRAGPT, SFTSizes)}
    monitor = "val_loss"
    zoo_slice = 20  # 模型库复核参考模型时每种指令取测试集前 20 条（每条都要逐字生成，还要跑零样本的 lm-gpt）

    # ---------------------------------------------------------------- 数据
    def prepare(self, sizes: dict):
        base = _base()
        vocab = chat_vocab(base.vocab.itos)
        context_len = base.model.context_len
        seed = torch.initial_seed() % 2**31
        train = conversations(instruction_examples("train", sizes["train_per_type"]), context_len + 1,
                              sizes["multi_turn"], seed=seed)
        val = conversations(instruction_examples("val", sizes["val_per_type"]), context_len + 1, 0.0)
        encode = [encode_conversation(chat, vocab) for chat in train], [encode_conversation(c, vocab) for c in val]
        generator = torch.Generator().manual_seed(seed)
        train_loader = DataLoader(encode[0], batch_size=sizes["batch_size"], shuffle=True, collate_fn=pad_conversations,
                                  generator=generator)
        val_loader = DataLoader(encode[1], batch_size=64, collate_fn=pad_conversations)
        return train_loader, val_loader, {"vocab": list(vocab.itos), "context_len": context_len, "base": BASE_MODEL}

    # ---------------------------------------------------------------- 回答
    @staticmethod
    def _vocab(config: dict) -> Vocab:
        return Vocab.from_itos(config["artifacts"]["vocab"])

    def reply(self, model, config: dict, history, message: str, max_new_tokens: int = ANSWER_RESERVE):
        """在对话 ``history``（``[(角色, 内容), ...]``）之后回答 ``message``（贪心解码，写到 <|end|> 为止）。

        返回 ``(回答, 丢掉的轮数)``：历史加新问题放不进 ``context_len - max_new_tokens`` 个 token 时，
        从最早的一轮（一问一答）开始丢，直到放得下。单独一条问题就放不下时抛 TaskError（先截短它）。
        """
        vocab = self._vocab(config)
        budget = config["artifacts"]["context_len"] - max_new_tokens
        messages = [(role, to_model_text(text) if role == "user" else text) for role, text in history]
        messages.append(("user", to_model_text(message)))
        dropped = 0
        while len(chat_tokens(render_chat(messages, add_generation_prompt=True))) > budget:
            if len(messages) <= 1:
                raise TaskError(f"这条消息太长：放不进模型的上下文（{budget} 个字以内）。请缩短后再发。")
            messages, dropped = messages[2:], dropped + 1
        ids = vocab.encode(chat_tokens(render_chat(messages, add_generation_prompt=True)))
        out = generate(model, ids, max_new_tokens, vocab=vocab, strategy="greedy", stop_tokens=[vocab[END]])
        return _decode(out, vocab, END), dropped

    def predict(self, model, config, inputs, device) -> list[dict]:
        """每条输入当作一轮新对话里的用户消息，返回助手的回答。"""
        return [{"prompt": text, "answer": self.reply(model, config, [], text)[0]} for text in inputs]

    def format_prediction(self, row: dict) -> str:
        return row["answer"]

    # ---------------------------------------------------------------- 评估
    def evaluate(self, model, config, split, device, limit=None) -> dict:
        """每种指令的分数（规则见 :mod:`~.scoring`），与基线、零样本的 lm-gpt 并列。

        每种指令取这份数据的前 ``limit`` 条（默认 smoke 5 条、cpu 100 条、gpu 300 条；顺序固定），
        全部贪心解码。零样本的 lm-gpt 用同样的问题，模板写成纯文字（"用户：…\\n助手："，见
        :func:`~.data.render_chat` 的 ``plain``），写到换行为止。
        """
        per_type = limit or pick(smoke=5, cpu=100, gpu=300)
        examples = instruction_examples(split, per_type)
        baseline = _baseline()
        zero_shot = _base()
        result = {"task": self.name, "model": config["model"], "split": split, "n": len(examples),
                  "metrics": dict(METRICS)}
        scores = []
        for kind in KINDS:
            chosen = [e for e in examples if e.kind == kind]
            answers = [e.answer for e in chosen]
            longest = max(len(chat_tokens(a)) for a in answers) + 2
            ours = [self.reply(model, config, [], e.prompt, longest)[0] for e in chosen]
            theirs = [_zero_shot_answer(zero_shot, e.prompt, longest) for e in chosen]
            result[f"{kind}_n"] = len(chosen)
            result[f"{kind}_score"] = score(kind, answers, ours)
            result[f"{kind}_baseline"] = score(kind, answers, [baseline.answer(e) for e in chosen])
            result[f"{kind}_zero_shot"] = score(kind, answers, theirs)
            scores.append(result[f"{kind}_score"])
        result["mean_score"] = sum(scores) / len(scores)
        return result


@lru_cache(maxsize=1)
def _baseline() -> Baseline:
    return Baseline(instruction_examples("train", pick(smoke=100, cpu=5000, gpu=5000)))


def _decode(ids, vocab: Vocab, stop: str) -> str:
    """生成的编号 -> 文字，去掉结尾的停止符。"""
    tokens = vocab.decode(list(ids))
    if tokens and tokens[-1] == stop:
        tokens = tokens[:-1]
    return "".join(tokens)


def _zero_shot_answer(base, prompt: str, max_new_tokens: int) -> str:
    vocab = base.vocab
    text = render_chat([("user", to_model_text(prompt))], add_generation_prompt=True, plain=True)
    keep = base.model.context_len - max_new_tokens  # 提示只留最后这么多个字，给回答留出位置
    ids = vocab.encode(list(text))[-keep:]
    out = generate(base.model, ids, max_new_tokens, vocab=vocab, strategy="greedy", stop_tokens=[vocab["\n"]])
    return _decode(out, vocab, "\n")
