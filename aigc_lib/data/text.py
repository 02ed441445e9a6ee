"""文本预处理：清洗、切分（字 / 词）和词表。

清洗由几个小步骤组成，每一步都是公开函数，可以单独调用，也可以在 :func:`clean_text` 里逐个关掉::

    strip_html -> normalize_width -> remove_urls -> remove_emoji
               -> to_simplified -> collapse_punctuation -> normalize_whitespace

    >>> clean_text("<b>很好&amp;便宜</b>！！！ 詳見 https://t.cn/abc ＡＢＣ１２３ 😀")
    '很好&便宜！ 详见 ABC123'

切分用 :func:`tokenize`（``char`` 按字，``word`` 用 jieba 精确模式），再用 :class:`Vocab`
把词变成整数编号，供模型使用。本模块只依赖标准库、jieba 和 opencc，可以单独复制。
"""

from __future__ import annotations

import html
import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

# ----------------------------------------------------------------------------------------------
# 清洗的各个步骤
# ----------------------------------------------------------------------------------------------

_SCRIPT_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->|<[!?][A-Za-z][^<>]*>", re.DOTALL)  # 注释、<!DOCTYPE>、<?xml?>
# 换行类标签换成空格（否则两句话会粘在一起），其余标签（<b>、<span> ...）直接删掉。
_BLOCK_TAG = re.compile(r"</?(?:br|p|div|li|tr|td|th|h[1-6]|ul|ol|table)(?:\s[^<>]*)?/?>", re.IGNORECASE)
# 标签名后面只能跟空白、"/" 或 ">"，所以 "~{N@Iz<dC;SP>" 这类乱码、"价格<5000" 不会被误删。
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")


def strip_html(text: str) -> str:
    """删除 HTML 标签并把实体还原成字符。

    ``<script>``/``<style>`` 连同内容一起删除；``<br>``、``<p>`` 等换行类标签变成空格；
    实体（``&amp;``、``&nbsp;``、``&#36229;``）用标准库 ``html.unescape`` 还原。先删标签、
    后还原实体，所以正文里写的 ``&lt;b&gt;`` 会还原成字面的 ``<b>`` 而不会被当成标签删掉。

    >>> strip_html("<p>质量&nbsp;很好</p><br/>推荐&#65281;")
    ' 质量\\xa0很好  推荐！'

    （``&nbsp;`` 还原成不换行空格 ``\\xa0``，由 :func:`normalize_whitespace` 统一处理。）
    """
    text = _SCRIPT_STYLE.sub(" ", text)
    text = _COMMENT.sub(" ", text)
    text = _BLOCK_TAG.sub(" ", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# URL 只由 ASCII 字符组成，所以遇到汉字自然停下："见http://a.cn/x很好" 只删到 x。
# 结尾不收 . , ! ? 这类标点：它们多半属于句子，不属于网址。
_URL = re.compile(
    r"(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-._~:/?#\[\]@$&*+=%]*[A-Za-z0-9/\-_=#%&~]"
    r"|(?<![A-Za-z0-9.@-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:com|cn|net|org|edu|gov|info)"
    r"(?:\.cn)?(?:/[A-Za-z0-9\-._~/?#=%&]*[A-Za-z0-9/\-_=#%&~])?(?![A-Za-z0-9])",
    re.IGNORECASE,
)


def remove_urls(text: str) -> str:
    """删除网址（``http(s)://``、``www.`` 开头或 ``xxx.com`` 这样的裸域名）和电子邮件地址。

    >>> remove_urls("详见 https://example.com/a?b=1 或写信 me@qq.com。")
    '详见  或写信 。'
    """
    text = _EMAIL.sub("", text)  # 先删邮箱，否则它的域名部分会被当成网址，留下 "me@"
    return _URL.sub("", text)


# emoji 所在的码位区间（Unicode 15），以及组合 emoji 用的零宽连接符、变体选择符等。
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),  # 麻将牌、扑克、带圈字母、国旗字母、表情、交通、符号与象形文字 ...
    (0x2600, 0x27BF),    # 杂项符号（☀☺★）和装饰符号（✓❤✨）
    (0x2B00, 0x2BFF),    # 箭头和星星（⭐⬆）
    (0xFE00, 0xFE0F),    # 变体选择符：把 ❤ 变成彩色 ❤️ 的那个看不见的字符
    (0x200D, 0x200D),    # 零宽连接符：👨‍👩‍👧 由它把几个 emoji 粘在一起
    (0x20E3, 0x20E3),    # 组合键帽：1️⃣
    (0xE0000, 0xE007F),  # 标签字符（部分旗帜）
)
_EMOJI = re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _EMOJI_RANGES) + "]")


def remove_emoji(text: str) -> str:
    """删除 emoji 和看不见的控制 / 格式字符（零宽空格、BOM、``\\x07`` 等）。

    制表符和换行不算控制字符噪声，留给 :func:`normalize_whitespace` 处理。
    ``:)``、``@_@`` 这样用普通字符拼出来的颜文字不受影响。

    >>> remove_emoji("好评👍🏻！\\u200b推荐❤️")
    '好评！推荐'
    """
    text = _EMOJI.sub("", text)
    if text.isprintable():  # 快速路径：绝大多数文本里没有控制字符，不必逐字检查
        return text
    return "".join(
        ch for ch in text
        if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf")
    )


# 中文读者期待看到的全角标点：NFKC 会把它们变成半角（"，" -> ","），我们不要这一步。
# 。、“”《》等本来就不受 NFKC 影响，写在这里是为了让这张表一眼看全。
KEEP_FULL_WIDTH = "，。！？：；（）【】《》〈〉「」『』、“”‘’…—～·"
_KEEP_RUN = re.compile("([" + re.escape(KEEP_FULL_WIDTH) + "]+)")


def normalize_width(text: str) -> str:
    """全角转半角：做 Unicode NFKC 规范化，但保留中文标点。

    NFKC 把全角字母数字变成半角（``ＡＢＣ１２３`` -> ``ABC123``）、全角空格变成普通空格、
    ``①`` 变成 ``1``；中文标点 :data:`KEEP_FULL_WIDTH`（，！？：；（）… 等）保持原样。

    >>> normalize_width("ＰＹＴＨＯＮ３，真好！Ｏｋ？")
    'PYTHON3，真好！Ok？'
    """
    if unicodedata.is_normalized("NFKC", text):  # 快速路径（Python 3.8+）：没有可转换的字符
        return text
    # 切成 "要保留的标点串" 和 "其余部分" 交替的片段，只对其余部分做 NFKC。
    # 不逐字做 NFKC，是因为 "e" + 组合重音这类字符要连在一起才能正确合并。
    parts = _KEEP_RUN.split(text)
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


@lru_cache(maxsize=1)
def _t2s_converter():
    try:
        import opencc
    except ImportError as err:  # pragma: no cover - opencc 是课程的依赖
        raise ImportError(
            "繁体转简体需要 opencc 包：请运行 pip install opencc，"
            "或在 clean_text(..., traditional=False) 里关掉这一步。"
        ) from err
    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """繁体转简体（OpenCC 的 ``t2s`` 词典，按词转换，不是逐字替换）。

    按词转换才能处理一对多：``頭髮`` -> ``头发``，``發展`` -> ``发展``，而 ``乾隆`` 保持不变。

    >>> to_simplified("這本書的品質沒話說")
    '这本书的品质没话说'
    """
    return _t2s_converter().convert(text)


# "..." 与 "。。。" 是省略号的误写，统一成中文省略号 "……"。
_DOTS = re.compile(r"(?:\.{3,}|。{3,}|…+)")
_DASHES = re.compile(r"—{2,}")
# 同一个非字母数字字符（下划线也算）连续出现；是不是标点再由 _is_punct 判断
_REPEATED = re.compile(r"([^\w\s…—]|_)\1+")


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P") or ch in "~～"


def collapse_punctuation(text: str) -> str:
    """把重复的标点压成一个：``！！！！`` -> ``！``，``??`` -> ``?``，``~~~`` -> ``~``。

    例外：省略号和破折号在中文里本来就占两个字，``。。。``、``...``、``…`` 统一写成
    ``……``，``————`` 写成 ``——``。不同标点连在一起（``?!``）不动。

    >>> collapse_punctuation("太好了！！！！就是贵。。。。")
    '太好了！就是贵……'
    """
    text = _DOTS.sub("……", text)
    text = _DASHES.sub("——", text)
    return _REPEATED.sub(lambda m: m[1] if _is_punct(m[1]) else m[0], text)


_SPACES = re.compile(r"\s+")


def normalize_whitespace(text: str) -> str:
    """所有空白（空格、制表符、换行、全角空格 ``\\u3000``、``\\xa0``）连成一段的压成一个空格，
    并去掉首尾空白。

    中文词之间本来没有空格；评论里的空格常代替逗号分隔短句，所以保留一个，不全删。

    >>> normalize_whitespace("  房间\\u3000很大\\n\\n 服务\\t好 ")
    '房间 很大 服务 好'
    """
    return _SPACES.sub(" ", text).strip()


def clean_text(
    text: str,
    html: bool = True,
    urls: bool = True,
    emoji: bool = True,
    width: bool = True,
    traditional: bool = True,
    punctuation: bool = True,
    whitespace: bool = True,
) -> str:
    """按固定顺序做全部清洗步骤；每个参数关掉对应的一步。

    顺序有讲究：先去 HTML（实体里可能藏着全角字符），再全角转半角（全角网址 ``ｗｗｗ．`` 才认得出），
    再删网址、emoji，繁转简，压缩标点，最后整理空白（前面各步删东西会留下空格）。

    参数：``text`` 一条原始文本；其余都是布尔开关，默认全开。返回清洗后的字符串（可能为空串）。

    >>> clean_text("<i>很棒</i>&nbsp;&nbsp;👍👍 超讚！！！")
    '很棒 超赞！'
    >>> clean_text("很棒！！！", punctuation=False)
    '很棒！！！'
    """
    if not isinstance(text, str):
        raise TypeError(f"clean_text 需要字符串，收到的是 {type(text).__name__}。读文件请先用 read_text(path)。")
    if html:
        text = strip_html(text)
    if width:
        text = normalize_width(text)
    if urls:
        text = remove_urls(text)
    if emoji:
        text = remove_emoji(text)
    if traditional:
        text = to_simplified(text)
    if punctuation:
        text = collapse_punctuation(text)
    if whitespace:
        text = normalize_whitespace(text)
    return text


# ----------------------------------------------------------------------------------------------
# 切分
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _jieba_tokenizer(user_dict: str | None):
    """每个用户词典一个独立的 jieba 分词器，互不影响，也不改动全局的 ``jieba`` 默认分词器。"""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # 不打印 "Building prefix dict ..."（其中含本机缓存路径）
    if user_dict is None:
        return jieba.dt  # jieba.cut 背后的默认分词器
    tokenizer = jieba.Tokenizer()
    tokenizer.load_userdict(user_dict)
    return tokenizer


def tokenize(text: str, mode: str = "char", user_dict: str | Path | None = None) -> list[str]:
    """把一条文本切成 token 列表，空白不算 token。

    - ``mode="char"``：每个字一个 token，``"我爱NLP"`` -> ``['我', '爱', 'N', 'L', 'P']``；
    - ``mode="word"``：jieba 精确模式（带 HMM 新词发现），``"我爱自然语言处理"`` ->
      ``['我', '爱', '自然语言', '处理']``。
    - ``user_dict``：jieba 用户词典的路径（每行 ``词 [词频] [词性]``，UTF-8），只对 ``word`` 有效。

    >>> tokenize("我爱 北京")
    ['我', '爱', '北', '京']
    """
    if mode == "char":
        return [ch for ch in text if not ch.isspace()]
    if mode == "word":
        if user_dict is not None:
            path = Path(user_dict)
            if not path.is_file():
                raise FileNotFoundError(
                    f"找不到用户词典 {path}：请检查路径，文件每行写一个词，如 “自然语言处理 10 n”。"
                )
            user_dict = str(path.resolve())
        return [w for w in _jieba_tokenizer(user_dict).lcut(text) if not w.isspace()]
    raise ValueError(f"tokenize 的 mode 只能是 'char' 或 'word'，收到 {mode!r}。")


def preprocess(
    texts: Iterable[str],
    mode: str = "word",
    user_dict: str | Path | None = None,
    stopwords: Iterable[str] = (),
    clean: bool = True,
) -> Iterator[list[str]]:
    """逐条清洗并切分：对 ``texts`` 里的每条文本产出（yield）一个 token 列表。

    这是一个**生成器**：调用时什么都不做，遍历时才一条一条处理，所以几十万条评论也不用一次
    装进内存；但它只能遍历一次，需要反复使用时写 ``list(preprocess(texts))``。

    参数：``mode``/``user_dict`` 同 :func:`tokenize`；``stopwords`` 要去掉的词；
    ``clean=False`` 时跳过 :func:`clean_text`。

    >>> list(preprocess(["質量很好！！", "<b>一般</b>"], stopwords={"！"}))
    [['质量', '很', '好'], ['一般']]
    """
    stop = set(stopwords)
    for text in texts:
        if clean:
            text = clean_text(text)
        yield [tok for tok in tokenize(text, mode, user_dict) if tok not in stop]


# ----------------------------------------------------------------------------------------------
# 词表
# ----------------------------------------------------------------------------------------------

class Vocab:
    """token <-> 整数编号。``<pad>`` 固定为 0，``<unk>`` 固定为 1，其余按词频从高到低编号。

    参数：
    - ``token_lists``：token 列表的列表，例如 ``[['我', '爱'], ['你']]``（每句一个列表）；
    - ``min_freq``：出现次数少于它的 token 不进词表，编码时变成 ``<unk>``；
    - ``max_size``：词表总大小上限（含 ``<pad>``、``<unk>`` 和 ``specials``），``None`` 不限；
    - ``specials``：额外的保留 token，如 ``("<bos>", "<eos>")``，排在 ``<unk>`` 之后。

    词频相同时按首次出现的先后编号，所以同样的输入总得到同样的词表。

    >>> vocab = Vocab([["我", "爱", "你"], ["我", "想", "你"]], min_freq=2)
    >>> vocab.itos
    ['<pad>', '<unk>', '我', '你']
    >>> vocab.encode(["我", "爱", "你"])
    [2, 1, 3]
    >>> vocab.decode([2, 1, 3, 0, 0], skip_pad=True)
    ['我', '<unk>', '你']
    """

    PAD, UNK = "<pad>", "<unk>"
    pad_id, unk_id = 0, 1

    def __init__(
        self,
        token_lists: Iterable[Sequence[str]] = (),
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (),
    ) -> None:
        reserved = [self.PAD, self.UNK, *specials]
        if len(set(reserved)) != len(reserved):
            raise ValueError(f"保留 token 有重复：{reserved}；specials 里不要再写 <pad> 或 <unk>。")
        if max_size is not None and max_size < len(reserved):
            raise ValueError(f"max_size={max_size} 比保留 token 的个数 {len(reserved)} 还小，请调大 max_size。")
        counter: Counter[str] = Counter()
        for tokens in token_lists:
            if isinstance(tokens, str):
                raise TypeError(
                    f"Vocab 需要 token 列表的列表（每句一个列表），却收到了字符串 {tokens[:20]!r}。"
                    "只有一句时请写成 Vocab([tokens])；整段文本请先用 tokenize() 切分。"
                )
            counter.update(tokens)
        self.min_freq, self.max_size = min_freq, max_size
        self.freqs = counter
        kept = [tok for tok, n in counter.most_common() if n >= min_freq and tok not in reserved]
        if max_size is not None:
            kept = kept[: max_size - len(reserved)]
        self.itos: list[str] = reserved + kept
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        """一个 token 的编号，词表外的词得到 ``unk_id``。"""
        return self.stoi.get(token, self.unk_id)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """token 列表 -> 编号列表，长度不变；词表外的 token 变成 ``unk_id``（1）。"""
        if isinstance(tokens, str):
            raise TypeError("encode 需要 token 列表，收到的是字符串；请先 tokenize(text) 再编码。")
        unk = self.unk_id
        return [self.stoi.get(tok, unk) for tok in tokens]

    def decode(self, ids: Iterable[int], skip_pad: bool = False) -> list[str]:
        """编号列表（或一维张量）-> token 列表；``skip_pad=True`` 时去掉 ``<pad>``。"""
        tokens = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise IndexError(f"编号 {i} 超出词表范围 [0, {len(self.itos)})：这个编号不是用这个词表编码的。")
            if skip_pad and i == self.pad_id:
                continue
            tokens.append(self.itos[i])
        return tokens

    def coverage(self, token_lists: Iterable[Sequence[str]]) -> float:
        """``token_lists`` 里有多少比例的 token 在词表内（不会变成 ``<unk>``）。"""
        total = known = 0
        for tokens in token_lists:
            total += len(tokens)
            known += sum(tok in self.stoi for tok in tokens)
        return known / total if total else 0.0

    def save(self, path: str | Path) -> None:
        """存成 UTF-8 JSON：``{"itos": [...], "min_freq": ..., "max_size": ...}``，汉字不转义，可直接阅读。"""
        data = {"itos": self.itos, "min_freq": self.min_freq, "max_size": self.max_size}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """读回 :meth:`save` 写的文件，得到编号完全相同的词表（``freqs`` 不保存，读回后为空）。"""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            itos = data["itos"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path} 不是 Vocab.save() 写出的词表文件（需要含 \"itos\" 列表的 JSON）：{err}") from err
        try:
            vocab = cls.from_itos(itos)
        except ValueError as err:
            raise ValueError(f"{path} 里的词表损坏：{err}") from None
        vocab.min_freq, vocab.max_size = data.get("min_freq", 1), data.get("max_size")
        return vocab

    @classmethod
    def from_itos(cls, itos: Sequence[str]) -> Vocab:
        """由编号顺序的 token 列表重建词表（例如检查点里存的 ``vocab.itos``），编号保持不变。"""
        itos = list(itos)
        if itos[:2] != [cls.PAD, cls.UNK] or len(set(itos)) != len(itos):
            raise ValueError("前两个 token 必须是 <pad>、<unk>，且不能有重复的 token。")
        vocab = cls()
        vocab.itos = itos
        vocab.stoi = {tok: i for i, tok in enumerate(itos)}
        return vocab

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, min_freq={self.min_freq}, max_size={self.max_size})"
