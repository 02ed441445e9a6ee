"""Transformer 家族：缩放点积注意力、多头注意力、位置编码、编码器层和文本分类器。

从上往下读：
  1. ``scaled_dot_product_attention_explicit``：把 softmax(QK^T/sqrt(d))V 一步步写出来；
  2. ``MultiHeadAttention``：两条路径给出相同的数——手写路径（可返回注意力权重，用来画热力图）
     和 PyTorch 融合的 ``F.scaled_dot_product_attention``（默认，快）；
  3. 位置编码：正弦（固定公式，可画图）和可学习的两种；
  4. ``TransformerEncoderLayer``（pre-norm）和 ``TransformerClassifier``。

分类器的调用方式与 RNN 家族相同：``model(tokens (B, T), lengths (B,)) -> logits (B, num_classes)``。

掩码约定（与 PyTorch 相同，注意两者方向相反）：
  * 函数层面的 ``mask``（同 ``F.scaled_dot_product_attention`` 的布尔 attn_mask）：True = 可以看；
  * 模块层面的 ``key_padding_mask``（同 ``nn.MultiheadAttention``）：True = 补齐位置，不许看。
因果掩码按"右下角对齐"：查询比键短时（生成时带 KV 缓存，只算最新的几个位置），
第 i 个查询对应序列里的第 ``Tk - Tq + i`` 个位置，能看到它和它之前的所有键。
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rnn import check_token_ids, length_mask, make_embedding


# ---------------------------------------------------------------------------
# 1. 缩放点积注意力（手写）
# ---------------------------------------------------------------------------


def causal_mask(q_len: int, k_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """因果掩码 (Tq, Tk)，True = 可以看。查询 i 只能看键 j <= i + (Tk - Tq)（右下角对齐）。

    >>> causal_mask(3, 3).int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    >>> causal_mask(1, 3).int().tolist()      # 带 KV 缓存生成第 3 个词：能看到全部 3 个键
    [[1, 1, 1]]
    """
    ones = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    return ones.tril(diagonal=k_len - q_len)


def scaled_dot_product_attention_explicit(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """手写的缩放点积注意力：``softmax(Q K^T / sqrt(d)) V``，返回 ``(output, weights)``。

    参数：
        q: (..., Tq, d)；k: (..., Tk, d)；v: (..., Tk, dv)。前面的维度（通常是 B, H）原样保留。
        mask: 可选的布尔掩码，能广播到 (..., Tq, Tk)，True = 可以看
            （与 ``F.scaled_dot_product_attention`` 的布尔 attn_mask 相同）。
        causal: 是否再加因果掩码（每个位置只看自己和之前的位置）。
        dropout_p: 注意力权重上的 dropout 比例；只在训练时传非 0 值。

    返回：output (..., Tq, dv)，weights (..., Tq, Tk)（dropout 之前的权重，每行和为 1）。
    某一行若一个键都不许看，该行的权重和输出都是 0（与融合实现一致），而不是 NaN。

    >>> q = k = v = torch.randn(2, 4, 5, 8)                  # (B, H, T, d)
    >>> out, w = scaled_dot_product_attention_explicit(q, k, v, causal=True)
    >>> out.shape, w.shape
    (torch.Size([2, 4, 5, 8]), torch.Size([2, 4, 5, 5]))
    """
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask 的类型是 {mask.dtype}，应为 torch.bool（True = 可以看）。可以用 mask.bool()，或由长度生成：length_mask(lengths, T)。")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., Tq, Tk)
    allowed = mask
    if causal:
        tril = causal_mask(q.size(-2), k.size(-2), device=q.device)  # (Tq, Tk)
        allowed = tril if allowed is None else allowed & tril
    if allowed is not None:
        # exp(-inf) = 0：不许看的键在 softmax 之后权重恰好为 0
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., Tq, Tk)
    if allowed is not None:
        # 一整行都是 -inf 时 softmax 得到 NaN；把它变成 0，与 F.scaled_dot_product_attention 一致
        weights = weights.masked_fill(~allowed, 0.0)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights  # (..., Tq, dv), (..., Tq, Tk)


# ---------------------------------------------------------------------------
# 2. 多头注意力
# ---------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """多头注意力：把 d_model 维拆成 num_heads 个头，各自做注意力，再拼回来。

    参数：
        d_model: 输入输出维度 C，必须能被 num_heads 整除（每头 hs = C / num_heads）。
        num_heads: 头数 H。
        dropout: 注意力权重上的 dropout（只在训练模式生效）。
        bias: 投影层是否带偏置。
        fused: 默认 True，用 ``F.scaled_dot_product_attention``（能用 FlashAttention 等融合内核时
            更快、更省显存）；False 时走手写路径。两条路径的结果相同（测试里逐元素对照）。

    ``forward(query, key=None, value=None, key_padding_mask=None, causal=False, need_weights=False)``：
        query (B, Tq, C)；key、value (B, Tk, C)，默认等于 query（自注意力）；
        key_padding_mask (B, Tk) 布尔，True = 补齐位置（与 ``nn.MultiheadAttention`` 相同）；
        need_weights=True 时强制走手写路径，返回每个头的权重。
        返回 ``(output (B, Tq, C), weights (B, H, Tq, Tk) 或 None)``。

    >>> mha = MultiHeadAttention(d_model=16, num_heads=4)
    >>> x = torch.randn(2, 5, 16)
    >>> out, w = mha(x, key_padding_mask=torch.tensor([[False] * 5, [False] * 3 + [True] * 2]), need_weights=True)
    >>> out.shape, w.shape
    (torch.Size([2, 5, 16]), torch.Size([2, 4, 5, 5]))
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True, fused: bool = True) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(
                f"MultiHeadAttention：d_model={d_model} 不能被 num_heads={num_heads} 整除。"
                "请调整其中一个，例如 d_model=128、num_heads=4。"
            )
        self.d_model, self.num_heads, self.dropout, self.fused = d_model, num_heads, dropout, fused
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, hs)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, H, T, hs = x.shape
        return x.transpose(1, 2).reshape(B, T, H * hs)  # (B, T, C)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """已拆好头的注意力：q (B, H, Tq, hs)，k、v (B, H, Tk, hs)，mask 能广播到 (B, H, Tq, Tk)，True = 可看。

        单独成一个方法，是为了让带 KV 缓存的解码器（第 09 章）先把历史的 k、v 拼上，再调用它。
        """
        dropout_p = self.dropout if self.training else 0.0
        if need_weights or not self.fused:
            return scaled_dot_product_attention_explicit(q, k, v, mask=mask, causal=causal, dropout_p=dropout_p)
        if causal and (mask is not None or q.size(-2) != k.size(-2)):
            # F.sdpa 不能同时给 attn_mask 和 is_causal，且它的 is_causal 是左上角对齐，
            # 所以这两种情况自己把因果掩码并进 mask
            tril = causal_mask(q.size(-2), k.size(-2), device=q.device)
            mask, causal = (tril if mask is None else mask & tril), False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)
        return out, None  # (B, H, Tq, hs)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        q = self.split_heads(self.q_proj(query))  # (B, H, Tq, hs)
        k = self.split_heads(self.k_proj(key))  # (B, H, Tk, hs)
        v = self.split_heads(self.v_proj(value))  # (B, H, Tk, hs)
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)，True = 可看，对所有头和查询广播
        out, weights = self.attend(q, k, v, mask=mask, causal=causal, need_weights=need_weights)
        return self.out_proj(self.merge_heads(out)), weights  # (B, Tq, C)


# ---------------------------------------------------------------------------
# 3. 位置编码
# ---------------------------------------------------------------------------


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """正弦位置编码表 (max_len, d_model)（Vaswani et al., 2017）::

        PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
        PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))

    低维变化快、高维变化慢，像一组不同频率的时钟；PE[pos+k] 可以由 PE[pos] 经过一个只与 k 有关的旋转得到，模型因此容易学到相对位置。
    直接画 ``plt.imshow(sinusoidal_positions(100, 64).T)`` 就能看到条纹。
    """
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))  # (ceil(C/2),)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]  # d_model 为奇数时 cos 少一列
    return table


def _check_positions(start: int, length: int, max_len: int) -> None:
    if start + length > max_len:
        raise ValueError(
            f"位置 {start}..{start + length - 1} 超出了位置编码的 max_len={max_len}。"
            "请增大模型的 max_len，或在组批时截断：make_loader(..., max_len=...)。"
        )


class SinusoidalPositions(nn.Module):
    """把正弦位置编码加到输入上：``x (B, T, C) -> x + PE[start:start+T]``。没有可训练参数。

    ``start`` 是第一个位置的编号，生成时带 KV 缓存逐个喂词会用到。
    """

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.max_len = max_len
        # persistent=False：表格由公式决定，不存进检查点，换 max_len 也能加载
        self.register_buffer("table", sinusoidal_positions(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        _check_positions(start, x.size(1), self.max_len)
        return x + self.table[start : start + x.size(1)].to(x.dtype)  # (B, T, C)


class LearnedPositions(nn.Module):
    """可学习的位置编码（BERT、GPT 的做法）：每个位置一个向量，和词向量一起训练。

    ``x (B, T, C) -> x + P[start:start+T]``；只认识训练时见过的 max_len 个位置。
    """

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.max_len = max_len
        self.table = nn.Embedding(max_len, d_model)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        _check_positions(start, x.size(1), self.max_len)
        positions = torch.arange(start, start + x.size(1), device=x.device)  # (T,)
        return x + self.table(positions)  # (B, T, C)


POSITIONS = {"sinusoidal": SinusoidalPositions, "learned": LearnedPositions}


# ---------------------------------------------------------------------------
# 4. 编码器层与分类器
# ---------------------------------------------------------------------------


class TransformerEncoderLayer(nn.Module):
    """一层 pre-norm Transformer：先 LayerNorm 再进子层，残差直接相加::

        x = x + Dropout(Attention(LN(x)))
        x = x + Dropout(W2 Dropout(GELU(W1 LN(x))))

    pre-norm 比原论文的 post-norm 更好训练（不需要很长的学习率预热）。计算与
    ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True)`` 相同。
    加上 ``causal=True`` 就是 GPT 式解码器的一层。

    ``forward(x (B, T, C), key_padding_mask=None, causal=False, need_weights=False)
    -> (x (B, T, C), weights (B, H, T, T) 或 None)``。
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(
            self.norm1(x), key_padding_mask=key_padding_mask, causal=causal, need_weights=need_weights
        )
        x = x + self.dropout(attended)  # (B, T, C)
        x = x + self.dropout(self.ff(self.norm2(x)))  # (B, T, C)
        return x, weights


class TransformerClassifier(nn.Module):
    """词向量 + 位置编码 -> 若干层 Transformer 编码器 -> 池化 -> 线性层，输出每类的 logit。

    参数：
        vocab_size: 词表大小 V。
        num_classes: 类别数，默认 2。
        d_model: 每个位置的向量维度 C。
        num_heads: 注意力头数，必须整除 d_model。
        num_layers: 编码器层数。
        dim_feedforward: 前馈层的中间维度。
        dropout: dropout 比例（词向量后、注意力权重、残差、分类层前）。
        max_len: 最长能处理的句子长度（位置编码表的大小）；更长的句子请在组批时截断。
        positions: ``"sinusoidal"``（固定公式）或 ``"learned"``（可学习）。
        pooling: ``"mean"`` 对真实词位置取平均；``"cls"`` 在句首加一个可学习的 [CLS] 向量，
            取它最后的输出（BERT 的做法）。此时注意力权重是 (T+1)×(T+1)，第 0 行/列是 [CLS]。
        padding_idx: 补齐用的词编号，默认 0。
        pretrained_embeddings: 可选的预训练词向量 (V, d_model)。
        freeze_embeddings: 是否冻结词向量。

    形状：``model(tokens (B, T), lengths (B,)) -> logits (B, num_classes)``；
    ``return_attention=True`` 时返回 ``(logits, [每层的注意力权重 (B, H, T, T)])``，用来画热力图
    （这时走手写注意力路径，稍慢）。

    >>> model = TransformerClassifier(vocab_size=100, d_model=32, num_heads=4).eval()
    >>> logits, attn = model(torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1]), return_attention=True)
    >>> logits.shape, len(attn), attn[0].shape
    (torch.Size([2, 2]), 2, torch.Size([2, 4, 3, 3]))
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
        dropout: float = 0.1,
        max_len: int = 512,
        positions: str = "sinusoidal",
        pooling: str = "mean",
        padding_idx: int | None = 0,
        pretrained_embeddings: torch.Tensor | None = None,
        freeze_embeddings: bool = False,
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"TransformerClassifier：positions={positions!r} 无效，只能是 {' | '.join(POSITIONS)}。")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"TransformerClassifier：pooling={pooling!r} 无效，只能是 mean | cls。")
        if pretrained_embeddings is not None and torch.as_tensor(pretrained_embeddings).shape[1] != d_model:
            raise ValueError(
                f"pretrained_embeddings 的维度是 {torch.as_tensor(pretrained_embeddings).shape[1]}，"
                f"而 d_model={d_model}。Transformer 的词向量维度就是 d_model，请让两者相等。"
            )
        # 预训练向量存在 state_dict 里，config 只记结构，保证 Model(**config) 能重建
        self.config = dict(
            vocab_size=vocab_size, num_classes=num_classes, d_model=d_model, num_heads=num_heads,
            num_layers=num_layers, dim_feedforward=dim_feedforward, dropout=dropout, max_len=max_len,
            positions=positions, pooling=pooling, padding_idx=padding_idx, pretrained_embeddings=None,
            freeze_embeddings=freeze_embeddings,
        )
        self.max_len, self.pooling = max_len, pooling
        self.embedding = make_embedding(vocab_size, d_model, padding_idx, pretrained_embeddings, freeze_embeddings)
        self.positions = POSITIONS[positions](d_model, max_len)
        if pooling == "cls":
            self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)  # pre-norm 的残差流没有归一化过，输出前补一次
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False):
        check_token_ids(tokens, self.embedding.num_embeddings)
        B, T = tokens.shape
        if T > self.max_len:
            raise ValueError(
                f"这批句子长 {T} 个词，超过了模型的 max_len={self.max_len}。"
                f"请在组批时截断：make_loader(..., max_len={self.max_len})，或用更大的 max_len 构造模型。"
            )
        # 空句子当作 1 个补齐词来读，否则它的注意力一行全被屏蔽
        lengths = torch.as_tensor(lengths, device=tokens.device).clamp(min=1, max=T)
        x = self.positions(self.embedding(tokens))  # (B, T, C)
        real = length_mask(lengths, T)  # (B, T)，True = 真实词
        if self.pooling == "cls":
            # [CLS] 不加位置编码：它本身就是独一无二的向量，也不占用 max_len
            x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1)  # (B, 1+T, C)
            real = torch.cat([real.new_ones(B, 1), real], dim=1)  # (B, 1+T)
        x = self.dropout(x)

        attentions = []
        for layer in self.layers:
            x, weights = layer(x, key_padding_mask=~real, need_weights=return_attention)
            attentions.append(weights)
        x = self.norm(x)  # (B, T', C)

        if self.pooling == "cls":
            features = x[:, 0]  # (B, C)
        else:
            mask = real.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            features = (x * mask).sum(dim=1) / mask.sum(dim=1)  # (B, C)
        logits = self.head(self.dropout(features))  # (B, num_classes)
        return (logits, attentions) if return_attention else logits
