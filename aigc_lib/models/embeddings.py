"""词向量模型：Word2Vec（skip-gram + 负采样）与 GloVe 的 ``nn.Module``，以及它们的损失和训练一步。

这里的模型只接收张量（词编号、共现计数），不关心语料怎么来；从句子建词表、编码语料、
取 (中心词, 上下文词) 对、手写梯度的快速训练、共现统计和词向量的查询与读写都在
:mod:`aigc_lib.data.wordvectors` 里。

读法（从上到下）：

1. ``negative_table``：按 count^0.75 抽负例的表，``SkipGram`` 用它采样；
2. ``SkipGram`` 模块：损失 -log σ(u_o·v_c) - Σ_k log σ(-u_k·v_c)，用 autograd 训练，
   可以交给训练引擎（``skipgram_step``）；
3. ``GloVe`` 模块：加权最小二乘，让点积拟合 log 共现次数（``glove_step``）。

训练完用 ``model.vectors()`` 取出 (V, D) 的词向量，交给 ``aigc_lib.data.wordvectors.WordVectors`` 查近邻::

    vectors = WordVectors(words, model.vectors())
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# 1. 负采样表
# ---------------------------------------------------------------------------


def negative_table(
    counts: torch.Tensor, power: float = 0.75, size: int = 1_000_000
) -> torch.Tensor:
    """负采样表 (size,)：词 i 占 round(size * p_i) 格左右，p ∝ count^0.75。

    从表里均匀取一格就等于按 p 抽一个词，比每次按概率抽快得多（word2vec 的做法）。
    0.75 次方把高频词的概率压低、低频词的抬高。每个词的格数与 size * p_i 相差不到 1。

    例::

        table = negative_table(torch.tensor([100, 10, 1]), size=1000)
        negatives = table[torch.randint(0, len(table), (4, 5))]   # 4 个样本各 5 个负例
    """
    weights = counts.double().pow(power)
    bounds = torch.round(torch.cumsum(weights / weights.sum(), 0) * size).long()  # (V,)
    slots = torch.diff(bounds, prepend=bounds.new_zeros(1))  # (V,) 每个词占几格
    return torch.repeat_interleave(torch.arange(len(counts), device=counts.device), slots)


# ---------------------------------------------------------------------------
# 2. SkipGram 模块（autograd 版，可交给训练引擎）
# ---------------------------------------------------------------------------


class SkipGram(nn.Module):
    """skip-gram + 负采样。每个词两个向量：中心词向量 v（``in_embed``，最后用的词向量）
    和上下文向量 u（``out_embed``）。一个样本 (c, o) 加 K 个负例 k 的损失::

        -log σ(u_o · v_c) - Σ_k log σ(-u_k · v_c)

    参数：
        vocab_size, dim: 词表大小 V、向量维度 D。
        num_negatives: 每个样本的负例个数 K。
        counts: (V,) 词频；给了就按 count^0.75 建负采样表，否则负例在词表里均匀抽。
        sparse: True 时嵌入层产生稀疏梯度（配 ``torch.optim.SparseAdam`` 或 SGD，词表大时快得多）。

    初始化与 word2vec 相同：v 在 ±0.5/D 内均匀随机，u 全为 0。

    例::

        model = SkipGram(len(words), 100, counts=counts)
        loss = skipgram_step(model, (centers, contexts))   # 批 = (中心词 (B,), 上下文词 (B,))
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 100,
        num_negatives: int = 5,
        counts: torch.Tensor | None = None,
        sparse: bool = False,
    ):
        super().__init__()
        self.num_negatives = num_negatives
        self.in_embed = nn.Embedding(vocab_size, dim, sparse=sparse)
        self.out_embed = nn.Embedding(vocab_size, dim, sparse=sparse)
        nn.init.uniform_(self.in_embed.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.out_embed.weight)
        table = negative_table(counts) if counts is not None else torch.arange(vocab_size)
        # 负采样表跟着模型搬到 GPU，但不存进 state_dict（它可以由词频重新算出）
        self.register_buffer("noise_table", table, persistent=False)

    def forward(self, centers: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """中心词 (B,) 与候选上下文词 (B, C) 的点积分数 (B, C)。"""
        v = self.in_embed(centers)  # (B, D)
        u = self.out_embed(candidates)  # (B, C, D)
        return torch.bmm(u, v.unsqueeze(2)).squeeze(2)  # (B, C)

    def sample_negatives(self, n: int) -> torch.Tensor:
        """从负采样表里抽 (n, K) 个负例（用全局随机数，``seed_everything`` 之后可复现）。"""
        table = self.noise_table
        slots = torch.randint(0, len(table), (n, self.num_negatives), device=table.device)
        return table[slots]

    def loss(
        self, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """一批 (中心词 (B,), 上下文词 (B,)) 的平均负采样损失；``negatives`` (B, K) 不给就现抽。"""
        if negatives is None:
            negatives = self.sample_negatives(len(centers))
        candidates = torch.cat([contexts.unsqueeze(1), negatives], dim=1)  # (B, 1+K)
        return negative_sampling_loss(self(centers, candidates))

    def vectors(self) -> torch.Tensor:
        """训练好的词向量 (V, D)：中心词向量 v（已 detach）。

        查近邻：``WordVectors(words, model.vectors())``（``words`` 的顺序要与训练时的编号一致）。
        """
        return self.in_embed.weight.detach()


def negative_sampling_loss(scores: torch.Tensor) -> torch.Tensor:
    """由分数 (B, 1+K)（第 0 列是真实上下文词，其余是负例）求平均负采样损失（标量）。"""
    # log σ(x) 直接用 logsigmoid：x 很负时 log(sigmoid(x)) 会变成 log(0) = -inf
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # bf16/fp16 -> float32
    per_pair = F.logsigmoid(scores[:, 0]) + F.logsigmoid(-scores[:, 1:]).sum(1)  # (B,)
    return -per_pair.mean()


def skipgram_step(model: SkipGram, batch) -> torch.Tensor:
    """训练引擎调用的一步：``batch = (centers, contexts)``（上下文词是"目标"，放最后），返回标量损失。

    ``fit`` 传来的总是原模型（多进程时由 ``fit`` 负责梯度同步），可以直接调用它的方法。
    """
    centers, contexts = batch
    negatives = model.sample_negatives(len(centers))  # (B, K)
    candidates = torch.cat([contexts.unsqueeze(1), negatives], dim=1)  # (B, 1+K)
    return negative_sampling_loss(model(centers, candidates))


# ---------------------------------------------------------------------------
# 3. GloVe：加权最小二乘
# ---------------------------------------------------------------------------


class GloVe(nn.Module):
    """GloVe：让 w_i·w~_j + b_i + b~_j 逼近 log X_ij，按 f(X_ij) 加权的最小二乘::

        J = Σ_ij f(X_ij) (w_i·w~_j + b_i + b~_j - log X_ij)^2,   f(x) = min(1, (x / x_max)^alpha)

    f 让极少见的词对（噪声大）权重小，又不让"的"之类的超高频词对主导。

    参数：vocab_size, dim，以及 x_max（默认 100）、alpha（默认 0.75），与原文相同。
    最终的词向量按原文建议取 w + w~。

    例（``cooccurrence`` 在 :mod:`aigc_lib.data.wordvectors` 里）::

        rows, cols, counts = cooccurrence(ids, sentence_ids, window=10)
        model = GloVe(len(words), 100)
        loss = glove_step(model, (rows[:512], cols[:512], counts[:512]))
    """

    def __init__(self, vocab_size: int, dim: int = 100, x_max: float = 100.0, alpha: float = 0.75):
        super().__init__()
        self.x_max, self.alpha = x_max, alpha
        self.w = nn.Embedding(vocab_size, dim)  # 中心词向量
        self.w_tilde = nn.Embedding(vocab_size, dim)  # 上下文词向量
        self.b = nn.Embedding(vocab_size, 1)
        self.b_tilde = nn.Embedding(vocab_size, 1)
        for emb in (self.w, self.w_tilde):
            nn.init.uniform_(emb.weight, -0.5 / dim, 0.5 / dim)  # 与 GloVe 的 C 代码相同
        for emb in (self.b, self.b_tilde):
            nn.init.zeros_(emb.weight)

    def forward(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """预测的 log 共现次数 (B,)。"""
        dot = (self.w(rows) * self.w_tilde(cols)).sum(-1)  # (B,)
        return dot + self.b(rows).squeeze(-1) + self.b_tilde(cols).squeeze(-1)

    def weighting(self, counts: torch.Tensor) -> torch.Tensor:
        """f(x) = min(1, (x / x_max)^alpha)，形状同 ``counts``。"""
        return (counts / self.x_max).pow(self.alpha).clamp(max=1.0)

    def loss(self, rows: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """一批非零共现项的加权平方误差的平均值（原文是求和；取平均让学习率与批大小无关）。"""
        return self.objective(self(rows, cols), counts)

    def objective(self, predicted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """由预测的 log 共现 (B,) 与实际共现 (B,) 求加权平方误差的平均值，见 ``loss``。"""
        predicted = predicted.to(torch.promote_types(predicted.dtype, torch.float32))  # 混合精度
        error = predicted - torch.log(counts)  # (B,)
        return (self.weighting(counts) * error.pow(2)).mean()

    def vectors(self) -> torch.Tensor:
        """训练好的词向量 (V, D)：按原文建议取 w + w~（已 detach）。

        查近邻：``WordVectors(words, model.vectors())``。
        """
        return (self.w.weight + self.w_tilde.weight).detach()


def glove_step(model: GloVe, batch) -> torch.Tensor:
    """训练引擎调用的一步：``batch = (rows, cols, counts)``（共现次数是"目标"，放最后）。

    ``fit`` 传来的总是原模型（多进程时由 ``fit`` 负责梯度同步），可以直接调用它的方法。
    """
    rows, cols, counts = batch
    return model.objective(model(rows, cols), counts)
