"""循环网络家族：手写的 RNN 单元，RNN / LSTM / GRU 文本分类器，以及课程大纲里 Keras 例子的 PyTorch 版。

所有分类器的调用方式相同::

    logits = model(tokens, lengths)      # tokens (B, T) long, lengths (B,) long -> (B, num_classes)

``tokens`` 右侧用 padding_idx（默认 0）补齐，``lengths`` 是每句的真实长度（见 ``aigc_lib.data.batching``）。
补齐的位置不会进入循环状态：前向时用 ``pack_padded_sequence`` 把它们跳过，所以同一句话无论补了多少个
0、和谁放在一批，输出都一样。

每个模型都有 ``.config``（构造参数组成的普通 dict），保存检查点时一起存下，之后
``type(model)(**config)`` 就能重建同样的结构，再 ``load_state_dict``。
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .layers import check_lengths, check_token_ids, length_mask, make_embedding


# ---------------------------------------------------------------------------
# 手写的 RNN 单元（教学用，与 nn.RNN 对照）
# ---------------------------------------------------------------------------


class RNNCell(nn.Module):
    """手写的 Elman RNN 单元，走一步：``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``。

    参数名和初始化都与 ``nn.RNN`` 第 0 层一致（去掉 ``_l0`` 后缀），所以可以把 ``nn.RNN``
    的权重原样搬过来对照：``cell.load_from(nn_rnn)``。

    参数：
        input_size: 输入向量维度 I。
        hidden_size: 隐状态维度 H。

    形状：``cell(x (B, I), h (B, H) 或 None) -> h' (B, H)``。整句用 :func:`unroll`。

    >>> cell = RNNCell(4, 3)
    >>> cell(torch.randn(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))  # (H, I)
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))  # (H, H)
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        # 与 nn.RNN 相同：所有参数 ~ U(-1/sqrt(H), 1/sqrt(H))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.size(0), self.hidden_size)  # (B, H)
        # x @ W^T 就是 W x 的批量写法：(B, I) @ (I, H) -> (B, H)
        return torch.tanh(x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh)

    @torch.no_grad()
    def load_from(self, rnn: nn.RNN, layer: int = 0) -> "RNNCell":
        """从 ``nn.RNN``（tanh、有偏置、单向）的第 ``layer`` 层复制权重，返回自己。"""
        if rnn.nonlinearity != "tanh" or not rnn.bias or rnn.bidirectional:
            raise ValueError(
                "RNNCell.load_from 只支持 nn.RNN(nonlinearity='tanh', bias=True, bidirectional=False)；"
                "请用这样的 nn.RNN 做对照。"
            )
        if (rnn.input_size if layer == 0 else rnn.hidden_size) != self.input_size or rnn.hidden_size != self.hidden_size:
            raise ValueError(
                f"RNNCell(input_size={self.input_size}, hidden_size={self.hidden_size}) 与 nn.RNN 第 {layer} 层的"
                f"大小（input_size={rnn.input_size}, hidden_size={rnn.hidden_size}）不一致，请用相同的维度构造。"
            )
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(self, name).copy_(getattr(rnn, f"{name}_l{layer}"))
        return self


def unroll(cell: nn.Module, inputs: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """把单元沿时间展开：对 t = 0..T-1 依次 ``h = cell(x_t, h)``。

    参数：
        cell: 走一步的单元，``cell(x (B, I), h (B, H)) -> h (B, H)``，例如 :class:`RNNCell`。
        inputs: (B, T, I)，batch_first，与 ``nn.RNN(batch_first=True)`` 相同。
        h0: 初始隐状态 (B, H)，默认全 0。

    返回 ``(outputs (B, T, H), h_last (B, H))``，与 ``nn.RNN`` 的 ``(output, h_n[0])`` 对应。
    """
    h, outputs = h0, []
    for t in range(inputs.size(1)):
        h = cell(inputs[:, t], h)  # (B, H)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h  # (B, T, H), (B, H)


# ---------------------------------------------------------------------------
# RNN / LSTM / GRU 分类器
# ---------------------------------------------------------------------------

RECURRENT_LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("last", "mean", "max")


class RNNClassifier(nn.Module):
    """词向量 -> RNN / LSTM / GRU -> 池化 -> 线性层，输出每个类别的 logit。

    参数：
        vocab_size: 词表大小 V（``len(vocab)``）。
        num_classes: 类别数，默认 2（正面/负面）。输出 logit，配合 ``nn.CrossEntropyLoss``。
        kind: ``"rnn"`` | ``"lstm"`` | ``"gru"``。
        embed_dim, hidden_dim: 词向量维度 E、隐状态维度 H。
        num_layers: 堆叠层数；大于 1 时层与层之间也加 dropout。
        bidirectional: 是否双向（再从右往左读一遍，特征维度变成 2H）。
        dropout: 词向量之后、分类层之前（以及层与层之间）的 dropout 比例。
        pooling: 怎样把一句话变成一个向量：
            ``"last"`` 最后一个真实词处的隐状态（双向时拼上反向读到第一个词处的状态）；
            ``"mean"`` / ``"max"`` 对所有真实词位置的输出取平均 / 最大（不算补齐位置）。
        padding_idx: 补齐用的词编号，默认 0。
        pretrained_embeddings: 可选的预训练词向量 (V, E)；给了它 embed_dim 就取它的维度。
        freeze_embeddings: 是否冻结词向量（不训练）。
        packed: 默认 True，用 pack_padded_sequence 让循环层跳过补齐位置。设为 False 时补齐的 0
            也会被一步步读进隐状态（Keras 不开 ``mask_zero`` 时就是这样），只为在课上对比这个差别。

    形状：``model(tokens (B, T), lengths (B,)) -> logits (B, num_classes)``。

    >>> model = RNNClassifier(vocab_size=100, kind="gru", bidirectional=True)
    >>> model(torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1])).shape
    torch.Size([2, 2])
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        kind: str = "rnn",
        embed_dim: int = 128,
        hidden_dim: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        padding_idx: int | None = 0,
        pretrained_embeddings: torch.Tensor | None = None,
        freeze_embeddings: bool = False,
        packed: bool = True,
    ) -> None:
        super().__init__()
        if kind not in RECURRENT_LAYERS:
            raise ValueError(f"RNNClassifier：kind={kind!r} 无效，只能是 {' | '.join(RECURRENT_LAYERS)}。")
        if pooling not in POOLINGS:
            raise ValueError(f"RNNClassifier：pooling={pooling!r} 无效，只能是 {' | '.join(POOLINGS)}。")
        if pretrained_embeddings is not None:
            embed_dim = int(torch.as_tensor(pretrained_embeddings).shape[-1])
        # 预训练向量本身存在 state_dict 里，config 只记结构，保证 Model(**config) 能重建
        self.config = dict(
            vocab_size=vocab_size, num_classes=num_classes, kind=kind, embed_dim=embed_dim,
            hidden_dim=hidden_dim, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
            pooling=pooling, padding_idx=padding_idx, pretrained_embeddings=None,
            freeze_embeddings=freeze_embeddings, packed=packed,
        )
        self.kind, self.pooling, self.packed = kind, pooling, packed
        self.num_layers, self.num_directions = num_layers, 2 if bidirectional else 1

        self.embedding = make_embedding(vocab_size, embed_dim, padding_idx, pretrained_embeddings, freeze_embeddings)
        self.dropout = nn.Dropout(dropout)
        self.rnn = RECURRENT_LAYERS[kind](
            embed_dim, hidden_dim, num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # 单层时 PyTorch 的 dropout 参数无效还会警告
        )
        self.head = nn.Linear(self.num_directions * hidden_dim, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        check_token_ids(tokens, self.embedding.num_embeddings)
        B, T = tokens.shape
        lengths = torch.as_tensor(lengths)
        lengths_cpu = lengths.cpu()  # pack 本来就需要 CPU 上的长度，在这里检查不多花一次同步
        check_lengths(lengths_cpu, T)  # 空句子（长度 0）报错，见 models/layers.py
        x = self.dropout(self.embedding(tokens))  # (B, T, E)

        if self.packed:
            # enforce_sorted=False：批内不必按长度排序，输出仍按原顺序
            packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
            packed_out, state = self.rnn(packed)
        else:
            out, state = self.rnn(x)  # (B, T, D*H)，补齐位置也被读进了状态
        h_n = state[0] if self.kind == "lstm" else state  # LSTM 返回 (h_n, c_n)；(L*D, B, H)

        if self.pooling == "last":
            # h_n 按 (层, 方向) 排列；取最后一层的各个方向，拼成 (B, D*H)
            last = h_n.view(self.num_layers, self.num_directions, B, -1)[-1]  # (D, B, H)
            features = last.transpose(0, 1).reshape(B, -1)  # (B, D*H)
        else:
            if self.packed:
                out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=T)  # (B, T, D*H)
            mask = length_mask(lengths.to(out.device), T).unsqueeze(-1)  # (B, T, 1)
            if self.pooling == "mean":
                features = (out * mask).sum(dim=1) / lengths.to(out.device, out.dtype).unsqueeze(-1)  # (B, D*H)
            else:
                features = out.masked_fill(~mask, float("-inf")).max(dim=1).values  # (B, D*H)
        return self.head(self.dropout(features))  # (B, num_classes)


# ---------------------------------------------------------------------------
# 课程大纲 4.2 的 Keras 例子，用 PyTorch 重写
# ---------------------------------------------------------------------------


class KerasStyleLSTM(nn.Module):
    """课程大纲里的 Keras 模型，逐层对应地用 PyTorch 写出来::

        # Keras 原文
        model = Sequential([Embedding(10000, 64), LSTM(64),
                            Dense(64, activation="relu"), Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy")

    对应关系：Embedding(10000, 64) -> ``nn.Embedding``；LSTM(64) 只返回最后的隐状态 -> ``nn.LSTM``
    取 h_n；Dense(64, relu) -> ``nn.Linear`` + ReLU；Dense(1, sigmoid) -> ``nn.Linear(64, 1)``，
    **但不在模型里做 sigmoid**。

    为什么输出 logit、用 ``nn.BCEWithLogitsLoss``，而不是 sigmoid + ``nn.BCELoss``：
      * 数值稳定：sigmoid 在 float32 里对很大的 logit 会直接得到 1.0，log(1 - 1.0) = log(0)，
        BCELoss 只好把它截到 -100，梯度也随之消失；BCEWithLogitsLoss 把两步合成
        ``max(z, 0) - z*y + log(1 + exp(-|z|))``，对任何 logit 都精确。
      * 混合精度：在 CUDA 的 autocast 下 PyTorch 直接拒绝 BCELoss（报 "unsafe to autocast"），
        BCEWithLogitsLoss 则没有问题。
      * 推理时要概率，自己做一次 ``torch.sigmoid(logits)``；判正负只需 ``logits > 0``。

    另一处不同：Keras 的 Embedding 默认 ``mask_zero=False``，LSTM 会把补齐的 0 也读进去；
    这里用 pack_padded_sequence 跳过补齐位置，相当于 Keras 的 ``mask_zero=True``。

    参数：vocab_size=10000, embed_dim=64, hidden_dim=64, dense_dim=64, padding_idx=0。
    形状与其他分类器一样是 ``(B, num_classes)``，这里只有 1 个类别 logit：
    ``model(tokens (B, T), lengths (B,)) -> logits (B, 1)``（与 Keras 的 Dense(1) 输出同形）。
    标签要是 float（0.0/1.0），可用 ``make_loader(..., label_dtype=torch.float32)`` 得到 (B,)，
    算损失时取 ``logits[:, 0]``；判正负用 ``logits[:, 0] > 0``。

    >>> model = KerasStyleLSTM()
    >>> logits = model(torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1]))
    >>> logits.shape
    torch.Size([2, 1])
    >>> loss = nn.BCEWithLogitsLoss()(logits[:, 0], torch.tensor([1.0, 0.0]))
    """

    def __init__(
        self,
        vocab_size: int = 10000,
        embed_dim: int = 64,
        hidden_dim: int = 64,
        dense_dim: int = 64,
        padding_idx: int | None = 0,
    ) -> None:
        super().__init__()
        self.config = dict(
            vocab_size=vocab_size, embed_dim=embed_dim, hidden_dim=hidden_dim,
            dense_dim=dense_dim, padding_idx=padding_idx,
        )
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.dense = nn.Linear(hidden_dim, dense_dim)
        self.out = nn.Linear(dense_dim, 1)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        check_token_ids(tokens, self.embedding.num_embeddings)
        lengths_cpu = torch.as_tensor(lengths).cpu()
        check_lengths(lengths_cpu, tokens.size(1))
        x = self.embedding(tokens)  # (B, T, E)
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n: (1, B, H)，每句最后一个真实词处的隐状态
        hidden = torch.relu(self.dense(h_n[-1]))  # (B, dense_dim)
        return self.out(hidden)  # (B, 1) logit，与 Keras 的 Dense(1) 同形；概率 = torch.sigmoid(logit)


# ---------------------------------------------------------------------------
# LSTM 语言模型（第 09 章）
# ---------------------------------------------------------------------------


class LSTMState:
    """LSTM 语言模型生成时带着走的状态 (h, c)，与 GPT 的 KVCache 用法相同：``model(tokens, cache=state)``。

    RNN 天生就"带缓存"：之前读过的所有字都压缩在固定大小的 (h, c) 里，每步的计算量不随长度增长。
    属性：``hidden`` 为 None（还没读过字）或 ``(h, c)``，各 (层数, B, H)；``length`` 已读过的字数。
    """

    def __init__(self, batch_size: int = 1) -> None:
        self.batch_size, self.length = batch_size, 0
        self.hidden: tuple[torch.Tensor, torch.Tensor] | None = None

    def reorder(self, index: torch.Tensor) -> None:
        """按 ``index`` (B',) 重排或复制批次维（束搜索里每个新束继承父束的状态）。"""
        if self.hidden is not None:
            self.hidden = tuple(s.index_select(1, index) for s in self.hidden)
        self.batch_size = len(index)


class LSTMLanguageModel(nn.Module):
    """LSTM 语言模型：词向量 -> 多层 LSTM -> （投影）-> 输出层，给出每个位置上"下一个字"的 logits。

    参数：
        vocab_size: 词表大小 V。
        embed_dim: 词向量维度 E；hidden_dim: LSTM 隐状态维度 H；num_layers: 层数。
        dropout: 词向量后、层与层之间、输出层前的 dropout。
        tie_weights: 输出层与词向量共用 V×E 的矩阵（Press & Wolf, 2017）。H != E 时先用一个 H×E 的
            线性层把隐状态投影到 E 维（与 GPT 的 ``tie_weights`` 同一个意思）。

    形状与 :class:`~aigc_lib.models.transformer.GPTLanguageModel` 相同：
    ``model(tokens (B, T), cache=None, last_only=False) -> logits (B, T, V)``；``cache`` 是
    :meth:`new_cache` 给的 :class:`LSTMState`，前向时从它的状态接着读，读完把新状态存回去。
    ``context_len`` 为 None：LSTM 没有位置编码，能读任意长的文本。

    >>> model = LSTMLanguageModel(vocab_size=50, embed_dim=16, hidden_dim=32).eval()
    >>> tokens = torch.randint(0, 50, (2, 10))
    >>> model(tokens).shape
    torch.Size([2, 10, 50])
    >>> state = model.new_cache(batch_size=2)
    >>> _ = model(tokens[:, :9], cache=state)
    >>> torch.allclose(model(tokens[:, 9:], cache=state)[:, -1], model(tokens)[:, -1], atol=1e-5)
    True
    """

    context_len = None

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 2,
        dropout: float = 0.1,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        self.config = dict(vocab_size=vocab_size, embed_dim=embed_dim, hidden_dim=hidden_dim,
                           num_layers=num_layers, dropout=dropout, tie_weights=tie_weights)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.proj = nn.Linear(hidden_dim, embed_dim) if tie_weights and hidden_dim != embed_dim else None
        self.head = nn.Linear(embed_dim if tie_weights else hidden_dim, vocab_size)
        if tie_weights:
            self.head.weight = self.embedding.weight  # 同一个 Parameter (V, E)
        # 词向量保持 PyTorch 默认的 N(0, 1)：LSTM 的输入权重只有 ±1/√H，词向量再小（如 GPT 的 0.02），
        # 输入几乎影响不到门，词向量也几乎收不到梯度，训练会慢得多；共用时输出 logits 的尺度也正合适
        nn.init.zeros_(self.head.bias)

    def new_cache(self, batch_size: int = 1) -> LSTMState:
        return LSTMState(batch_size)

    def forward(self, tokens: torch.Tensor, cache: LSTMState | None = None, last_only: bool = False) -> torch.Tensor:
        check_token_ids(tokens, self.embedding.num_embeddings)
        if cache is not None and cache.batch_size != tokens.size(0):
            raise ValueError(f"状态的批大小是 {cache.batch_size}，输入却有 {tokens.size(0)} 条序列。"
                             f"请用 model.new_cache({tokens.size(0)})。")
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        out, state = self.lstm(x, cache.hidden if cache is not None else None)  # (B, T, H)
        if cache is not None:
            cache.hidden, cache.length = state, cache.length + tokens.size(1)
        if last_only:
            out = out[:, -1:]  # (B, 1, H)
        out = self.dropout(out)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return self.head(out)  # (B, T, V)
