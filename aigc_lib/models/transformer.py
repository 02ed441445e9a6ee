"""Transformer 家族：缩放点积注意力、多头注意力、位置编码、编码器层和文本分类器。

从上往下读：
  1. ``scaled_dot_product_attention_explicit``：把 softmax(QK^T/sqrt(d))V 一步步写出来；
  2. ``MultiHeadAttention``：两条路径给出相同的数——手写路径（可返回注意力权重，用来画热力图）
     和 PyTorch 融合的 ``F.scaled_dot_product_attention``（默认，快）；
  3. 位置编码：正弦（固定公式，可画图）和可学习的两种；
  4. ``TransformerEncoderLayer``（pre-norm）和 ``TransformerClassifier``；
  5. ``GPTLanguageModel``：因果注意力的解码器语言模型，带 ``KVCache``（第 09 章）。

分类器的调用方式与 RNN 家族相同：``model(tokens (B, T), lengths (B,)) -> logits (B, num_classes)``；
画热力图用的注意力权重另由 ``model.attention_weights(tokens, lengths)`` 给出。

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
from torch.utils.checkpoint import checkpoint

from .layers import check_lengths, check_token_ids, length_mask, make_embedding


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


def sinusoidal_positions(context_len: int, d_model: int) -> torch.Tensor:
    """正弦位置编码表 (context_len, d_model)（Vaswani et al., 2017）::

        PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
        PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))

    低维变化快、高维变化慢，像一组不同频率的时钟；PE[pos+k] 可以由 PE[pos] 经过一个只与 k 有关的旋转得到，模型因此容易学到相对位置。
    直接画 ``plt.imshow(sinusoidal_positions(100, 64).T)`` 就能看到条纹。
    """
    position = torch.arange(context_len, dtype=torch.float32).unsqueeze(1)  # (context_len, 1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))  # (ceil(C/2),)
    table = torch.zeros(context_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]  # d_model 为奇数时 cos 少一列
    return table


def _check_positions(start: int, length: int, context_len: int) -> None:
    if start + length > context_len:
        raise ValueError(
            f"位置 {start}..{start + length - 1} 超出了位置编码的 context_len={context_len}。"
            "请增大模型的 context_len，或在组批时截断：make_loader(..., max_tokens=...)。"
        )


class SinusoidalPositions(nn.Module):
    """把正弦位置编码加到输入上：``x (B, T, C) -> x + PE[start:start+T]``。没有可训练参数。

    ``start`` 是第一个位置的编号，生成时带 KV 缓存逐个喂词会用到。
    """

    def __init__(self, d_model: int, context_len: int = 512) -> None:
        super().__init__()
        self.context_len = context_len
        # persistent=False：表格由公式决定，不存进检查点，换 context_len 也能加载
        self.register_buffer("table", sinusoidal_positions(context_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        _check_positions(start, x.size(1), self.context_len)
        return x + self.table[start : start + x.size(1)].to(x.dtype)  # (B, T, C)


class LearnedPositions(nn.Module):
    """可学习的位置编码（BERT、GPT 的做法）：每个位置一个向量，和词向量一起训练。

    ``x (B, T, C) -> x + P[start:start+T]``；只认识训练时见过的 context_len 个位置。
    """

    def __init__(self, d_model: int, context_len: int = 512) -> None:
        super().__init__()
        self.context_len = context_len
        self.table = nn.Embedding(context_len, d_model)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        _check_positions(start, x.size(1), self.context_len)
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
        context_len: 最长能处理的句子长度（位置编码表的大小）；更长的句子请在组批时截断。
        positions: ``"sinusoidal"``（固定公式）或 ``"learned"``（可学习）。
        pooling: ``"mean"`` 对真实词位置取平均；``"cls"`` 在句首加一个可学习的 [CLS] 向量，
            取它最后的输出（BERT 的做法）。此时注意力权重是 (T+1)×(T+1)，第 0 行/列是 [CLS]。
        padding_idx: 补齐用的词编号，默认 0。
        pretrained_embeddings: 可选的预训练词向量 (V, d_model)。
        freeze_embeddings: 是否冻结词向量。

    形状：``model(tokens (B, T), lengths (B,)) -> logits (B, num_classes)``；
    ``model.attention_weights(tokens, lengths)`` 返回每层的注意力权重 ``[(B, H, T, T), ...]``，
    用来画热力图（走手写注意力路径，稍慢）。

    >>> model = TransformerClassifier(vocab_size=100, d_model=32, num_heads=4).eval()
    >>> tokens, lengths = torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1])
    >>> model(tokens, lengths).shape
    torch.Size([2, 2])
    >>> attn = model.attention_weights(tokens, lengths)
    >>> len(attn), attn[0].shape
    (2, torch.Size([2, 4, 3, 3]))
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
        context_len: int = 512,
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
        if pretrained_embeddings is not None and torch.as_tensor(pretrained_embeddings).shape[-1] != d_model:
            raise ValueError(
                f"pretrained_embeddings 的维度是 {torch.as_tensor(pretrained_embeddings).shape[-1]}，"
                f"而 d_model={d_model}。Transformer 的词向量维度就是 d_model，请让两者相等。"
            )
        # 预训练向量存在 state_dict 里，config 只记结构，保证 Model(**config) 能重建
        self.config = dict(
            vocab_size=vocab_size, num_classes=num_classes, d_model=d_model, num_heads=num_heads,
            num_layers=num_layers, dim_feedforward=dim_feedforward, dropout=dropout, context_len=context_len,
            positions=positions, pooling=pooling, padding_idx=padding_idx, pretrained_embeddings=None,
            freeze_embeddings=freeze_embeddings,
        )
        self.context_len, self.pooling = context_len, pooling
        self.embedding = make_embedding(vocab_size, d_model, padding_idx, pretrained_embeddings, freeze_embeddings)
        self.positions = POSITIONS[positions](d_model, context_len)
        if pooling == "cls":
            self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)  # pre-norm 的残差流没有归一化过，输出前补一次
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        features, _ = self.encode(tokens, lengths, need_weights=False)  # (B, C)
        return self.head(self.dropout(features))  # (B, num_classes)

    def attention_weights(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """每层的注意力权重 ``[(B, H, T', T'), ...]``（``pooling="cls"`` 时 T' = T+1，第 0 行/列是 [CLS]）。

        与 ``forward`` 走同一条路，只是注意力用手写路径算出权重（结果与融合路径相同，稍慢）。
        只用来看、画图：请在 ``torch.no_grad()`` 和 ``model.eval()`` 下调用。
        """
        _, attentions = self.encode(tokens, lengths, need_weights=True)
        return attentions

    def encode(
        self, tokens: torch.Tensor, lengths: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """编码并池化：返回 ``(features (B, C), 每层的注意力权重)``；``need_weights=False`` 时权重列表为空。"""
        check_token_ids(tokens, self.embedding.num_embeddings)
        B, T = tokens.shape
        if T > self.context_len:
            raise ValueError(
                f"这批句子长 {T} 个词，超过了模型的 context_len={self.context_len}。"
                f"请在组批时截断：make_loader(..., max_tokens={self.context_len})，或用更大的 context_len 构造模型。"
            )
        lengths = torch.as_tensor(lengths, device=tokens.device)
        check_lengths(lengths, T)  # 空句子（长度 0）报错，见 models/layers.py
        x = self.positions(self.embedding(tokens))  # (B, T, C)
        real = length_mask(lengths, T)  # (B, T)，True = 真实词
        if self.pooling == "cls":
            # [CLS] 不加位置编码：它本身就是独一无二的向量，也不占用 context_len
            x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1)  # (B, 1+T, C)
            real = torch.cat([real.new_ones(B, 1), real], dim=1)  # (B, 1+T)
        x = self.dropout(x)

        attentions = []
        for layer in self.layers:
            x, weights = layer(x, key_padding_mask=~real, need_weights=need_weights)
            if need_weights:
                attentions.append(weights)
        x = self.norm(x)  # (B, T', C)

        if self.pooling == "cls":
            return x[:, 0], attentions  # (B, C)
        mask = real.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return (x * mask).sum(dim=1) / mask.sum(dim=1), attentions  # (B, C)


# ---------------------------------------------------------------------------
# 5. GPT 式解码器（语言模型）与 KV 缓存
# ---------------------------------------------------------------------------
#
# 和上面的编码器只差三处：注意力是因果的（每个位置只看自己和之前的字）；输出层给出每个位置上
# "下一个字"的 logits (B, T, V)；生成时可以带 KV 缓存。调用方式与 LSTMLanguageModel 相同：
#
#     logits = model(tokens)                      # 训练：tokens (B, T) -> (B, T, V)
#     cache = model.new_cache(batch_size=1)       # 生成：提示只算一遍……
#     logits = model(prompt, cache=cache)         # (1, T0, V)，缓存里存下每层的 k、v
#     logits = model(next_token, cache=cache)     # ……之后每步只喂一个新字 (1, 1) -> (1, 1, V)


class KVCache:
    """生成时缓存每一层的键和值，让每个新字只算自己的 q、k、v，再对缓存里所有的 k、v 做注意力。

    不带缓存时，生成第 t 个字要把前面 t-1 个字重新过一遍整个模型，生成 n 个字的计算量约为 n²/2 个位置；
    带缓存时每步只算 1 个位置，总共 n 个。代价是显存/内存：每层每个位置存一对 (k, v)。

    内存按 ``context_len`` 预先分配（第一次写入时按 k 的 dtype 和设备分配），形状
    ``(层数 L, B, H, context_len, hs)``；新位置写在 ``[length, length + T)``。这比每步 ``torch.cat``
    省去了反复拷贝整块缓存。

    参数：num_layers、batch_size、num_heads、head_dim（每头维度 hs）、context_len（最多缓存几个位置）。
    属性：``length`` 已缓存的位置数（也是下一个位置的编号）。
    """

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, head_dim: int, context_len: int) -> None:
        self.shape = (num_layers, batch_size, num_heads, context_len, head_dim)
        self.context_len, self.length = context_len, 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """把第 ``layer`` 层新位置的 k、v (B, H, T, hs) 写进缓存，返回这一层目前为止全部的 k、v (B, H, length+T, hs)。

        写入不改变 ``length``：同一步里每一层都要写在同样的位置，所有层写完后由模型调用 :meth:`advance`。
        """
        if self.keys is None:
            self.keys = k.new_zeros(self.shape)  # (L, B, H, context_len, hs)
            self.values = v.new_zeros(self.shape)
        start, end = self.length, self.length + k.size(2)
        if end > self.context_len:
            raise ValueError(f"KV 缓存只能存 {self.context_len} 个位置，现在要写到第 {end} 个。请新建一个更大的缓存。")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]  # (B, H, end, hs)

    def advance(self, steps: int) -> None:
        self.length += steps

    def reorder(self, index: torch.Tensor) -> None:
        """按 ``index`` (B',) 重排或复制批次维：束搜索里每个新束继承它父束的缓存。"""
        if self.keys is not None:
            self.keys = self.keys.index_select(1, index)
            self.values = self.values.index_select(1, index)
        self.shape = (self.shape[0], len(index), *self.shape[2:])


class GPTBlock(nn.Module):
    """GPT 的一层（pre-norm）::

        x = x + Dropout(CausalAttention(LN(x)))
        x = x + Dropout(W2 GELU(W1 LN(x)))

    注意力借用 :class:`MultiHeadAttention` 的投影层和 ``attend``（默认走融合内核
    ``F.scaled_dot_product_attention``）；这里自己算 q、k、v，是为了在注意力之前把缓存里的 k、v 拼上。

    ``forward(x (B, T, C), cache=None, layer=0) -> x (B, T, C)``。
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, dim_feedforward), nn.GELU(), nn.Linear(dim_feedforward, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        attn = self.attn
        h = self.norm1(x)
        q = attn.split_heads(attn.q_proj(h))  # (B, H, T, hs)
        k = attn.split_heads(attn.k_proj(h))  # (B, H, T, hs)
        v = attn.split_heads(attn.v_proj(h))  # (B, H, T, hs)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, length+T, hs)：前面所有位置的键和值
        # 只有 1 个查询时它本来就能看见所有缓存的键，不需要掩码；否则按右下角对齐的因果掩码
        out, _ = attn.attend(q, k, v, causal=q.size(2) > 1)  # (B, H, T, hs)
        x = x + self.dropout(attn.out_proj(attn.merge_heads(out)))  # (B, T, C)
        x = x + self.dropout(self.mlp(self.norm2(x)))  # (B, T, C)
        return x


class GPTLanguageModel(nn.Module):
    """GPT 式的字符（或词）语言模型：词向量 + 可学习位置编码 -> L 层因果 Transformer -> LayerNorm -> 输出层。

    参数：
        vocab_size: 词表大小 V。
        d_model: 宽度 C；num_heads: 头数 H（整除 C）；num_layers: 层数 L。
        dim_feedforward: 前馈层中间维度，默认 4C（GPT-2 的做法）。
        dropout: 词向量后、注意力权重、残差分支上的 dropout。
        context_len: 上下文长度（位置编码表的大小），训练片段不能比它长；生成时超过它就只看最后 context_len 个字。
        tie_weights: 输出层与词向量共用一个矩阵（V×C）：参数少了 V·C 个，小语料上通常还更好。
        checkpoint_activations: 激活检查点（第 14 章）。打开后，训练时每层只存它的输入 x (B, T, C)，
            层内的中间结果（注意力、MLP 的激活）在反向传播时重算一遍：激活内存从约 16·BTC 个数/层（不用 dropout 时）
            降到 BTC 个数/层，代价是反向时把各层的前向再算一遍（各层的计算量多约 1/3：
            前向 1 份、反向约 2 份；输出层和损失不重算）。dropout 照常可用：
            ``torch.utils.checkpoint`` 默认在重算前恢复随机数状态，重算出的 dropout 掩码与第一次相同，
            梯度与不打开时完全一样。也可以训练前直接改属性 ``model.checkpoint_activations = True``。
            它不是权重，检查点里没有它，打开与否都能互相加载。

    初始化（与 GPT-2 / nanoGPT 相同）：所有 Linear 和 Embedding 的权重 ~ N(0, 0.02²)、偏置为 0；
    每层写回残差流的两个投影（注意力的 out_proj 和前馈的第二层）再缩小为 N(0, (0.02/√(2L))²)——
    残差流是 2L 个分支相加，这样加完的方差不随层数增长。

    形状：``model(tokens (B, T), cache=None, last_only=False) -> logits (B, T, V)``；``last_only=True``
    时只算最后一个位置的 logits (B, 1, V)（生成时只需要它，输出层是 V×C 的大矩阵乘法）。
    ``cache`` 是 :meth:`new_cache` 给的 :class:`KVCache`：前向时把新位置的 k、v 存进去，新位置的
    编号从 ``cache.length`` 开始。用 ``fit`` 训练时批次是 ``(x, y)``，默认损失 flat_cross_entropy。

    >>> model = GPTLanguageModel(vocab_size=50, d_model=32, num_heads=4, num_layers=2, context_len=16).eval()
    >>> tokens = torch.randint(0, 50, (2, 10))
    >>> model(tokens).shape
    torch.Size([2, 10, 50])
    >>> cache = model.new_cache(batch_size=2)
    >>> _ = model(tokens[:, :9], cache=cache)
    >>> torch.allclose(model(tokens[:, 9:], cache=cache)[:, -1], model(tokens)[:, -1], atol=1e-5)
    True
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 4,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        context_len: int = 256,
        tie_weights: bool = True,
        checkpoint_activations: bool = False,
    ) -> None:
        super().__init__()
        dim_feedforward = dim_feedforward or 4 * d_model
        self.config = dict(
            vocab_size=vocab_size, d_model=d_model, num_heads=num_heads, num_layers=num_layers,
            dim_feedforward=dim_feedforward, dropout=dropout, context_len=context_len, tie_weights=tie_weights,
        )
        self.context_len, self.num_layers, self.num_heads = context_len, num_layers, num_heads
        self.checkpoint_activations = checkpoint_activations
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = LearnedPositions(d_model, context_len)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(GPTBlock(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)  # pre-norm 的残差流从没被归一化过，输出前补一次
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.embedding.weight  # 同一个 Parameter：梯度来自输入和输出两头
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * num_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp[2].weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """一个空的 KV 缓存，最多存 context_len 个位置。"""
        head_dim = self.config["d_model"] // self.num_heads
        return KVCache(self.num_layers, batch_size, self.num_heads, head_dim, self.context_len)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        check_token_ids(tokens, self.embedding.num_embeddings)
        B, T = tokens.shape
        start = 0 if cache is None else cache.length
        if start + T > self.context_len:
            where = f"缓存里已有 {start} 个位置，再加 {T} 个" if cache is not None else f"这批序列长 {T}"
            raise ValueError(
                f"{where}，超过了模型的上下文长度 context_len={self.context_len}。训练时请把片段切短"
                f"（片段长度 <= {self.context_len}）；生成时用 aigc_lib.generation.generate，它只保留最后 context_len 个字。"
            )
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"缓存的批大小是 {cache.batch_size}，输入却有 {B} 条序列。请用 model.new_cache({B})。")
        x = self.dropout(self.positions(self.embedding(tokens), start=start))  # (B, T, C)
        # 激活检查点只在真要反向传播时才有意义：评估、生成（no_grad / 带缓存）照常走
        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled() and cache is None
        for layer, block in enumerate(self.blocks):
            if recompute:
                # use_reentrant=False 是 PyTorch 推荐的实现；随机数状态默认保存并在重算前恢复
                x = checkpoint(block, x, use_reentrant=False)  # (B, T, C)，层内的中间结果不保存
            else:
                x = block(x, cache, layer)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)：生成时只需要最后一个位置，省下 (T-1) 次 C×V 的乘法
        return self.head(x)  # (B, T, V)
