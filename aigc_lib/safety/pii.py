"""找出并遮盖中文文本里的个人信息（《个人信息保护法》所说的"已识别或者可识别的自然人的各种信息"）::

    >>> find_pii("请打 13812345678 或写信到 li.lei@example.com")
    [Span(start=3, end=14, kind='phone', text='13812345678'), Span(start=20, end=38, kind='email', text='li.lei@example.com')]
    >>> mask_pii("身份证号 11010519491231002X，手机 138-1234-5678")
    ('身份证号 [身份证号]，手机 [手机号]', {'id_card': 1, 'phone': 1})

每一类怎样认（都只认 ASCII 数字和全角数字；全角字符先一对一地换成半角再找，所以位置不变）：

============  ==================================================================================
类别           规则
============  ==================================================================================
phone         大陆手机号：1[3-9] 开头的 11 位数字，可带 +86 / 86 前缀，可写成 3-4-4 分组（空格或连字符）
id_card       居民身份证号（GB 11643-1999）：17 位数字 + 校验码（数字或 X），第 1 位 1–9，
              第 7–14 位是 1900 年至今的真实日期，校验码满足 ISO 7064 MOD 11-2
bank_card     银行卡号：16–19 位数字（可每 4 位一组，用空格或连字符隔开），通过 Luhn 校验
email         电子邮箱：``名字@域名.后缀``
qq            QQ 号：5–11 位、不以 0 开头的数字，**前面紧跟** "QQ""qq""QQ号""扣扣"之类的提示词
              （可有冒号、空格）。没有提示词的一串数字不算 QQ 号——否则价格、订单号、年份都会被吞掉
person/place  人名 / 地名：课程的命名实体识别模型（``pretrained("ner")``）找到的 PER / LOC，``names=True`` 时才找
============  ==================================================================================

数字串两边不能紧挨着别的数字（``(?<!\\d)…(?!\\d)``）：一个 20 位的订单号里不会"找到"手机号；
银行卡号后面也不能紧跟 X（那是校验码不对的身份证号的样子）。

**重叠时谁赢**：先比长度，长的赢（``13812345678@qq.com`` 整个是邮箱，不是手机号）；一样长时按
:data:`PRIORITY` 的顺序，越具体的规则越靠前（18 位数字同时像身份证号和银行卡号时算身份证号）。
所以结果里的片段互不重叠，按位置排好。
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import NamedTuple

from ..metrics import bio_to_spans

# 每一类的遮盖标签；也是 find_pii 返回的 kind 的全部取值
TAGS = {"email": "[邮箱]", "id_card": "[身份证号]", "bank_card": "[银行卡号]", "phone": "[手机号]",
        "qq": "[QQ号]", "person": "[姓名]", "place": "[地名]"}
PRIORITY = tuple(TAGS)  # 一样长时靠前的赢
NER_KINDS = {"PER": "person", "LOC": "place"}  # 命名实体识别模型的类型 -> 这里的类别

# 全角字符（！到～）一对一换成半角，全角空格换成空格：换完位置不变
_HALF_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}

_PHONE = re.compile(r"(?<![\d+])(?:\+?86[ -]?)?1[3-9]\d(?:\d{8}|[ -]\d{4}[ -]\d{4})(?!\d)")
_ID_CARD = re.compile(r"(?<!\d)[1-9]\d{16}[\dXx](?![\dA-Za-z])")
_BANK_CARD = re.compile(r"(?<!\d)(?:\d{16,19}|\d{4}(?:[ -]\d{4}){3}(?:[ -]\d{1,3})?)(?![\dXx])")
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_QQ = re.compile(r"(?:QQ|qq|Qq|扣扣)(?:号码|号)?[ \t]*[:：]?[ \t]*([1-9]\d{4,10})(?!\d)")

ID_WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
ID_CHECK_CODES = "10X98765432"  # 加权和 mod 11 -> 校验码


class Span(NamedTuple):
    """文本里的一段个人信息：``text[start:end]``，类别 ``kind``（见 :data:`TAGS`）。"""

    start: int
    end: int
    kind: str
    text: str


# ---------------------------------------------------------------------------
# 1. 校验：身份证号的校验码、出生日期，银行卡号的 Luhn
# ---------------------------------------------------------------------------


def id_check_code(first17: str) -> str:
    """身份证号前 17 位 -> 第 18 位校验码（GB 11643-1999，ISO 7064 MOD 11-2）。

    第 i 位（从 0 数）的权重是 :math:`2^{17-i} \\bmod 11`；加权和 S，校验码是 ``"10X98765432"[S mod 11]``，
    也就是使 :math:`S + 校验码 \\equiv 1 \\pmod{11}` 的那个数（10 写作 X）。

    >>> id_check_code("11010519491231002")
    'X'
    """
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"身份证号的前 17 位应是 17 个数字，收到 {first17!r}。")
    return ID_CHECK_CODES[sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS)) % 11]


def is_valid_id_number(number: str, today: datetime.date | None = None) -> bool:
    """18 位居民身份证号是否合格：格式、出生日期（1900-01-01 至 ``today``）和校验码都对。

    >>> is_valid_id_number("11010519491231002X"), is_valid_id_number("110105194912310021")
    (True, False)
    """
    number = number.upper()
    if not re.fullmatch(r"[1-9]\d{16}[\dX]", number):
        return False
    try:
        born = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:  # 2 月 30 日、13 月之类
        return False
    if not datetime.date(1900, 1, 1) <= born <= (today or datetime.date.today()):
        return False
    return id_check_code(number[:17]) == number[17]


def luhn_valid(number: str) -> bool:
    """Luhn 校验（银行卡号、IMEI 用它）：从右往左，偶数位（第 2、4……位）乘 2，乘积大于 9 的减 9，
    全部加起来能被 10 整除就合格。只接受数字。

    >>> luhn_valid("79927398713"), luhn_valid("79927398710")
    (True, False)
    """
    if not number.isdigit():
        raise ValueError(f"Luhn 校验只接受数字，收到 {number!r}（先去掉空格和连字符）。")
    total = 0
    for i, digit in enumerate(reversed(number)):
        d = int(digit)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# ---------------------------------------------------------------------------
# 2. 找：每一类各找各的，再按"长的赢、一样长看优先级"挑出互不重叠的
# ---------------------------------------------------------------------------


def _candidates(text: str) -> list[Span]:
    """所有规则各自找到的片段（可能重叠）。``text`` 已换成半角。"""
    found = [Span(m.start(), m.end(), "email", m.group()) for m in _EMAIL.finditer(text)]
    found += [Span(m.start(), m.end(), "phone", m.group()) for m in _PHONE.finditer(text)]
    found += [Span(m.start(), m.end(), "id_card", m.group()) for m in _ID_CARD.finditer(text)
              if is_valid_id_number(m.group())]
    found += [Span(m.start(), m.end(), "bank_card", m.group()) for m in _BANK_CARD.finditer(text)
              if luhn_valid(re.sub(r"[ -]", "", m.group()))]
    found += [Span(m.start(1), m.end(1), "qq", m.group(1)) for m in _QQ.finditer(text)]
    return found


def _name_spans(text: str, ner) -> list[Span]:
    """命名实体识别模型找到的人名、地名。模型不认空白（它的训练语料没有空格），所以只给它非空白的字，
    再把位置换回原文。"""
    positions = [i for i, ch in enumerate(text) if not ch.isspace()]
    if not positions:
        return []
    tags = ner.task.predict_tags(ner.model, ner.config, [[text[i] for i in positions]], ner.device)[0]
    spans = []
    for kind, start, end in bio_to_spans(tags):
        if kind in NER_KINDS:
            a, b = positions[start], positions[end - 1] + 1
            spans.append(Span(a, b, NER_KINDS[kind], text[a:b]))
    return spans


@functools.lru_cache(maxsize=1)
def _default_ner():
    from ..zoo import pretrained

    return pretrained("ner")


def select_spans(candidates: list[Span]) -> list[Span]:
    """从可能重叠的候选里挑出互不重叠的：长的先挑，一样长按 :data:`PRIORITY`，再按位置；结果按位置排好。"""
    chosen: list[Span] = []
    for span in sorted(candidates, key=lambda s: (s.start - s.end, PRIORITY.index(s.kind), s.start)):
        if all(span.end <= c.start or c.end <= span.start for c in chosen):
            chosen.append(span)
    return sorted(chosen)


def find_pii(text: str, names: bool = False, ner=None) -> list[Span]:
    """找出 ``text`` 里的个人信息，返回互不重叠、按位置排好的 :class:`Span` 列表（规则见模块说明）。

    ``names=True`` 时也找人名、地名：用 ``ner``（一个 :func:`~aigc_lib.pretrained` 读出的标注模型），
    不给就用 ``pretrained("ner")``（第一次调用时读入，之后复用）。
    """
    if not isinstance(text, str):
        raise TypeError(f"find_pii 要一段文字（str），收到 {type(text).__name__}。")
    half = text.translate(_HALF_WIDTH)
    candidates = [Span(s.start, s.end, s.kind, text[s.start:s.end]) for s in _candidates(half)]
    if names:
        candidates += _name_spans(text, ner if ner is not None else _default_ner())
    return select_spans(candidates)


def mask_pii(text: str, names: bool = False, ner=None, tags: dict | None = None) -> tuple[str, dict]:
    """把 ``text`` 里的个人信息换成标签（例如 ``[手机号]``），返回 ``(遮盖后的文字, {类别: 个数})``。

    片段之外的文字一个字也不改。``tags`` 可以换掉部分标签，例如 ``{"phone": "***"}``。
    """
    labels = TAGS | (tags or {})
    pieces, counts, last = [], {}, 0
    for span in find_pii(text, names=names, ner=ner):
        pieces += [text[last:span.start], labels[span.kind]]
        counts[span.kind] = counts.get(span.kind, 0) + 1
        last = span.end
    pieces.append(text[last:])
    return "".join(pieces), counts
