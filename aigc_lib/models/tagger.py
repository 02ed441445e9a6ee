"""序列标注：条件随机场 (CRF) 与 BiLSTM-CRF 标注器。

一句话里每个位置打一个标签（分词的 B/M/E/S、词性、实体的 B-PER/I-PER/O ...）。
BiLSTM 给每个位置、每个标签一个分数（发射分数 emission）；CRF 再加上"标签 i 后面接标签 j"
的转移分数，对整条标签路径打分，于是模型学得到"I-PER 不能跟在 O 后面"这类规则。

一条路径 y = (y_1 .. y_n) 的分数::

    score(y) = start[y_1] + sum_t emit[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_n]

CRF 的训练目标是负对数似然 NLL = log Z - score(gold)，其中
log Z = logsumexp(所有 K^n 条路径的分数)，由前向算法 O(n K^2) 算出；
预测用 Viterbi 算法：把前向算法里的 logsumexp 换成 max，再沿回溯指针找回最优路径。

本文件只依赖 PyTorch 和 ``layers.py`` 里的几个小函数，可以一起复制使用。约定：

- ``emissions``：(B, T, K) 浮点张量，B 句话、最长 T 个位置、K 个标签；
- ``mask``：(B, T) 布尔张量，真实位置为 True，补齐 (padding) 位置为 False；
  每句的真实位置必须从 0 开始连续排列（右侧补齐），且至少有 1 个；
- ``tags``：(B, T) 整数张量，补齐位置的值随意（会被忽略）。
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .layers import check_lengths, check_token_ids, length_mask, make_embedding


def _check_mask(mask: torch.Tensor) -> None:
    if not bool(mask[:, 0].all()):
        raise ValueError(
            "CRF 的 mask 第 0 列必须全为 True：每句话至少要有 1 个真实位置，且真实位置从头开始"
            "（右侧补齐）。请检查 lengths 中是否有 0，或把空句子从数据里去掉。"
        )


class CRF(nn.Module):
    """线性链条件随机场：前向算法、路径打分、负对数似然、Viterbi 解码，全部批量、支持掩码。

    参数：
        num_tags: 标签个数 K。

    可学习参数（都是普通的 ``nn.Parameter``）：
        transitions: (K, K)，``transitions[i, j]`` 是"从标签 i 转到标签 j"的分数（行 = 前一个，列 = 后一个）；
        start_transitions: (K,)，句首第一个标签的分数；
        end_transitions: (K,)，句末最后一个标签的分数。

    例::

        crf = CRF(num_tags=4)
        emissions = torch.randn(2, 5, 4)                         # (B, T, K)
        mask = length_mask(torch.tensor([5, 3]), 5)              # (B, T)
        loss = crf.nll(emissions, tags, mask)                    # 标量
        paths = crf.decode(emissions, mask)                      # [[5 个标签], [3 个标签]]
    """

    def __init__(self, num_tags: int):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"CRF 的 num_tags 必须 >= 1，收到 {num_tags}。")
        self.num_tags = num_tags
        # 小的随机初值：一开始各种转移差不多可能，由数据决定哪些转移该被鼓励或惩罚
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """前向算法：每句话所有标签路径分数的 logsumexp，即 log Z。返回 (B,)。

        ``alpha[b, j]`` = 以标签 j 结尾的所有前缀路径分数的 logsumexp。每走一步::

            alpha_new[j] = logsumexp_i(alpha[i] + trans[i, j]) + emit[t, j]

        补齐位置不更新 alpha，所以每句在自己的最后一个真实位置"停下"。
        """
        _check_mask(mask)
        alpha = self.start_transitions + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            # (B, K, 1) + (K, K) -> (B, K, K)：第 1 维是前一个标签 i，第 2 维是当前标签 j
            scores = alpha.unsqueeze(2) + self.transitions
            next_alpha = torch.logsumexp(scores, dim=1) + emissions[:, t]  # (B, K)
            alpha = torch.where(mask[:, t].unsqueeze(1), next_alpha, alpha)
        return torch.logsumexp(alpha + self.end_transitions, dim=1)  # (B,)

    def path_score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """给定标签路径 ``tags`` (B, T) 的分数（见文件开头的公式）。返回 (B,)。"""
        _check_mask(mask)
        tags = tags.masked_fill(~mask, 0)  # 补齐位置可能是 -100 之类，先换成合法下标
        maskf = mask.to(emissions.dtype)  # (B, T)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        score = self.start_transitions[tags[:, 0]] + (emit * maskf).sum(1)  # (B,)
        trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)：y_{t-1} -> y_t
        score = score + (trans * maskf[:, 1:]).sum(1)
        last = mask.sum(1) - 1  # (B,) 每句最后一个真实位置
        last_tags = tags.gather(1, last.unsqueeze(1)).squeeze(1)  # (B,)
        return score + self.end_transitions[last_tags]

    def nll(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """负对数似然 log Z - score(tags)，总是 >= 0。

        ``reduction``："mean"（按句子平均，默认）、"sum" 或 "none"（返回 (B,)）。
        """
        per_sentence = self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)
        if reduction == "mean":
            return per_sentence.mean()
        if reduction == "sum":
            return per_sentence.sum()
        if reduction == "none":
            return per_sentence
        raise ValueError(f"reduction 只能是 'mean'、'sum' 或 'none'，收到 {reduction!r}。")

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi 解码：每句分数最高的标签路径，返回 ``list[list[int]]``，长度与每句真实长度相同。"""
        _check_mask(mask)
        B, T, K = emissions.shape
        score = self.start_transitions + emissions[:, 0]  # (B, K)
        keep = torch.arange(K, device=emissions.device).expand(B, K)  # 补齐位置：指向自己
        backpointers = []
        for t in range(1, T):
            scores = score.unsqueeze(2) + self.transitions  # (B, K, K)
            best_score, best_prev = scores.max(dim=1)  # (B, K)：到达 j 的最佳前一个标签
            step = mask[:, t].unsqueeze(1)  # (B, 1)
            score = torch.where(step, best_score + emissions[:, t], score)
            # 补齐位置的指针指向同一个标签，回溯时穿过补齐区不改变标签
            backpointers.append(torch.where(step, best_prev, keep))
        best_last = (score + self.end_transitions).argmax(dim=1)  # (B,)
        path = [best_last]
        for pointers in reversed(backpointers):
            path.append(pointers.gather(1, path[-1].unsqueeze(1)).squeeze(1))
        path = torch.stack(path[::-1], dim=1).tolist()  # (B, T)，一次搬回 CPU
        lengths = mask.sum(1).tolist()
        return [row[:n] for row, n in zip(path, lengths)]


class BiLSTMTagger(nn.Module):
    """字/词 -> 嵌入 -> 双向 LSTM -> 每个位置的标签分数 -> (可选) CRF。

    参数：
        vocab_size: 词表大小 V（含补齐符）。
        num_tags: 标签个数 K。
        embed_dim: 嵌入维度；给了 ``pretrained_embeddings`` 时以它的列数为准。
        hidden_dim: 双向 LSTM 的总隐藏维度（每个方向 hidden_dim // 2），必须是偶数。
        num_layers: LSTM 层数。
        dropout: 嵌入之后、输出层之前的 dropout（多层时层间也用）。
        use_crf: True 用 CRF 的 NLL 训练、Viterbi 解码；False 退化为逐位置 softmax（交叉熵 + argmax）。
        padding_idx: 补齐符的编号，其嵌入恒为 0。
        pretrained_embeddings: (V, D) 张量或数组，用来初始化嵌入层（例如第 04 章训练的词向量）。
        freeze_embeddings: True 时嵌入层不参与训练。

    输入 ``tokens`` (B, T) 为右侧补齐的编号，``lengths`` (B,) 为每句真实长度（>= 1，空句子报错）。
    ``model(tokens, lengths)`` 返回发射分数 (B, T, num_tags)，与分类器一样只接收这两个张量。
    ``model.config`` 保存构造参数，``BiLSTMTagger(**model.config)`` 能重建同样结构的模型，
    再 ``load_state_dict`` 即得到同一个模型（预训练向量已在 state_dict 里，config 中记为 None）。

    例::

        model = BiLSTMTagger(vocab_size=5000, num_tags=4)
        loss = model.loss(tokens, lengths, tags)        # 标量，可以 backward
        paths = model.decode(tokens, lengths)           # list[list[int]]
    """

    def __init__(
        self,
        vocab_size: int,
        num_tags: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 1,
        dropout: float = 0.1,
        use_crf: bool = True,
        padding_idx: int = 0,
        pretrained_embeddings=None,
        freeze_embeddings: bool = False,
    ):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(
                f"hidden_dim={hidden_dim} 必须是偶数：双向 LSTM 每个方向各占 hidden_dim // 2。"
            )
        if pretrained_embeddings is not None:
            embed_dim = int(torch.as_tensor(pretrained_embeddings).shape[-1])  # 形状由 make_embedding 检查
        self.config = dict(
            vocab_size=vocab_size,
            num_tags=num_tags,
            embed_dim=embed_dim,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            dropout=dropout,
            use_crf=use_crf,
            padding_idx=padding_idx,
            pretrained_embeddings=None,
            freeze_embeddings=freeze_embeddings,
        )
        self.use_crf = use_crf
        self.embedding = make_embedding(vocab_size, embed_dim, padding_idx, pretrained_embeddings, freeze_embeddings)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_dim // 2,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = nn.Linear(hidden_dim, num_tags)
        self.crf = CRF(num_tags) if use_crf else None

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """返回发射分数 (B, T, num_tags)。补齐位置的分数没有意义，之后都会被掩码掉。"""
        check_token_ids(tokens, self.embedding.num_embeddings)
        lengths_cpu = torch.as_tensor(lengths).cpu()  # pack 本来就需要 CPU 上的长度
        check_lengths(lengths_cpu, tokens.size(1))  # 空句子（长度 0）报错，见 models/layers.py
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        # 打包 (pack) 让 LSTM 跳过补齐位置：反向 LSTM 从每句真正的末尾开始读，而不是从补齐符开始
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        T = tokens.size(1)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, H)
        return self.head(self.dropout(out))  # (B, T, K)

    def loss(self, tokens: torch.Tensor, lengths: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """训练损失（标量）：CRF 的 NLL 按句平均；``use_crf=False`` 时为真实位置上的平均交叉熵。"""
        return self.emission_loss(self(tokens, lengths), lengths, tags)

    def emission_loss(
        self, emissions: torch.Tensor, lengths: torch.Tensor, tags: torch.Tensor
    ) -> torch.Tensor:
        """由已经算好的发射分数 (B, T, K) 求损失，见 ``loss``。"""
        # 混合精度下 emissions 是 bf16/fp16：升到 float32 再做 logsumexp，避免精度损失
        emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))
        mask = length_mask(lengths.to(emissions.device), emissions.size(1))  # (B, T)
        if self.crf is not None:
            return self.crf.nll(emissions, tags, mask)
        return F.cross_entropy(emissions[mask], tags[mask])  # (N_real, K) vs (N_real,)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """每句的预测标签编号 ``list[list[int]]``（不含补齐位置）。

        不会切换 train/eval 模式：预测前请先调用 ``model.eval()`` 关掉 dropout。
        """
        return self.decode_emissions(self(tokens, lengths), lengths)

    @torch.no_grad()
    def decode_emissions(self, emissions: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """由已经算好的发射分数 (B, T, K) 解码：有 CRF 时 Viterbi，没有时逐字取最大；不含补齐位置。"""
        emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))  # 混合精度下先升精度
        if self.crf is not None:
            return self.crf.decode(emissions, length_mask(lengths.to(emissions.device), emissions.size(1)))
        best = emissions.argmax(-1).tolist()  # (B, T)
        return [row[:n] for row, n in zip(best, lengths.tolist())]

    @property
    def transitions(self) -> torch.Tensor:
        """CRF 的转移分数 (K, K)（行 = 前一个标签，列 = 后一个标签），已 detach，可直接画热力图。"""
        if self.crf is None:
            raise RuntimeError(
                "这个模型是 use_crf=False 构造的，没有转移矩阵。请用 use_crf=True 重新训练一个模型。"
            )
        return self.crf.transitions.detach()
