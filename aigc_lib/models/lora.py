"""LoRA（低秩适配，Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"）：手写一遍。

微调时不改原来的权重 W（d_out×d_in），而是在旁边加一条低秩的支路::

    y = x W^T + b  +  (alpha / r) · dropout(x) A^T B^T        A: (r, d_in)，B: (d_out, r)，r ≪ min(d_in, d_out)

W、b 冻结，只训练 A、B：参数从 d_out·d_in 降到 r·(d_in + d_out)。B 初始化为 0，所以刚加上时
模型的输出与原模型**完全相同**，训练从预训练模型出发；A 用 kaiming-uniform（与 ``nn.Linear`` 和 peft 相同），
这样 B 的梯度一开始就不为 0。训练完可以把支路折回权重：W ← W + (alpha/r)·B A（:func:`merge_lora`），
推理时没有任何额外开销。

    model = GPTLanguageModel(100, d_model=32, num_heads=4, num_layers=2)
    add_lora(model, rank=4, alpha=8)          # 注意力的 q/k/v/out 投影和前馈的两层都加上支路
    count_parameters(model, trainable_only=True)   # 只有 A、B 可训练（aigc_lib.compress.count_parameters）
    merge_lora(model)                         # 折回 nn.Linear，和普通 GPT 一样用

扩大了词表时（第 15 章的对话模型），新 token 的词向量也要能训练：:class:`LoRAGPT` 的
``trainable_rows_from``（:class:`SplitEmbedding`）。

测试把它与 Hugging Face 的 ``peft`` 库对照：同样的权重，输出相同（误差 1e-6 以内）。
"""

from __future__ import annotations

import math

import torch
from torch import nn

# GPT（aigc_lib.models.transformer.GPTBlock）里可以加 LoRA 的线性层，按模块名的最后一段识别：
# 注意力的四个投影、前馈层的两层（nn.Sequential 里的第 0 层和第 2 层）
GPT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "mlp.0", "mlp.2")


class LoRALinear(nn.Module):
    """包住一个 ``nn.Linear``：冻结它，旁边加一条秩为 ``rank`` 的支路。

    参数：
        base: 原来的线性层（权重 (d_out, d_in)），它的参数被设为 ``requires_grad=False``。
        rank: 秩 r ≥ 1。alpha: 缩放分子，支路乘以 alpha / r（换 r 时不用重调学习率）。
        dropout: 只作用在支路的输入上（原来的那条路不受影响）。

    形状：``forward(x (..., d_in)) -> (..., d_out)``，与 ``base`` 相同。

    >>> layer = LoRALinear(nn.Linear(8, 4), rank=2, alpha=4)
    >>> x = torch.randn(3, 8)
    >>> torch.equal(layer(x), layer.base(x))      # B = 0：刚加上时输出不变
    True
    >>> layer.lora_A.shape, layer.lora_B.shape, layer.scale
    (torch.Size([2, 8]), torch.Size([4, 2]), 2.0)
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear 只能包 nn.Linear，收到 {type(base).__name__}。")
        if rank < 1:
            raise ValueError(f"LoRA 的秩 rank 要 >= 1，收到 {rank}；不想加 LoRA 就不要调用 add_lora（rank 0 = 全量微调）。")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        like = dict(device=base.weight.device, dtype=base.weight.dtype)  # 与被包的层同设备、同精度
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **like))   # (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **like))  # (d_out, r)：0，起点就是原模型
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # 与 nn.Linear 的默认初始化相同
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T  # (..., d_in) -> (..., r) -> (..., d_out)
        return self.base(x) + self.scale * update

    def delta_weight(self) -> torch.Tensor:
        """支路等价的权重增量 (alpha/r)·B A，形状 (d_out, d_in)。"""
        return self.scale * self.lora_B @ self.lora_A

    def merged(self) -> nn.Linear:
        """一个新的 ``nn.Linear``：权重 W + (alpha/r)·B A，偏置不变（dropout 只在训练时起作用，推理时相同）。"""
        layer = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                          device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def _matches(name: str, targets) -> bool:
    """模块全名 ``blocks.0.attn.q_proj`` 是否以某个目标名结尾（按 "." 分段比较，"mlp.0" 不会匹配 "mlp.10"）。"""
    return any(name == t or name.endswith("." + t) for t in targets)


def add_lora(model: nn.Module, rank: int, alpha: float = 1.0, targets=GPT_TARGETS, dropout: float = 0.0) -> list[str]:
    """给 ``model`` 里名字匹配 ``targets`` 的每个 ``nn.Linear`` 换上 :class:`LoRALinear`，并冻结其余所有参数。

    ``targets`` 是模块名的后缀（默认 :data:`GPT_TARGETS`：GPT 的注意力投影和前馈两层）。
    原地修改，返回被替换的模块名；一个都没匹配到时报错（多半是名字写错了）。
    """
    replaced = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and _matches(name, targets)]
    if not replaced:
        raise ValueError(f"模型里没有名字以 {list(targets)} 结尾的 nn.Linear，没有加上 LoRA。"
                         "请用 [name for name, _ in model.named_modules()] 看看模块名。")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in replaced:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return replaced


class SplitEmbedding(nn.Module):
    """扩大了词表的 LoRA 微调用的词向量：前 ``n_frozen`` 行（预训练的）冻结，后面新加的行可训练。

    只加 LoRA 支路时，词向量整个被冻结，新 token（``<|end|>`` 等）的向量就停在初值：几个新 token 的
    向量几乎一样，模型分不清它们，学不会什么时候停。peft 用 ``trainable_token_indices``（或把整个
    词向量放进 ``modules_to_save``）解决同一个问题。这里把 (V, C) 矩阵拆成两个参数：``frozen``
    (n_frozen, C)，``requires_grad=False``；``new`` (V - n_frozen, C)，可训练。AdamW 只给 ``new``
    存状态，权重衰减也碰不到冻结的行（若用梯度掩码，AdamW 的权重衰减照样会把冻结的行往 0 拉）。
    ``weight`` 是拼回去的 (V, C) 矩阵，与输出层共用（:class:`TiedHead`）。
    """

    def __init__(self, embedding: nn.Embedding, n_frozen: int) -> None:
        super().__init__()
        weight = embedding.weight.detach()
        if not 0 < n_frozen < weight.shape[0]:
            raise ValueError(f"n_frozen 要在 1 到 {weight.shape[0] - 1} 之间（词表有 {weight.shape[0]} 行），收到 {n_frozen}。")
        self.frozen = nn.Parameter(weight[:n_frozen].clone(), requires_grad=False)
        self.new = nn.Parameter(weight[n_frozen:].clone())

    @property
    def num_embeddings(self) -> int:
        return self.frozen.shape[0] + self.new.shape[0]

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.frozen, self.new])  # (V, C)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(tokens, self.weight)  # (B, T) -> (B, T, C)

    def merged(self) -> nn.Embedding:
        """拼回一个普通的 ``nn.Embedding``（全部行可训练）。"""
        embedding = nn.Embedding(self.num_embeddings, self.frozen.shape[1])
        embedding.weight.data.copy_(self.weight.detach())
        return embedding.to(self.new.device)


class TiedHead(nn.Module):
    """输出层 logits = x · Eᵀ，E 是 :class:`SplitEmbedding` 拼起来的矩阵（与输入词向量共用，自己没有参数）。"""

    def __init__(self, embedding: SplitEmbedding) -> None:
        super().__init__()
        self._embedding = (embedding,)  # 放在元组里：不注册成子模块，state_dict 里就不会多出一份

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self._embedding[0].weight.T  # (B, T, C) -> (B, T, V)


def merge_lora(model: nn.Module) -> nn.Module:
    """把每个 :class:`LoRALinear` 折回一个普通的 ``nn.Linear``（W + (alpha/r)·B A），原地修改并返回 model。
    :class:`LoRAGPT` 拆开的词向量（:class:`SplitEmbedding`）也拼回 ``nn.Embedding``，输出层重新与它共用。

    折回后的模型与原来的模型家族一模一样（state_dict 的键也一样），推理时没有额外的计算。
    折回的层的参数恢复为可训练（其余参数的 requires_grad 不变）。
    """
    names = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    if isinstance(getattr(model, "embedding", None), SplitEmbedding):
        model.embedding = model.embedding.merged()
        model.head = nn.Linear(model.embedding.embedding_dim, model.embedding.num_embeddings, bias=False)
        model.head.weight = model.embedding.weight
    return model


from .transformer import GPTLanguageModel  # noqa: E402  （放在这里：上面的 LoRA 本身不依赖任何模型家族）


class LoRAGPT(GPTLanguageModel):
    """:class:`~aigc_lib.models.GPTLanguageModel` 加上 LoRA：构造参数多了 ``lora_rank``（0 表示不加，
    即全量微调）、``lora_alpha``、``lora_dropout``、``lora_targets``，它们也记在 ``config`` 里，
    所以 ``LoRAGPT(**model.config)`` 能重建同样结构的模型（读回检查点时就是这样做的）。

    调用方式与 GPT 相同：``model(tokens (B, T)) -> logits (B, T, V)``。

    ``trainable_rows_from=N`` > 0（且 ``lora_rank`` > 0）时，词向量的第 N 行起（扩大词表时新加的 token）
    也训练，前 N 行冻结（:class:`SplitEmbedding`）；需要 ``tie_weights=True``。
    """

    def __init__(self, *args, lora_rank: int = 0, lora_alpha: float = 1.0, lora_dropout: float = 0.0,
                 lora_targets=GPT_TARGETS, trainable_rows_from: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config = {**self.config, "lora_rank": lora_rank, "lora_alpha": lora_alpha,
                       "lora_dropout": lora_dropout, "lora_targets": list(lora_targets),
                       "trainable_rows_from": trainable_rows_from}
        if lora_rank:
            add_lora(self, lora_rank, lora_alpha, targets=lora_targets, dropout=lora_dropout)
            if trainable_rows_from:
                if not self.config["tie_weights"]:
                    raise ValueError("trainable_rows_from 只用于输入、输出词向量共用的 GPT（tie_weights=True）。")
                self.embedding = SplitEmbedding(self.embedding, trainable_rows_from)
                self.head = TiedHead(self.embedding)

    def load_base_weights(self, state: dict) -> None:
        """读入一个普通 GPT 的 state_dict（加了 LoRA 的层的键多一段 ``.base``，A、B 保持初始值；
        拆开的词向量从 ``embedding.weight`` 里切出冻结的行和新行）。"""
        own = self.state_dict()
        split = self.config["trainable_rows_from"]
        mapped = {}
        for key in own:
            if key.endswith(("lora_A", "lora_B")):
                mapped[key] = own[key]
            elif key == "embedding.frozen":
                mapped[key] = state["embedding.weight"][:split]
            elif key == "embedding.new":
                mapped[key] = state["embedding.weight"][split:]
            else:
                mapped[key] = state[key.replace(".base.", ".")]
        self.load_state_dict(mapped)
