"""把长短不一的句子变成批（batch）：补齐（padding）、长度分桶、DataLoader。

一条样本是 ``(token_ids, label)``：token_ids 是一串整数（``Vocab.encode`` 的结果），
label 是类别编号。一个批是三元组 ``(tokens, lengths, labels)``::

    tokens   (B, T)  long   每行一句，右边用 pad_id（默认 0）补到本批最长的 T
    lengths  (B,)    long   每句的真实长度，模型靠它忽略补齐的位置
    labels   (B,)           目标

训练循环的约定：批的 **最后一个** 元素是目标，其余都是模型输入，即
``model(tokens, lengths) -> logits``，``loss_fn(logits, labels)``。

为什么要分桶：一批里只要有一条 300 词的长评论，其余 63 条短评论都要补到 300。
``BucketBatchSampler`` 先把相近长度的句子放进同一批，补齐的位置少了，训练就快了，
而批的顺序仍然是随机的。

典型用法::

    from aigc_lib.data.batching import EncodedDataset, make_loader
    train = EncodedDataset(train_ids, train_labels)
    loader = make_loader(train, batch_size=64, shuffle=True)      # 训练：打乱 + 分桶
    for tokens, lengths, labels in loader:
        logits = model(tokens, lengths)

本模块只依赖 PyTorch，可以单独复制使用。
"""

from __future__ import annotations

import functools
import math
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler


# ---------------------------------------------------------------------------
# 数据集：两条平行的列表
# ---------------------------------------------------------------------------


class EncodedDataset(Dataset):
    """已经编码成整数的文本分类数据集：第 i 条样本是 ``(token_ids[i], labels[i])``。

    参数：
        token_ids: 每句一个整数列表（或一维张量），例如 ``[vocab.encode(toks) for toks in docs]``。
        labels: 与 token_ids 等长的标签列表（整数类别；二分类也可以是 0.0/1.0）。

    ``dataset.lengths`` 是每句的长度列表，分桶采样器直接用它，不必再遍历数据。

    >>> ds = EncodedDataset([[5, 6, 7], [8]], [1, 0])
    >>> len(ds), ds[1], ds.lengths
    (2, ([8], 0), [3, 1])
    """

    def __init__(self, token_ids: Sequence[Sequence[int]], labels: Sequence) -> None:
        if len(token_ids) != len(labels):
            raise ValueError(
                f"EncodedDataset：token_ids 有 {len(token_ids)} 条，labels 有 {len(labels)} 条，"
                "两者必须一一对应。请检查编码和取标签是否来自同一份数据。"
            )
        self.token_ids = list(token_ids)
        self.labels = list(labels)
        self.lengths = [len(ids) for ids in self.token_ids]

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[Sequence[int], object]]) -> "EncodedDataset":
        """由 ``[(token_ids, label), ...]`` 构造，例如 ``EncodedDataset.from_pairs(zip(ids, ys))``。"""
        pairs = list(pairs)
        return cls([ids for ids, _ in pairs], [label for _, label in pairs])

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, index: int):
        return self.token_ids[index], self.labels[index]


# ---------------------------------------------------------------------------
# 补齐
# ---------------------------------------------------------------------------


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int = 0, max_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """把若干整数序列右补齐到其中最长的一条，返回 ``(tokens (B, T) long, lengths (B,) long)``。

    参数：
        sequences: B 个整数列表或一维张量。
        pad_id: 补齐用的编号，与 ``Vocab`` 的 ``<pad>`` 一致（默认 0）。
        max_tokens: 给定时每句只保留前 max_tokens 个词（截断超长评论，控制显存和时间）。

    空句子的长度是 0，它那一行全是 pad_id；aigc_lib.models 的模型收到空句子会报错，请在组批前把它们过滤掉。

    >>> tokens, lengths = pad_batch([[5, 6, 7], [8]])
    >>> tokens.tolist(), lengths.tolist()
    ([[5, 6, 7], [8, 0, 0]], [3, 1])
    """
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"pad_batch：max_tokens={max_tokens} 必须是正整数，或者传 None 表示不截断。")
    rows = [torch.as_tensor(seq, dtype=torch.long)[:max_tokens] for seq in sequences]
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)  # (B,)
    longest = max(int(lengths.max()), 1) if len(rows) else 1  # 至少 1 列：全是空句时也能组成张量
    tokens = torch.full((len(rows), longest), pad_id, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return tokens, lengths


def pad_collate(
    batch: Sequence[tuple[Sequence[int], object]],
    pad_id: int = 0,
    max_tokens: int | None = None,
    label_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DataLoader 的 ``collate_fn``：``[(ids, label), ...] -> (tokens (B, T), lengths (B,), labels (B,))``。

    参数：
        batch: DataLoader 取出的样本列表。
        pad_id, max_tokens: 见 :func:`pad_batch`。
        label_dtype: 标签的类型。默认按数据推断（整数 -> long，小数 -> float32）；
            用 ``BCEWithLogitsLoss`` 做二分类时传 ``torch.float32``。

    要给它换参数，用 ``functools.partial(pad_collate, pad_id=1)``；partial 可以被 pickle，
    在 Windows 上开多进程（num_workers>0）也能用，lambda 则不行。
    """
    token_ids = [item[0] for item in batch]
    labels = torch.as_tensor([item[1] for item in batch])  # (B,)
    if label_dtype is not None:
        labels = labels.to(label_dtype)
    elif labels.is_floating_point():
        labels = labels.float()  # Python 小数默认是 float64，模型输出是 float32
    tokens, lengths = pad_batch(token_ids, pad_id=pad_id, max_tokens=max_tokens)
    return tokens, lengths, labels


# ---------------------------------------------------------------------------
# 长度分桶的批采样器
# ---------------------------------------------------------------------------


class BucketBatchSampler(Sampler[list[int]]):
    """按长度分桶的批采样器：每批里的句子长度相近，批与批之间的顺序是随机的。

    每个 epoch 的做法（``shuffle=True``）：
      1. 用 ``(seed, epoch)`` 打乱全部下标；
      2. 每 ``bucket_size`` 批（``batch_size * bucket_size`` 条样本）为一块，块内按长度排序，切成批；
      3. 打乱所有批的顺序。
    块不太大，所以每个 epoch 的分组都不一样；块也不太小，所以同一批里的长度很接近。
    ``shuffle=False`` 时不打乱：每块按长度排序后依次产出（结果稳定，但顺序与数据集不同）。

    参数：
        lengths: 每条样本的长度（例如 ``EncodedDataset.lengths``）。
        batch_size: 每批条数。
        shuffle: 是否打乱（训练 True，评估 False）。
        bucket_size: 一块包含多少批，默认 50。
        drop_last: 是否丢弃最后不满 batch_size 的那一批。
        seed: 随机种子；同一 seed、同一 epoch 的顺序完全相同。
        num_replicas, rank: 多进程数据并行（torchrun / DDP）时共有几个进程、本进程是第几个；
            每个进程拿到不重叠的批，且批数相同（不足时从头补几批），避免进程互相等待。

    每次迭代结束 epoch 自动加 1，所以直接多次遍历也会换顺序；想复现或从断点续训时，
    在每个 epoch 开始前调用 ``set_epoch(e)``（与 ``DistributedSampler`` 的用法相同）。

    >>> sampler = BucketBatchSampler([3, 1, 2, 5, 4], batch_size=2, seed=0)
    >>> len(sampler), sorted(i for batch in sampler for i in batch)
    (3, [0, 1, 2, 3, 4])
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        bucket_size: int = 50,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or bucket_size < 1:
            raise ValueError(
                f"BucketBatchSampler：batch_size={batch_size}、bucket_size={bucket_size} 都必须是正整数。"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(
                f"BucketBatchSampler：rank={rank} 必须在 0 到 num_replicas-1={num_replicas - 1} 之间。"
            )
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket_size = bucket_size
        self.drop_last = drop_last
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """设定下一次迭代使用的 epoch 编号（决定打乱的顺序）。"""
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        """这个 epoch 的全部批（所有进程看到同一份，因为种子相同）。"""
        n = len(self.lengths)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        chunk = self.batch_size * self.bucket_size
        batches = []
        for start in range(0, n, chunk):
            block = order[start : start + chunk]
            # stable=True：长度相同的句子保持原先（已打乱的）次序，结果可复现
            block = block[torch.sort(self.lengths[block], stable=True).indices]
            batches += [block[i : i + self.batch_size].tolist() for i in range(0, len(block), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        self.epoch += 1
        if self.num_replicas > 1 and batches:
            # 补到进程数的整数倍，每个进程的批数才相同（DDP 要求每步所有进程都参与）
            total = len(self) * self.num_replicas
            batches = (batches * math.ceil(total / len(batches)))[:total]
            batches = batches[self.rank :: self.num_replicas]
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.lengths)
        # 每块恰好是 batch_size 的整数倍，所以只有最后一批可能不满
        total = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return math.ceil(total / self.num_replicas)


# ---------------------------------------------------------------------------
# DataLoader 工厂
# ---------------------------------------------------------------------------


def _lengths_of(dataset: Dataset) -> list[int]:
    """数据集里每条样本的长度：优先用 ``dataset.lengths``，否则逐条读取 ``dataset[i][0]``。"""
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None:
        return list(lengths)
    return [len(dataset[i][0]) for i in range(len(dataset))]


def _distributed_world(required: bool = False) -> tuple[int, int]:
    """(进程数, 本进程编号)；没有初始化 torch.distributed 时是 (1, 0)，``required`` 时报错。"""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    if required:
        raise RuntimeError("make_loader(distributed=True)：torch.distributed 还没有初始化，没法按进程切分数据。"
                           "请用 torchrun 启动并先调用 torch.distributed.init_process_group，"
                           "或者不写 distributed（默认 None：初始化了才切分）。")
    return 1, 0


def make_loader(
    data: Dataset | Sequence[tuple[Sequence[int], object]],
    batch_size: int = 32,
    shuffle: bool = False,
    bucket: bool | None = None,
    num_workers: int = 0,
    pin_memory: bool | None = None,
    collate_fn=None,
    pad_id: int = 0,
    max_tokens: int | None = None,
    label_dtype: torch.dtype | None = None,
    drop_last: bool = False,
    seed: int = 0,
    bucket_size: int = 50,
    distributed: bool | None = None,
) -> DataLoader:
    """为 ``(token_ids, label)`` 数据建一个 DataLoader，产出 ``(tokens (B, T), lengths (B,), labels (B,))``。

    参数：
        data: 一个 Dataset（每条是 ``(ids, label)``），或者 ``[(ids, label), ...]`` 列表。
        batch_size: 每批条数。
        shuffle: 训练集 True，验证/测试集 False。
        bucket: 是否按长度分桶。默认 None 表示"随 shuffle"：训练时分桶（快），
            评估时保持数据集原顺序（第 k 个预测就对应第 k 条样本，不会对错行）。
        num_workers: 读数据的子进程数。默认 0（在主进程里读）：在 Windows 和 notebook 里最稳妥，
            而且本课程的数据已经编码成整数，补齐很快，多进程反而更慢。
        pin_memory: 是否把批放进锁页内存，加快拷到 GPU。默认 None：有 CUDA 时 True。
        collate_fn: 自定义组批函数；默认 ``pad_collate``（配合 pad_id、max_tokens、label_dtype）。
        pad_id, max_tokens, label_dtype: 传给 :func:`pad_collate`。
        drop_last: 是否丢弃最后一个不满的批。
        seed: 打乱用的种子；同一 seed 得到同样的批顺序。
        bucket_size: 分桶时一块包含多少批（见 :class:`BucketBatchSampler`）。
        distributed: 是否按 torchrun 的进程切分数据。默认 None：torch.distributed 已初始化时自动切分；
            True：一定切分（没有初始化时报错）；False：不切分。

    分桶时 ``loader.batch_sampler`` 是 :class:`BucketBatchSampler`，可以调用
    ``loader.batch_sampler.set_epoch(e)``。开 num_workers>0 时，在 Windows 上脚本必须写在
    ``if __name__ == "__main__":`` 里面，数据集和 collate_fn 也必须能被 pickle（不要用 lambda）。

    >>> loader = make_loader([([5, 6, 7], 1), ([8], 0)], batch_size=2)
    >>> tokens, lengths, labels = next(iter(loader))
    >>> tokens.shape, lengths.tolist(), labels.tolist()
    (torch.Size([2, 3]), [3, 1], [1, 0])
    """
    dataset = data if isinstance(data, Dataset) else EncodedDataset.from_pairs(data)
    if len(dataset) == 0:
        raise ValueError("make_loader：数据集是空的。请检查数据划分或过滤条件（例如长度过滤）是否把样本全删掉了。")
    if collate_fn is None:
        collate_fn = functools.partial(pad_collate, pad_id=pad_id, max_tokens=max_tokens, label_dtype=label_dtype)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if bucket is None:
        bucket = shuffle
    num_replicas, rank = (1, 0) if distributed is False else _distributed_world(required=distributed is True)
    common = dict(
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,  # 每个 epoch 不重开子进程（Windows 上开进程很慢）
    )

    if bucket:
        sampler = BucketBatchSampler(
            _lengths_of(dataset), batch_size, shuffle=shuffle, bucket_size=bucket_size,
            drop_last=drop_last, seed=seed, num_replicas=num_replicas, rank=rank,
        )
        return DataLoader(dataset, batch_sampler=sampler, **common)
    if num_replicas > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas, rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)
