"""中文文本数据增强：随机删除、随机交换、近义词替换（EDA 的思路，Wei & Zou, 2019）。

训练数据太少时，模型会背下训练集。对每条训练文本做几处小改动、标签不变，就得到“新”样本::

    from aigc_lib.data.augment import augment_tokens, augment_dataset

    augment_tokens(["这家", "餐厅", "的", "菜", "很", "好吃"], ops=("swap", "delete"), seed=0)
    augment_tokens("这家餐厅的菜很好吃", ops=("delete",), seed=1)   # 字符串按字切分，返回字符串
    bigger = augment_dataset(train_pairs, k=2, seed=0)             # 每条 (text, label) 多出 2 个副本

每个函数都接收一个 ``random.Random`` 对象（或 seed），从不读写 Python 的全局随机状态，
所以同一个 seed 永远得到同一份增强数据。只增强训练集；验证集和测试集保持原样。
本模块只依赖 Python 标准库，可以单独复制使用。
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

Tokens = list[str]
Neighbours = Callable[[str], Sequence] | Mapping[str, Sequence]


def _as_tokens(tokens: str | Sequence[str]) -> Tokens:
    """字符串按字切开；词列表复制一份（增强函数从不修改调用者的列表）。"""
    return list(tokens)


def random_deletion(tokens: str | Sequence[str], p: float, rng: random.Random) -> Tokens:
    """每个词以概率 p 被删掉；全删光时随机留下一个词，所以非空输入永远不会得到空结果。

    参数：
        tokens：词列表，如 ``["菜", "很", "好吃"]``；也可以是字符串（按字处理）。
        p：每个词被删除的概率，0 <= p <= 1，常用 0.1。
        rng：``random.Random(seed)``，决定删哪些词。

    返回：新的词列表（输入不被修改）。

    >>> random_deletion(["菜", "很", "好吃"], p=1.0, rng=random.Random(0))   # 全删时留一个
    ['很']
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"删除概率 p={p} 不合法：应在 0 到 1 之间，常用 0.1。")
    words = _as_tokens(tokens)
    if not words:
        return []
    kept = [w for w in words if rng.random() >= p]
    if not kept:  # 空文本对分类没有意义，而且会让后面的 padding / 长度为 0 的序列出错
        kept = [rng.choice(words)]
    return kept


def random_swap(tokens: str | Sequence[str], n: int, rng: random.Random) -> Tokens:
    """随机挑两个位置交换，重复 n 次。词的集合和长度不变，只有顺序变了。

    参数：tokens 同 ``random_deletion``；n 为交换次数（>= 0）；rng 为 ``random.Random``。
    返回：新的词列表。少于 2 个词时原样返回（复制一份）。

    >>> random_swap(["我", "爱", "北京"], n=1, rng=random.Random(0))
    ['我', '北京', '爱']
    """
    if n < 0:
        raise ValueError(f"交换次数 n={n} 不合法：应为 >= 0 的整数。")
    words = _as_tokens(tokens)
    if len(words) < 2:
        return words
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)  # 两个不同的位置
        words[i], words[j] = words[j], words[i]
    return words


def _candidates(word: str, neighbours: Neighbours) -> list[str]:
    """查一个词的近义词候选，统一成字符串列表，并去掉它自己。

    ``neighbours`` 可以是字典 ``{"好吃": ["美味", "可口"]}``，也可以是函数，例如
    ``lambda w: kv.most_similar(w, topn=5)``（gensim 返回 ``(词, 相似度)`` 对，这里只取词；
    词表外的词会抛 KeyError，这里当作没有候选）。
    """
    try:
        found = neighbours.get(word, ()) if isinstance(neighbours, Mapping) else neighbours(word)
    except KeyError:
        return []
    words = [item[0] if isinstance(item, tuple) else item for item in (found or ())]
    return [w for w in words if w != word]


def synonym_replacement(
    tokens: str | Sequence[str],
    n: int,
    neighbours: Neighbours,
    rng: random.Random,
) -> Tokens:
    """把最多 n 个有近义词的词换成它的一个近义词（随机挑位置、随机挑候选）。

    参数：
        tokens：词列表（或字符串，按字处理）。
        n：最多替换几个位置（>= 0）。有候选的词不足 n 个时，就全部替换。
        neighbours：词 -> 近义词列表的字典，或函数。用训练好的词向量时可以写
            ``lambda w: kv.most_similar(w, topn=5)``；返回空列表或抛 KeyError 表示没有候选。
            想保护停用词或否定词（“不”换成别的字会把好评变差评），让它们不返回候选即可。
        rng：``random.Random``。

    返回：新的词列表，长度与输入相同。

    >>> synonym_replacement(["菜", "很", "好吃"], 1, {"好吃": ["美味"]}, random.Random(0))
    ['菜', '很', '美味']
    """
    if n < 0:
        raise ValueError(f"替换个数 n={n} 不合法：应为 >= 0 的整数。")
    words = _as_tokens(tokens)
    options = {i: _candidates(w, neighbours) for i, w in enumerate(words)}
    replaceable = [i for i, cands in options.items() if cands]
    for i in rng.sample(replaceable, min(n, len(replaceable))):
        words[i] = rng.choice(options[i])
    return words


OPS = ("delete", "swap", "synonym")


def augment_tokens(
    tokens: str | Sequence[str],
    ops: Sequence[str] = ("delete", "swap"),
    seed: int | None = None,
    *,
    rng: random.Random | None = None,
    p_delete: float = 0.1,
    n_swap: int = 1,
    n_synonym: int = 1,
    neighbours: Neighbours | None = None,
) -> str | Tokens:
    """按 ``ops`` 的顺序依次做几种增强，返回一条新文本。

    参数：
        tokens：词列表；或字符串（按字切分，结果也拼回字符串）。
        ops：要做的操作，按顺序执行，可选 ``"delete"``、``"swap"``、``"synonym"``。
        seed / rng：二选一。给 seed 时内部新建 ``random.Random(seed)``；处理一批文本时传同一个
            rng，让每条文本得到不同的随机改动。
        p_delete、n_swap、n_synonym：各操作的强度，见 ``random_deletion`` 等函数。
        neighbours：``"synonym"`` 需要的近义词来源，见 ``synonym_replacement``。

    返回：输入是字符串时返回字符串，否则返回词列表。

    >>> augment_tokens("这家餐厅的菜很好吃", ops=("swap",), seed=0)
    '这家餐厅的菜吃好很'
    """
    if (seed is None) == (rng is None):
        raise ValueError("请在 seed 和 rng 中恰好传一个：seed=0 或 rng=random.Random(0)。")
    rng = rng if rng is not None else random.Random(seed)
    words = _as_tokens(tokens)
    for op in ops:
        if op == "delete":
            words = random_deletion(words, p_delete, rng)
        elif op == "swap":
            words = random_swap(words, n_swap, rng)
        elif op == "synonym":
            if neighbours is None:
                raise ValueError(
                    "ops 里有 'synonym'，但没有传 neighbours：请传一个近义词字典，或"
                    " neighbours=lambda w: kv.most_similar(w, topn=5)（kv 是训练好的词向量）。"
                )
            words = synonym_replacement(words, n_synonym, neighbours, rng)
        else:
            raise ValueError(f"未知的增强操作 {op!r}：ops 里只能有 {', '.join(map(repr, OPS))}。")
    return "".join(words) if isinstance(tokens, str) else words


def augment_dataset(
    pairs: Sequence[tuple],
    k: int = 1,
    seed: int = 0,
    *,
    keep_original: bool = True,
    tokenize: Callable[[str], Sequence[str]] | None = None,
    **augment_kwargs,
) -> list[tuple]:
    """把 ``(text, label)`` 数据集中的每条样本增强 k 次，标签保持不变。

    参数：
        pairs：``[(text, label), ...]``，text 是字符串或词列表。
        k：每条样本生成几个增强副本。
        seed：整个数据集只用这一个种子（一个 ``random.Random(seed)`` 依次处理每条样本），
            同一个 seed、同样的输入，结果逐字相同。
        keep_original：结果里是否保留原样本（默认保留，放在它的副本前面）。
        tokenize：text 是字符串时怎样切词，例如 ``jieba.lcut``；不传则按字切。
            切词后增强，再用空字符串拼回（中文不需要空格）。
        augment_kwargs：传给 ``augment_tokens`` 的其余参数，如 ``ops=("delete", "swap")``、
            ``p_delete=0.1``、``neighbours=...``。

    返回：新列表，长度为 ``len(pairs) * (k + 1)``（不保留原样本时为 ``len(pairs) * k``）。

    >>> augment_dataset([("菜很好吃", 1)], k=1, seed=0, ops=("swap",))
    [('菜很好吃', 1), ('菜吃好很', 1)]
    """
    if k < 0:
        raise ValueError(f"k={k} 不合法：每条样本的增强副本数应为 >= 0 的整数。")
    rng = random.Random(seed)
    out = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"第 {i} 条样本是 {pair!r}：数据集的每一项必须是 (text, label) 两个元素。")
        text, label = pair
        if keep_original:
            out.append((text, label))
        for _ in range(k):
            if isinstance(text, str) and tokenize is not None:
                new_text = "".join(augment_tokens(list(tokenize(text)), rng=rng, **augment_kwargs))
            else:
                new_text = augment_tokens(text, rng=rng, **augment_kwargs)
            out.append((new_text, label))
    return out
