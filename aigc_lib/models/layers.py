"""各个模型家族共用的小零件：长度掩码、词向量层的构造、输入检查。

RNN、Transformer、标注器、seq2seq 都从这里导入，同一件事只写一遍。

输入检查的约定（整个 ``aigc_lib.models`` 都一样）：

* **空句子（长度 0）一律报错**：:func:`check_lengths` 抛出 ``ValueError``，说出是批里第几条，
  并提示把空句子过滤掉。不悄悄地把它当成 1 个补齐词来读——那样模型会给一句"什么都没有"的话
  编出一个预测，而且不同家族的编法各不相同。
* **检查只在不拖慢 GPU 的时候做**：要看张量里的数值（最小的词编号、有没有长度 0），就得把结果从
  GPU 拷回 CPU，GPU 每一批都要停下来等这次拷贝。所以数值检查只在张量本来就在 CPU 上时进行
  （这时检查几乎不花时间），或者打开了调试开关：环境变量 ``AIGC_DEBUG=1``，或在代码里
  ``aigc_lib.models.layers.DEBUG = True``。
  在 GPU 上，合法的编号由产生它们的地方保证：``Vocab.encode`` 只给出 ``0..len(vocab)-1``，
  ``pad_batch`` / ``make_loader`` 给出与句子一致的长度。GPU 上看到 "device-side assert triggered"
  时，设 ``AIGC_DEBUG=1`` 再跑一次，或先在 CPU 上跑一批，就能看到下面这些清楚的中文错误。
  RNN 家族的长度本来就要拷回 CPU（``pack_padded_sequence`` 需要），所以它们总是检查长度。
"""

from __future__ import annotations

import os

import torch
from torch import nn

DEBUG = False
"""为 True 时（或环境变量 ``AIGC_DEBUG=1``），GPU 上的张量也做数值检查（每批会同步一次 GPU，较慢）。"""


def debug_checks_enabled() -> bool:
    """调试开关是否打开：``layers.DEBUG = True`` 或环境变量 ``AIGC_DEBUG=1``。"""
    return DEBUG or os.environ.get("AIGC_DEBUG", "") not in ("", "0")


def _should_inspect(tensor: torch.Tensor) -> bool:
    # torch.compile 下 .item() 会打断计算图；编译前的第一次运行（即时执行）已经检查过
    is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # PyTorch 2.3 起才有
    if is_compiling():
        return False
    return tensor.device.type == "cpu" or debug_checks_enabled()


def length_mask(lengths: torch.Tensor, total_len: int) -> torch.Tensor:
    """``(B,)`` 的长度 -> ``(B, total_len)`` 的布尔掩码，真实位置为 True、补齐位置为 False。

    ``total_len`` 是补齐后的长度 T（``tokens.size(1)``）；设备与 ``lengths`` 相同。

    >>> length_mask(torch.tensor([2, 0, 3]), 3).tolist()
    [[True, True, False], [False, False, False], [True, True, True]]
    """
    positions = torch.arange(total_len, device=lengths.device)  # (T,)
    return positions[None, :] < lengths[:, None]  # (B, T)


def check_token_ids(tokens: torch.Tensor, vocab_size: int) -> None:
    """词编号的类型不对或越界时给出清楚的错误。

    类型总是检查（不需要看数值）；是否越界只在 ``tokens`` 在 CPU 上或调试开关打开时检查
    （见本文件开头）。不检查的话，CPU 上只会报 "index out of range in self"，GPU 上则是看不懂的
    "device-side assert triggered"，而且之后整个 CUDA 进程都不能再用。
    """
    if tokens.dtype not in (torch.long, torch.int):
        raise TypeError(f"tokens 的类型是 {tokens.dtype}，应为 torch.long。请用 aigc_lib.data.batching 组批，或 tokens.long()。")
    if tokens.numel() == 0 or not _should_inspect(tokens):
        return
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"词编号超出范围：出现了 {low if low < 0 else high}，而模型的 vocab_size={vocab_size}"
            f"（合法编号 0..{vocab_size - 1}）。请用建 Vocab 时的 len(vocab) 作为 vocab_size，"
            "或在 Vocab 里限制词表大小（未登录词映射到 <unk>）。"
        )


def check_lengths(lengths: torch.Tensor, total_len: int) -> None:
    """检查每句的长度都在 ``1..total_len`` 之间（``total_len`` 是这批补齐后的长度 T）。

    长度为 0（空句子）时报 ``ValueError``，说出是批里第几条（从 0 数）。与 :func:`check_token_ids`
    一样，只在 ``lengths`` 在 CPU 上或调试开关打开时检查，GPU 上不会因此每批同步一次。
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths 的形状是 {tuple(lengths.shape)}，应为 (B,)：每句一个长度。")
    if lengths.numel() == 0 or not _should_inspect(lengths):
        return
    empty = (lengths < 1).nonzero().flatten().tolist()
    if empty:
        shown = "、".join(map(str, empty[:10])) + ("……" if len(empty) > 10 else "")
        raise ValueError(
            f"这批第 {shown} 条（从 0 数）是空句子（长度 0）。模型不为空句子编造预测："
            "请在组批之前把空句子过滤掉，例如 [(ids, y) for ids, y in data if len(ids) > 0]。"
        )
    longest = int(lengths.max())
    if longest > total_len:
        raise ValueError(
            f"lengths 里有 {longest}，但 tokens 每行只有 {total_len} 个位置。"
            "lengths 应是补齐前每句的真实长度；请用 aigc_lib.data.batching.pad_batch 组批。"
        )


def make_embedding(
    vocab_size: int,
    embed_dim: int,
    padding_idx: int | None = 0,
    pretrained_embeddings: torch.Tensor | None = None,
    freeze_embeddings: bool = False,
) -> nn.Embedding:
    """建词向量层 ``nn.Embedding(vocab_size, embed_dim, padding_idx)``。

    给了预训练向量 (V, E) 就用它初始化（例如第 04 章训练的 Word2Vec），``padding_idx`` 那一行
    仍置 0；``freeze_embeddings=True`` 时这一层不训练。形状不对时报错并说明该怎么改。

    >>> make_embedding(10, 4, pretrained_embeddings=torch.ones(10, 4)).weight[:2].tolist()
    [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    """
    embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
    if pretrained_embeddings is not None:
        weights = torch.as_tensor(pretrained_embeddings, dtype=torch.float32)
        if weights.shape != (vocab_size, embed_dim):
            raise ValueError(
                f"pretrained_embeddings 的形状是 {tuple(weights.shape)}，应为 (vocab_size, embed_dim) = "
                f"({vocab_size}, {embed_dim})。请用同一个 Vocab 导出词向量，并让 embed_dim 等于向量维度。"
            )
        with torch.no_grad():
            embedding.weight.copy_(weights)
            if padding_idx is not None:
                embedding.weight[padding_idx].zero_()  # 与 nn.Embedding(padding_idx=...) 一样：补齐符的向量是 0
    embedding.weight.requires_grad_(not freeze_embeddings)
    return embedding
