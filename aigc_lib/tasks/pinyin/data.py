"""拼音 -> 汉字的平行语料：把《人民日报》的句子切成小句，用 pypinyin 注上不带声调的拼音。

第 10 章把"拼音输入法"当成一个翻译问题：源语言是音节序列，目标语言是汉字序列::

    >>> pairs = pinyin_pairs("test")
    >>> pairs[0]                                     # doctest: +SKIP
    (['xi', 'wang', 'tai', 'wan', 'dang', 'ju'], '希望台湾当局')

做法：
  1. 一句话按标点（词性 ``w``）切成小句；
  2. 只留下全是汉字的小句（含数字、字母的丢掉），长度在 ``[min_chars, max_chars]`` 之内；
  3. 用人工分好的词调用 ``pypinyin.lazy_pinyin``：按词注音，多音字（"重庆"的"重"、"银行"的"行"）
     比逐字注音准确得多。不带声调，ü 写成 v（"绿" -> ``lv``），与拼音输入法的键入方式相同。

一个字正好对应一个音节，所以源序列和目标序列等长、逐位对齐。划分沿用
:func:`~aigc_lib.data.corpora.load_peoples_daily` 的句子划分，再按小句**去重**（第 01 章的教训）：
每份里同一个小句只留第一次出现的那个；验证集去掉训练集里出现过的小句，测试集去掉训练集和验证集里
出现过的小句。"新华社北京"这种套话只留在训练集里，测试集考的都是没见过的小句。

本模块还提供字准确率 :func:`char_accuracy`，以及把平行语料变成 seq2seq 批次的 :func:`seq2seq_collate`。
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Collection, Sequence

import torch

from ...data.corpora import load_peoples_daily

UNKNOWN_CHAR = "□"  # 写不出的字（字表外的字、没见过的音节）的占位：占一个字的位置，输出才与输入的音节一一对齐
_HAN = re.compile(r"[\u4e00-\u9fff]+")  # CJK 统一汉字基本区：常用汉字都在这里
_SYLLABLE = re.compile(r"[a-z]+")


def is_chinese(text: str) -> bool:
    """``text`` 非空且每个字符都是汉字（CJK 统一汉字基本区 U+4E00–U+9FFF）。

    >>> is_chinese("人民日报"), is_chinese("１９９８年"), is_chinese("")
    (True, False, False)
    """
    return bool(_HAN.fullmatch(text))


def split_clauses(sentence: Sequence[tuple[str, str]]) -> list[list[str]]:
    """把一句 ``[(词, 词性), ...]`` 在标点（词性 ``w``）处切开，返回每个小句的词列表。

    >>> split_clauses([("我们", "r"), ("，", "w"), ("爱", "v"), ("北京", "ns"), ("。", "w")])
    [['我们'], ['爱', '北京']]
    """
    clauses, current = [], []
    for word, tag in sentence:
        if tag == "w":
            if current:
                clauses.append(current)
            current = []
        else:
            current.append(word)
    if current:
        clauses.append(current)
    return clauses


def to_pinyin(text: str | Sequence[str]) -> list[str]:
    """汉字 -> 不带声调的拼音音节列表，一个字一个音节。

    ``text`` 可以是字符串，也可以是分好词的列表（更准：pypinyin 会按词查多音字）。

    >>> to_pinyin("我们爱北京")
    ['wo', 'men', 'ai', 'bei', 'jing']
    >>> to_pinyin(["银行", "行长"])                # 按词注音：两个"行"读音不同
    ['yin', 'hang', 'hang', 'zhang']
    """
    from pypinyin import lazy_pinyin  # 只有用到时才导入（第一次导入要载入词典）

    return lazy_pinyin(text if isinstance(text, str) else list(text))


@lru_cache(maxsize=1)
def pinyin_syllables() -> frozenset[str]:
    """普通话所有不带声调的拼音音节（ü 写成 v，与 :func:`to_pinyin` 相同）：pypinyin 字典里 CJK 统一汉字基本区
    每个字的每个读音（pypinyin 0.55 下 419 个，含"嗯"ng、"呣"m 这样的叹词音节）。

    语料的注音也出自 pypinyin，所以语料里的音节都在其中。模型的音节表只有训练集里出现过的（参考模型 397 个）；
    其余的真音节照样可以输入，编码成 <unk>，``aigc predict --json`` 的 ``unknown_syllables`` 会列出它们。

    >>> {"tian", "lv", "zhuang", "ng"} <= pinyin_syllables(), "jintian" in pinyin_syllables()
    (True, False)
    """
    from pypinyin.contrib.tone_convert import to_normal
    from pypinyin.pinyin_dict import pinyin_dict  # 字的编码 -> "hàn,hán" 这样的带声调读音

    toned = {r for code, readings in pinyin_dict.items() if 0x4E00 <= code < 0xA000 for r in readings.split(",")}
    return frozenset(s for s in map(to_normal, toned) if _SYLLABLE.fullmatch(s))  # 去掉声调（ü 写成 v）


def split_syllables(letters: str) -> list[str] | None:
    """把连写的小写字母切成音节：个数最少的切法，个数相同时前面的音节尽量长（和输入法一样）；切不开返回 None。

    >>> split_syllables("woaibeijing"), split_syllables("fangan"), split_syllables("jjjjj")
    (['wo', 'ai', 'bei', 'jing'], ['fang', 'an'], None)
    """
    known = pinyin_syllables()
    longest = max(map(len, known))
    best: list[list[str] | None] = [None] * len(letters) + [[]]  # best[i]：letters[i:] 的最好切法
    for i in range(len(letters) - 1, -1, -1):
        for j in range(min(len(letters), i + longest), i, -1):  # 先试长的，个数相同时保留先找到的
            rest = best[j]
            if rest is not None and letters[i:j] in known and (best[i] is None or len(rest) + 1 < len(best[i])):
                best[i] = [letters[i:j], *rest]
    return best[0]


def parse_pinyin(text: str) -> list[str]:
    """把用户输入的拼音（空格、撇号隔开，大小写均可）切成音节列表；每个音节都要在 :func:`pinyin_syllables` 里。

    >>> parse_pinyin("Wo men  ai bei'jing")
    ['wo', 'men', 'ai', 'bei', 'jing']
    >>> parse_pinyin("jintian")
    Traceback (most recent call last):
    ...
    ValueError: 拼音里有无法识别的音节 ['jintian']：普通话里没有这样的音节。音节之间要用空格，例如：jin tian
    """
    syllables = re.split(r"[\s']+", text.strip().lower())
    syllables = [s for s in syllables if s]
    bad = [s for s in syllables if not _SYLLABLE.fullmatch(s)]
    if bad:
        raise ValueError(
            f"拼音里有无法识别的音节 {bad}：每个音节只能是小写字母（ü 写成 v，不带声调），"
            "音节之间用空格隔开，例如 \"wo men ai bei jing\"。"
        )
    unknown = [s for s in syllables if s not in pinyin_syllables()]
    if unknown:
        splits = {s: split_syllables(s) for s in unknown}
        if all(splits.values()):  # 都是几个音节连写：给出加好空格的整句
            example = " ".join(" ".join(splits.get(s) or [s]) for s in syllables)
            raise ValueError(f"拼音里有无法识别的音节 {unknown}：普通话里没有这样的音节。音节之间要用空格，例如：{example}")
        raise ValueError(f"拼音里有无法识别的音节 {unknown}：普通话里没有这样的音节（不带声调，ü 写成 v），"
                         "音节之间用空格隔开，例如 \"wo men ai bei jing\"。")
    return syllables


def clause_pairs(sentences, min_chars: int = 2, max_chars: int = 20, limit: int | None = None,
                 unique: bool = False, exclude: Collection[str] = ()) -> list[tuple[list[str], str]]:
    """从若干句 ``[(词, 词性), ...]`` 里取出 ``(音节列表, 汉字串)`` 对。

    只保留全是汉字、长度在 ``[min_chars, max_chars]`` 之内的小句；注音失败（pypinyin
    不认识的字会原样返回）的小句也丢掉，保证一个字正好对应一个小写字母的音节。
    ``limit``：凑够这么多对就停（只给前面的句子注音，快速试验时省时间）。
    ``unique``：同一个小句只留第一次出现的；``exclude``：这些小句（例如训练集里的）一律不要。
    """
    if min_chars < 1 or max_chars < min_chars:
        raise ValueError(f"需要 1 <= min_chars <= max_chars，收到 min_chars={min_chars}、max_chars={max_chars}。")
    pairs, seen = [], set()
    for sentence in sentences:
        for words in split_clauses(sentence):
            text = "".join(words)
            if not (min_chars <= len(text) <= max_chars and is_chinese(text)) or text in exclude or text in seen:
                continue
            if unique:
                seen.add(text)
            syllables = to_pinyin(words)
            if len(syllables) == len(text) and all(_SYLLABLE.fullmatch(s) for s in syllables):
                pairs.append((syllables, text))
                if limit is not None and len(pairs) >= limit:
                    return pairs
    return pairs


# 去重的顺序：验证集去掉训练集有的小句，测试集去掉训练集和验证集有的
_EARLIER_SPLITS = {"train": (), "val": ("train",), "test": ("train", "val")}


@lru_cache(maxsize=8)
def clause_texts(split: str, path: str | None = None) -> frozenset[str]:
    """一份数据里所有小句的汉字串（不注音、不限长度，很快），用来跨份去重。"""
    return frozenset("".join(words) for sentence in load_peoples_daily(split, path=path)
                     for words in split_clauses(sentence))


@lru_cache(maxsize=16)
def _cached_pairs(split: str, min_chars: int, max_chars: int, limit: int | None, path: str | None):
    if split not in _EARLIER_SPLITS:
        raise ValueError(f"split 只能是 train、val、test，收到 {split!r}。")
    exclude = frozenset().union(*(clause_texts(earlier, path) for earlier in _EARLIER_SPLITS[split]))
    sentences = load_peoples_daily(split, path=path)
    pairs = clause_pairs(sentences, min_chars, max_chars, limit, unique=True, exclude=exclude)
    return tuple((tuple(s), t) for s, t in pairs)


def pinyin_pairs(split: str = "train", min_chars: int = 2, max_chars: int = 20, limit: int | None = None,
                 path: str | Path | None = None) -> list[tuple[list[str], str]]:
    """《人民日报》某一份（train / val / test）的 ``(音节列表, 汉字串)`` 小句对，顺序固定、去过重（见文件开头）：
    每个小句只出现一次，验证集、测试集里没有训练集出现过的小句。

    第一次调用要给十几万个小句注音（训练集要十几秒），结果缓存在内存里。
    ``limit``：只要前这么多对（0 或 None 表示全部）。
    ``path``：换成你自己的同格式语料（见 :func:`~aigc_lib.data.corpora.load_peoples_daily`）。
    """
    key = None if path is None else str(Path(path).resolve())
    return [(list(s), t) for s, t in _cached_pairs(split, min_chars, max_chars, limit or None, key)]


def word_clauses(split: str = "train", path: str | Path | None = None) -> list[list[str]]:
    """《人民日报》某一份里所有小句的**词**列表（人工分词的标准答案，在标点处切开，不去重、不限长度）。

    词二元语法（``word_bigram.py``）用它计数，和参考 GPT 一样读整份训练集。

    >>> word_clauses("train")[0]                  # doctest: +SKIP
    ['希望', '台湾', '当局', '诚意', '回应', '江', '主席', '八', '项', '主张']
    """
    return [words for sentence in load_peoples_daily(split, path=path) for words in split_clauses(sentence)]


# ---------------------------------------------------------------------------
# 评价
# ---------------------------------------------------------------------------


def char_accuracy(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """字准确率：逐位相同的字数 / 总字数。

    每一对按位置比较；长度不同时，多出或缺少的字都算错，分母取两者中较长的长度，
    所以只输出对的字、省略没把握的字拿不到便宜。

    >>> char_accuracy(["我们爱北京", "你好"], ["我们爱背景", "你"])
    0.5714285714285714
    """
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"参考有 {len(references)} 条，预测有 {len(hypotheses)} 条，两者必须一一对应。")
    correct = sum(a == b for ref, hyp in zip(references, hypotheses) for a, b in zip(ref, hyp))
    total = sum(max(len(ref), len(hyp)) for ref, hyp in zip(references, hypotheses))
    if total == 0:
        raise ValueError("参考和预测都是空的：没有可以比较的字。")
    return correct / total


# ---------------------------------------------------------------------------
# 组批：seq2seq 的 (src, src_lengths, tgt_in, tgt_out)
# ---------------------------------------------------------------------------


def seq2seq_collate(batch, pad_id: int = 0, bos_id: int = 2, eos_id: int = 3, ignore_index: int = -100):
    """DataLoader 的 ``collate_fn``：``[(源编号列表, 目标编号列表), ...]`` -> 一个训练批。

    返回 ``(src (B, S), src_lengths (B,), tgt_in (B, T), tgt_out (B, T))``，T = 最长目标 + 1::

        目标      爱 北 京
        tgt_in    <bos> 爱 北 京          （解码器的输入：右移一位，"老师强制" teacher forcing）
        tgt_out   爱 北 京 <eos>          （每个位置要预测的下一个字）

    补齐位置：src、tgt_in 用 pad_id，tgt_out 用 ignore_index（-100，交叉熵自动跳过）。
    目标放在最后，正好符合 ``fit`` 的约定：``model(src, src_lengths, tgt_in) -> logits``，
    ``loss_fn(logits, tgt_out)``。换参数请用 ``functools.partial(seq2seq_collate, bos_id=...)``。

    >>> src, lengths, tgt_in, tgt_out = seq2seq_collate([([5, 6], [7, 8]), ([9], [10])])
    >>> tgt_in.tolist(), tgt_out.tolist()
    ([[2, 7, 8], [2, 10, 0]], [[7, 8, 3], [10, 3, -100]])
    """
    sources = [torch.as_tensor(src, dtype=torch.long) for src, _ in batch]
    targets = [torch.as_tensor(tgt, dtype=torch.long) for _, tgt in batch]
    src_lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)  # (B,)
    B, S, T = len(batch), max(1, int(src_lengths.max())), max(len(t) for t in targets) + 1
    src = torch.full((B, S), pad_id, dtype=torch.long)  # (B, S)
    tgt_in = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    tgt_out = torch.full((B, T), ignore_index, dtype=torch.long)  # (B, T)
    for i, (s, t) in enumerate(zip(sources, targets)):
        src[i, : len(s)] = s
        tgt_in[i, 0] = bos_id
        tgt_in[i, 1 : len(t) + 1] = t
        tgt_out[i, : len(t)] = t
        tgt_out[i, len(t)] = eos_id
    return src, src_lengths, tgt_in, tgt_out
