"""词向量的数据与工具：从句子到词向量，再到近邻、类比和 word2vec 文件。

模型本身（``SkipGram``、``GloVe``，只接收张量）在 :mod:`aigc_lib.models.embeddings`；
这里是它们前后的一切。读法（从上到下）：

1. 词表与语料编码：``build_vocab``、``encode_corpus``，把句子变成一长串词编号；
2. skip-gram 的训练样本：高频词下采样 ``keep_probabilities``/``subsample``，
   窗口内取 (中心词, 上下文词) 对 ``skipgram_pairs``；
3. 快速路径：``sgns_update_`` 手写一批样本的梯度并用 ``index_add_`` 批量更新（不经过 autograd），
   ``train_skipgram_fast`` 用它从句子一路训练到词向量，有 GPU 时在 GPU 上跑；
4. GloVe 的输入：按 1/距离 加权的共现计数 ``cooccurrence``；
5. ``TensorBatches``：把几个等长张量切成打乱的小批，交给训练引擎或手写循环；
6. ``WordVectors``：近邻、类比、相似度，读写 word2vec 文本格式（gensim 等工具都能读）。

这里的"语料"一律是 ``ids``（所有句子首尾相接的词编号，形状 (N,)）加 ``sentence_ids``
（每个词属于第几句，(N,)）：窗口不跨句子，又不用处理不等长的列表。
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..models.embeddings import negative_sampling_loss, negative_table


# ---------------------------------------------------------------------------
# 1. 词表与语料编码
# ---------------------------------------------------------------------------


def build_vocab(
    sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None
) -> tuple[list[str], torch.Tensor]:
    """统计词频，返回 ``(words, counts)``：按频次从高到低排好的词表和对应的计数 (V,)。

    出现次数少于 ``min_freq`` 的词丢掉（与 ``Vocab`` 的 ``min_freq`` 同义）；``max_size`` 只保留最高频的若干个词。
    频次相同的词按第一次出现的先后排列，所以结果是确定的。

    >>> build_vocab([["我", "爱", "我"], ["爱", "你"]], min_freq=2)
    (['我', '爱'], tensor([2, 2]))
    """
    counter = Counter(word for sentence in sentences for word in sentence)
    kept = [(w, n) for w, n in counter.most_common(max_size) if n >= min_freq]
    if not kept:
        raise ValueError(
            f"词表是空的：语料共 {len(counter)} 种词，没有一种出现 >= min_freq={min_freq} 次。"
            "请调小 min_freq，或检查传入的是不是分好词的句子列表（list[list[str]]）。"
        )
    words = [w for w, _ in kept]
    return words, torch.tensor([n for _, n in kept])


def encode_corpus(
    sentences: Iterable[Sequence[str]], words: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """把句子编成 ``(ids, sentence_ids)``，两个 (N,) 的长整型张量；词表外的词直接跳过。

    跳过（而不是换成 <unk>）与 word2vec、GloVe 原版一致：低频词被删掉后，两边的词算作相邻。

    >>> encode_corpus([["我", "爱", "你"], ["你"]], ["你", "我"])
    (tensor([1, 0, 0]), tensor([0, 0, 1]))
    """
    index = {w: i for i, w in enumerate(words)}
    encoded = [[index[w] for w in sentence if w in index] for sentence in sentences]
    ids = torch.tensor([i for sentence in encoded for i in sentence], dtype=torch.long)  # (N,)
    lengths = torch.tensor([len(sentence) for sentence in encoded], dtype=torch.long)
    sentence_ids = torch.repeat_interleave(torch.arange(len(encoded)), lengths)  # (N,)
    return ids, sentence_ids


# ---------------------------------------------------------------------------
# 2. skip-gram 的训练样本：下采样、窗口取词对
# ---------------------------------------------------------------------------


def keep_probabilities(counts: torch.Tensor, sample: float = 1e-3) -> torch.Tensor:
    """高频词下采样：每个词被保留的概率 (V,)。

    Mikolov 等 (2013) 的想法：像"的""了"这样的词太常见，和谁都相邻，提供的信息很少，
    按频率 f = count / total 随机丢掉一部分。这里用 word2vec 源码（gensim 也一样）的公式::

        keep = (sqrt(f / sample) + 1) * sample / f，超过 1 记为 1

    论文里写的是丢弃概率 1 - sqrt(sample / f)，源码版多了一项 sample / f，对中频词更宽松。
    ``sample <= 0`` 表示不下采样（全部保留）。
    """
    counts = counts.double()
    if sample <= 0:
        return torch.ones_like(counts)
    ratio = sample * counts.sum() / counts  # sample / f
    return (torch.sqrt(1 / ratio) + 1).mul(ratio).clamp(max=1.0)


def subsample(
    ids: torch.Tensor,
    sentence_ids: torch.Tensor,
    keep_prob: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """按 ``keep_prob[词]`` 随机保留语料里的每个词，返回保留下来的 ``(ids, sentence_ids)``。

    传入固定种子的 ``generator``（与 ``ids`` 在同一设备上）结果就可以复现；每个 epoch 重抽一次。
    """
    # 用 float32 而不是 float64：mps 不支持 float64
    draw = torch.rand(ids.shape, generator=generator, device=ids.device)  # (N,)
    kept = draw < keep_prob.to(ids.device, torch.float32)[ids]  # (N,)
    return ids[kept], sentence_ids[kept]


def skipgram_pairs(
    ids: torch.Tensor,
    sentence_ids: torch.Tensor,
    window: int = 5,
    shrink_window: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """窗口内的所有 (中心词, 上下文词) 对，返回 ``(centers, contexts)``，各为 (P,)。

    中心词左右各 ``window`` 个词（不跨句子）都是它的上下文。``shrink_window=True`` 时
    与 word2vec 一样，每个中心词的实际窗口 b 从 1..window 中均匀抽取：近处的词被用得更多，
    相当于按距离加权，样本数也少了将近一半。

    词对按中心词在语料中的位置排列（与 word2vec 逐句扫描的顺序相同），全部是向量化的张量运算。

    >>> skipgram_pairs(torch.tensor([7, 8, 9]), torch.tensor([0, 0, 0]), window=1, shrink_window=False)
    (tensor([7, 8, 8, 9]), tensor([8, 7, 9, 8]))
    """
    n = ids.numel()
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)]).to(ids.device)
    positions = torch.arange(n, device=ids.device).unsqueeze(1) + offsets  # (n, 2W) 上下文的位置
    inside = (positions >= 0) & (positions < n)
    positions = positions.clamp(0, max(n - 1, 0))
    if shrink_window:
        spans = torch.randint(1, window + 1, (n, 1), generator=generator, device=ids.device)
    else:
        spans = torch.full((n, 1), window, device=ids.device)
    valid = (
        inside
        & (sentence_ids[positions] == sentence_ids.unsqueeze(1))  # 不跨句子
        & (offsets.abs() <= spans)  # 在这个中心词抽到的窗口之内
    )  # (n, 2W)
    centers = ids.unsqueeze(1).expand(-1, 2 * window)[valid]  # (P,)
    return centers, ids[positions[valid]]


# ---------------------------------------------------------------------------
# 3. 快速路径：手写梯度 + 批量 index_add_，不经过 autograd
# ---------------------------------------------------------------------------


@torch.no_grad()
def sgns_update_(
    in_weight: torch.Tensor,
    out_weight: torch.Tensor,
    centers: torch.Tensor,
    contexts: torch.Tensor,
    negatives: torch.Tensor,
    lr: float,
) -> torch.Tensor:
    """对一批样本做一步 SGD，原地更新 ``in_weight`` (V, D) 与 ``out_weight`` (V, D)，返回这批损失之和。

    与对 ``SkipGram`` 的损失（按批求和）做一步 ``torch.optim.SGD(lr)`` 结果相同，只是梯度是手写的：
    设 s = u·v，标签 y（上下文词为 1，负例为 0），则 d损失/ds = σ(s) - y，于是
    d损失/dv = Σ (σ(s) - y) u，d损失/du = (σ(s) - y) v。
    同一个词在一批里出现多次时，``index_add_`` 把它的各份更新加在一起（autograd 也是这样累加梯度的）。
    """
    candidates = torch.cat([contexts.unsqueeze(1), negatives], dim=1)  # (B, 1+K)
    # index_select 取一维下标的行，CPU 上比 out_weight[candidates] 这种高级索引快一倍多
    v = in_weight.index_select(0, centers)  # (B, D)
    u = out_weight.index_select(0, candidates.flatten()).view(*candidates.shape, -1)  # (B, 1+K, D)
    scores = torch.bmm(u, v.unsqueeze(2)).squeeze(2)  # (B, 1+K)
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    step = (labels - torch.sigmoid(scores)) * lr  # (B, 1+K)：-lr * d损失/ds
    in_weight.index_add_(0, centers, torch.bmm(step.unsqueeze(1), u).squeeze(1))  # (B, D)
    out_weight.index_add_(
        0, candidates.flatten(), (step.unsqueeze(2) * v.unsqueeze(1)).flatten(0, 1)
    )
    return negative_sampling_loss(scores) * len(centers)  # 平均 -> 求和


def train_skipgram_fast(
    sentences: Sequence[Sequence[str]],
    dim: int = 100,
    window: int = 5,
    min_freq: int = 5,
    negative: int = 5,
    sample: float = 1e-3,
    epochs: int = 1,
    lr: float = 0.025,
    min_lr: float = 1e-4,
    batch_size: int | None = None,
    workers: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[WordVectors, list[float]]:
    """从分好词的句子直接训练 skip-gram 词向量（参数名与 gensim 的 ``Word2Vec`` 对应）。

    参数：
        sentences: ``list[list[str]]``。
        dim, window, min_freq, negative, sample, epochs, workers: 同 gensim 的
            vector_size, window, min_count, negative, sample, epochs, workers
            （词频下限在本库里处处叫 ``min_freq``）。
        lr, min_lr: 学习率从 lr 线性降到 min_lr（word2vec 的做法）。
        batch_size: 每步多少个 (中心词, 上下文词) 对；默认 CPU 上 4096、GPU 上 8192。
            批太大时高频词的更新叠加过多，训练会发散（会报错提示）。
        workers: CPU 上几个线程同时更新同一份向量（默认 ``torch.get_num_threads()``）；
            1 个时结果完全可复现。GPU 上忽略。
        seed: 固定下采样、窗口大小、负例和初始化的随机数。
        device: 默认有 CUDA 就用 GPU，否则 CPU。

    返回 ``(WordVectors, losses)``，losses 是每个 epoch 的平均损失。

    CPU 上的并行方式与 word2vec、gensim 相同（Hogwild）：每个线程拿一部分批次，直接改共享的
    向量，不加锁；偶尔两个线程同时改同一行会丢掉一点更新，对结果几乎没有影响。每个线程内部
    的张量运算只用 1 个线程，这样 CPU 被别的程序占用时也不会互相等待。

    例::

        vectors, losses = train_skipgram_fast(sentences, dim=100, epochs=3)
        vectors.most_similar("北京", k=5)
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if batch_size is None:
        batch_size = 8192 if dev.type == "cuda" else 4096
    # GPU 上只有一个线程往 GPU 排队发任务就够了
    workers = 1 if dev.type != "cpu" else (workers or torch.get_num_threads())
    gen = torch.Generator(device=dev).manual_seed(seed)

    words, counts = build_vocab(sentences, min_freq=min_freq)
    ids, sentence_ids = (t.to(dev) for t in encode_corpus(sentences, words))
    keep = keep_probabilities(counts, sample).float().to(dev)  # mps 不支持 float64
    table = negative_table(counts).to(dev)
    V = len(words)
    in_weight = (torch.rand(V, dim, generator=gen, device=dev) - 0.5) / dim  # (V, D)
    out_weight = torch.zeros(V, dim, device=dev)  # (V, D)

    def train_batches(centers, contexts, starts, epoch, generator) -> torch.Tensor:
        total = torch.zeros((), device=dev)
        for start in starts:
            done = (epoch + start / len(centers)) / epochs  # 训练进度 0..1
            step_lr = lr - (lr - min_lr) * done
            c, o = centers[start : start + batch_size], contexts[start : start + batch_size]
            slots = torch.randint(
                0, len(table), (len(c), negative), generator=generator, device=dev
            )
            total += sgns_update_(in_weight, out_weight, c, o, table[slots], step_lr)
        return total

    losses = []
    threads_before = torch.get_num_threads()
    if dev.type == "cpu":
        # 并行来自 workers 个工作线程；每个线程里的张量运算只用 1 个线程：这些运算都很小，
        # 再分给多个线程，线程之间互相等待的开销比省下的时间还多（CPU 被别的程序占用时尤其严重）
        torch.set_num_threads(1)
    try:
        for epoch in range(epochs):
            centers, contexts = skipgram_pairs(
                *subsample(ids, sentence_ids, keep, gen), window=window, generator=gen
            )
            if len(centers) == 0:
                raise ValueError(
                    "没有任何 (中心词, 上下文词) 对：句子太短，或者下采样/min_freq 删掉了几乎所有词。"
                    "请调小 min_freq、把 sample 设为 0，或换更多的语料。"
                )
            starts = range(0, len(centers), batch_size)
            if workers == 1:
                total = train_batches(centers, contexts, starts, epoch, gen)
            else:
                seeds = torch.randint(0, 2**62, (workers,), generator=gen).tolist()
                generators = [torch.Generator().manual_seed(s) for s in seeds]
                with ThreadPoolExecutor(workers) as pool:  # 张量运算会释放 GIL，线程真正并行
                    parts = pool.map(
                        train_batches,
                        [centers] * workers,
                        [contexts] * workers,
                        [starts[k::workers] for k in range(workers)],
                        [epoch] * workers,
                        generators,
                    )
                    total = sum(parts)
            # 只在 epoch 结束时 .item() 一次：GPU 上每步都取回 CPU 会让 GPU 空等
            losses.append(total.item() / len(centers))
            if not math.isfinite(losses[-1]):
                raise RuntimeError(
                    f"第 {epoch + 1} 个 epoch 的损失是 {losses[-1]}：训练发散了。"
                    f"请调小 lr（现在 {lr}）或 batch_size（现在 {batch_size}）：一批里同一个高频词的"
                    "更新会叠加，批越大叠加越多。"
                )
    finally:
        torch.set_num_threads(threads_before)
    return WordVectors(words, in_weight), losses


# ---------------------------------------------------------------------------
# 4. GloVe 的输入：共现计数
# ---------------------------------------------------------------------------


def cooccurrence(
    ids: torch.Tensor, sentence_ids: torch.Tensor, window: int = 10, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """对称窗口内的共现计数 X，距离为 d 的一对词计 1/d（GloVe 原文的做法）。

    返回稀疏三元组 ``(rows (M,), cols (M,), values (M,))``，按 (row, col) 排序，只含非零项：
    X[rows[m], cols[m]] = values[m]。X 是对称的：(i, j) 与 (j, i) 都在里面。
    ``ids, sentence_ids`` 来自 ``encode_corpus``；窗口不跨句子。
    """
    V = vocab_size if vocab_size is not None else int(ids.max()) + 1
    rows, cols, weights = [], [], []
    for d in range(1, min(window, ids.numel() - 1) + 1):
        same = sentence_ids[:-d] == sentence_ids[d:]  # (N-d,)
        left, right = ids[:-d][same], ids[d:][same]
        w = torch.full((len(left),), 1.0 / d, device=ids.device)
        rows += [left, right]  # 两个方向都记，X 对称
        cols += [right, left]
        weights += [w, w]
    if not rows:
        empty = ids.new_empty(0)
        return empty, empty, torch.empty(0, device=ids.device)
    # 把 (i, j) 编成一个整数 i * V + j，相同的词对合并、权重相加；unique 的结果已按 (i, j) 排好序
    keys, inverse = torch.unique(torch.cat(rows) * V + torch.cat(cols), return_inverse=True)  # (M,)
    values = torch.zeros(len(keys), device=ids.device).index_add_(0, inverse, torch.cat(weights))
    return keys // V, keys % V, values


# ---------------------------------------------------------------------------
# 5. 小批迭代
# ---------------------------------------------------------------------------


class TensorBatches:
    """把几个第 0 维等长的张量切成小批：每次 ``for`` 循环都重新打乱一遍（一个 epoch）。

    比 ``DataLoader(TensorDataset(...))`` 快得多：一次取一整批下标，而不是逐个样本取再拼起来。

    例::

        batches = TensorBatches(centers, contexts, batch_size=1024, seed=0)
        for c, o in batches:          # len(batches) 为每个 epoch 的批数
            ...
    """

    def __init__(
        self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0
    ):
        if len({len(t) for t in tensors}) != 1:
            raise ValueError(
                f"TensorBatches 的各个张量第 0 维必须一样长，现在是 {[len(t) for t in tensors]}。"
            )
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.tensors[0]) / self.batch_size)

    def __iter__(self):
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield tuple(t[index.to(t.device)] for t in self.tensors)


# ---------------------------------------------------------------------------
# 6. WordVectors：查询与读写
# ---------------------------------------------------------------------------


class WordVectors:
    """一组词和它们的向量：``words``（V 个字符串）与 ``vectors``（(V, D) 的 CPU 浮点张量）。

    >>> wv = WordVectors(["北京", "上海", "苹果"], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> wv["北京"].shape, "上海" in wv, len(wv)
    (torch.Size([2]), True, 3)
    >>> wv.most_similar("北京", k=2)          # [(词, 余弦相似度), ...]，不含"北京"本身
    [('上海', 0.800000011920929), ('苹果', 0.0)]

    相似度都用余弦；``analogy`` 与 gensim 的 ``most_similar(positive=[b, c], negative=[a])`` 一致。
    """

    def __init__(self, words: Sequence[str], vectors):
        # 复制一份：之后模型继续训练，这里的向量和近邻结果也不会悄悄变化
        vectors = torch.as_tensor(vectors).detach().to("cpu", torch.float32, copy=True)
        words = list(words)
        if vectors.dim() != 2 or vectors.size(0) != len(words):
            raise ValueError(
                f"有 {len(words)} 个词，但向量的形状是 {tuple(vectors.shape)}；应为 ({len(words)}, 维度)。"
            )
        self.words, self.vectors = words, vectors
        self.index = {w: i for i, w in enumerate(words)}
        if len(self.index) != len(words):
            duplicated = [w for w, n in Counter(words).items() if n > 1][:5]
            raise ValueError(f"词表里有重复的词：{duplicated}。每个词只能出现一次。")
        # 单位向量：余弦相似度 = 单位向量的点积（全零向量保持为零，避免除以 0）
        self.unit = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)  # (V, D)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def _id(self, word: str) -> int:
        if word not in self.index:
            raise KeyError(
                f"词 {word!r} 不在词表里（共 {len(self)} 个词）。可以先用 `{word!r} in vectors` 检查，"
                "或者训练时调小 min_freq。"
            )
        return self.index[word]

    def __getitem__(self, word: str) -> torch.Tensor:
        return self.vectors[self._id(word)]

    def similarity(self, a: str, b: str) -> float:
        """两个词的余弦相似度，范围 [-1, 1]。"""
        return float(self.unit[self._id(a)] @ self.unit[self._id(b)])

    def _nearest(self, query: torch.Tensor, k: int, exclude: list[int]) -> list[tuple[str, float]]:
        scores = self.unit @ (query / query.norm().clamp(min=1e-12))  # (V,)
        scores[exclude] = -math.inf
        top = torch.topk(scores, min(k, len(self) - len(exclude)))
        return [(self.words[i], float(s)) for s, i in zip(top.values, top.indices)]

    def most_similar(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """与 ``word`` 余弦最近的 k 个词（不含它自己），``[(词, 相似度), ...]`` 从高到低。"""
        i = self._id(word)
        return self._nearest(self.unit[i], k, exclude=[i])

    def analogy(self, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
        """类比 a : b :: c : ?（例如 男人 : 国王 :: 女人 : 王后）。

        找与 unit(b) - unit(a) + unit(c) 余弦最近的词，a、b、c 本身除外（3CosAdd）。
        """
        ia, ib, ic = self._id(a), self._id(b), self._id(c)
        query = self.unit[ib] - self.unit[ia] + self.unit[ic]
        return self._nearest(query, k, exclude=sorted({ia, ib, ic}))

    def embedding_matrix(
        self, words: Sequence[str], std: float = 1.0, padding_idx: int | None = 0, seed: int = 0
    ) -> torch.Tensor:
        """按 ``words`` 的顺序（通常是分类器的 ``vocab.itos``）拼出 ``(len(words), D)`` 的矩阵，
        交给模型的 ``pretrained_embeddings`` 初始化嵌入层。

        - 有向量的词：把向量**等比缩放**到各分量的标准差为 ``std``（方向不变，余弦近邻不变）。
          默认 1.0，与 ``nn.Embedding`` 默认的 N(0, 1) 初始化同一个尺度。skip-gram 向量的分量比这小得多
          （第 05 章打印了实际的数），而 Adam 类优化器每步的更新幅度与权重本身的大小无关：
          权重越小，同样的一步改掉的比例越大，学到的结构也越快被冲淡。
        - 没有向量的词（``<pad>``、``<unk>``、词频太低的词）：N(0, std²) 随机数，由 ``seed`` 固定。
        - ``padding_idx`` 那一行置 0（与 ``nn.Embedding(padding_idx=...)`` 一致；None 表示没有补齐词）。

        想知道覆盖了多少词：``sum(w in vectors for w in words)``。
        """
        D = self.vectors.size(1)
        generator = torch.Generator().manual_seed(seed)
        matrix = torch.randn(len(words), D, generator=generator) * std
        rows = [i for i, word in enumerate(words) if word in self.index]
        if rows:
            found = self.vectors[[self.index[words[i]] for i in rows]]  # (n, D)
            scale = found.std(dim=1, keepdim=True).clamp(min=1e-12)
            matrix[rows] = found / scale * std
        if padding_idx is not None:
            matrix[padding_idx] = 0.0
        return matrix

    def save_word2vec_format(self, path: str | Path) -> None:
        """写成 word2vec 文本格式（UTF-8）：第一行 "V D"，之后每行 "词 v1 v2 ... vD"。

        gensim 用 ``KeyedVectors.load_word2vec_format(path, binary=False)`` 就能读。
        数字写 9 位有效数字，float32 读回来一位不差。
        """
        for word in self.words:
            if not word or any(ch.isspace() for ch in word):
                raise ValueError(
                    f"词 {word!r} 是空的或含有空白字符，word2vec 文本格式用空格分隔，无法保存。"
                    "请先把这类词去掉或替换（例如把空格换成下划线）。"
                )
        V, D = self.vectors.shape
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(f"{V} {D}\n")
            for word, row in zip(self.words, self.vectors.tolist()):
                f.write(word + " " + " ".join(f"{x:.9g}" for x in row) + "\n")

    @classmethod
    def load_word2vec_format(cls, path: str | Path) -> WordVectors:
        """读取 word2vec 文本格式（UTF-8，可带 BOM），例如 gensim 的 ``save_word2vec_format`` 写出的文件。"""
        with open(path, encoding="utf-8-sig") as f:
            header = f.readline().split()
            if len(header) != 2 or not all(x.isdigit() for x in header):
                raise ValueError(
                    f'{path} 第 1 行应为 "词数 维度"（例如 "15000 100"），实际是 {" ".join(header)!r}。'
                    "这不是 word2vec 文本格式；二进制格式请用 gensim 读取。"
                )
            V, D = int(header[0]), int(header[1])
            words, rows = [], []
            for line_no, line in enumerate(f, start=2):
                if line.strip() == "":
                    continue
                parts = line.rstrip().split(" ")
                if len(parts) != D + 1:
                    raise ValueError(
                        f"{path} 第 {line_no} 行有 {len(parts) - 1} 个数，第 1 行说维度是 {D}。"
                        "请检查文件是否完整，或词里是否含有空格。"
                    )
                words.append(parts[0])
                rows.append([float(x) for x in parts[1:]])
        if len(words) != V:
            raise ValueError(
                f"{path} 第 1 行说有 {V} 个词，实际读到 {len(words)} 个。文件可能不完整。"
            )
        return cls(words, torch.tensor(rows, dtype=torch.float32).reshape(V, D))
