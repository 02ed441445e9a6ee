"""个人信息检测的测试集：造句子、埋进个人信息和"难负例"，记下标准答案；再按类别算精确率和召回率。

    >>> from aigc_lib.safety.pii import find_pii
    >>> examples = make_pii_testset(200, seed=0)
    >>> pred = [find_pii(e.text) for e in examples]
    >>> pii_scores([e.spans for e in examples], pred)["phone"]["recall"]
    1.0

难负例是看起来像个人信息、按规则却不是的数字：校验码不对的 18 位数字（也不通过 Luhn，否则它按规则
就是银行卡号）、号段不对的 11 位"手机号"（10、11、12 开头）、没有"QQ"提示词的一串数字、
日期、价格、不通过 Luhn 的 16–19 位订单号。它们都不在标准答案里：检测器把它们认出来就是误报。

``names=True`` 时还埋人名、地名（标准答案的类别是 person / place），用来测命名实体识别模型。
"""

from __future__ import annotations

import random
from typing import NamedTuple

from ..metrics.sequence import span_prf
from .pii import TAGS, Span, id_check_code, is_valid_id_number, luhn_valid

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明", "超", "秀英", "桂英", "建华", "志强"]
PLACES = ["北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "天津", "苏州", "长沙", "郑州"]
PROVINCES = ["11", "12", "13", "31", "32", "33", "37", "44", "51", "61"]  # 身份证号前两位：几个省级行政区划代码
MAIL_DOMAINS = ["qq.com", "163.com", "126.com", "sina.com", "example.cn", "mail.example.com"]

# 句子模板：{x} 是埋个人信息（或难负例）的位置
POSITIVE_TEMPLATES = {
    "phone": ["请拨打{x}联系我。", "我的手机号是{x}，有事打给我", "联系电话：{x}", "客服热线 {x} 全天开通。"],
    "id_card": ["身份证号码：{x}", "他的身份证号是{x}，请核对。", "证件号 {x} 已登记。"],
    "bank_card": ["请转账到卡号{x}。", "银行卡 {x} 已绑定。", "退款将退回尾号所在的卡 {x}"],
    "email": ["简历请发到{x}，谢谢", "邮箱：{x}", "有问题写信给 {x} 吧"],
    "qq": ["加我QQ：{x}", "我的qq号{x}，随时联系", "QQ号码 {x} 已经不用了。"],
    "person": ["{x}昨天去了公司。", "这份报告由{x}负责。", "我和{x}是同学"],
    "place": ["我下周去{x}出差。", "{x}今天下雨了。", "他从{x}来。"],
}
NEGATIVE_TEMPLATES = ["订单号{x}已发货。", "编号 {x} 的包裹到了", "流水号：{x}", "数字 {x} 只是一个例子。"]
PLAIN_NEGATIVES = ["会议定在2023年5月12日下午3点。", "这台电脑售价￥5999.00，比上月便宜了300元。",
                   "全场八折，满199减20。", "第12345号文件已经归档。", "气温在18到25度之间。"]


class Example(NamedTuple):
    """一条测试句子和它的标准答案（按位置排好的 :class:`~aigc_lib.safety.pii.Span`）。"""

    text: str
    spans: list


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def random_phone(rng: random.Random) -> str:
    number = "1" + rng.choice("3456789") + _digits(rng, 9)
    style = rng.random()
    if style < 0.2:
        return f"{number[:3]}-{number[3:7]}-{number[7:]}"
    if style < 0.3:
        return f"+86 {number}"
    return number


def random_id_number(rng: random.Random) -> str:
    birth = f"{rng.randint(1930, 2015)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    first17 = rng.choice(PROVINCES) + _digits(rng, 4) + birth + _digits(rng, 3)
    return first17 + id_check_code(first17)


def random_bank_card(rng: random.Random) -> str:
    while True:
        number = rng.choice(["62", "4", "5"]) + _digits(rng, 0)
        number += _digits(rng, rng.choice([16, 19]) - len(number))
        if luhn_valid(number) and not is_valid_id_number(number):
            return " ".join(number[i:i + 4] for i in range(0, 16, 4)) if len(number) == 16 and rng.random() < 0.3 \
                else number


def random_email(rng: random.Random) -> str:
    user = rng.choice(["li.lei", "hanmeimei", "zhang_san", "wang2020", "test.user"]) + _digits(rng, rng.randint(0, 3))
    if rng.random() < 0.3:
        user = "1" + _digits(rng, 8)  # QQ 邮箱：整个是邮箱，不是 QQ 号
        return f"{user}@qq.com"
    return f"{user}@{rng.choice(MAIL_DOMAINS)}"


def random_qq(rng: random.Random) -> str:
    return str(rng.randint(1, 9)) + _digits(rng, rng.randint(4, 9))


def random_negative(rng: random.Random) -> str:
    """一个难负例：像个人信息，按规则又不是。"""
    kind = rng.randrange(4)
    while True:
        if kind == 0:  # 18 位、校验码不对（也不通过 Luhn）
            number = random_id_number(rng)
            number = number[:17] + rng.choice([c for c in "0123456789X" if c != number[17]])
            if not luhn_valid(number.replace("X", "0")) or number.endswith("X"):
                return number
        elif kind == 1:  # 号段不对的 11 位数字
            return "1" + rng.choice("012") + _digits(rng, 9)
        elif kind == 2:  # 不通过 Luhn 的 16–19 位订单号
            number = str(rng.randint(1, 9)) + _digits(rng, rng.randint(15, 18))
            if not luhn_valid(number) and not is_valid_id_number(number):
                return number
        else:  # 没有提示词的 5–11 位数字（像 QQ 号）
            return random_qq(rng)


GENERATORS = {"phone": random_phone, "id_card": random_id_number, "bank_card": random_bank_card,
              "email": random_email, "qq": random_qq,
              "person": lambda rng: rng.choice(SURNAMES) + rng.choice(GIVEN), "place": lambda rng: rng.choice(PLACES)}


def make_pii_testset(n: int, seed: int = 0, names: bool = False, negative_share: float = 0.3) -> list[Example]:
    """造 ``n`` 句测试句子：每句由 1–3 个小句拼成，每个小句埋一条个人信息或一个难负例（比例约为
    ``negative_share``），偶尔是没有数字的普通句子。同一个 ``seed`` 总得到同样的句子。

    ``names=False`` 时不埋人名、地名（规则检测器的测试）。返回 :class:`Example` 的列表。
    """
    if n < 0 or not 0 <= negative_share <= 1:
        raise ValueError(f"n 应 >= 0、negative_share 应在 [0, 1] 之间，收到 n={n}、negative_share={negative_share}。")
    rng = random.Random(seed)
    kinds = [k for k in TAGS if names or k not in ("person", "place")]
    examples = []
    for _ in range(n):
        text, spans = "", []
        for _ in range(rng.randint(1, 3)):
            if text and text[-1] not in "。，！？":
                text += "。"  # 小句之间断开：邮箱后面紧跟 "QQ" 两个字母时，连人也分不清邮箱在哪里结束
            roll = rng.random()
            if roll < 0.1:
                text += rng.choice(PLAIN_NEGATIVES)
                continue
            if roll < 0.1 + negative_share:
                template, kind, value = rng.choice(NEGATIVE_TEMPLATES), None, random_negative(rng)
            else:
                kind = rng.choice(kinds)
                template, value = rng.choice(POSITIVE_TEMPLATES[kind]), GENERATORS[kind](rng)
            before, after = template.split("{x}")
            start = len(text) + len(before)
            if kind is not None:
                spans.append(Span(start, start + len(value), kind, value))
            text += before + value + after
        examples.append(Example(text, spans))
    return examples


def pii_scores(gold, pred) -> dict:
    """按类别的精确率、召回率、F1：一个预测片段与标准片段的起点、终点、类别都相同才算对。

    ``gold``、``pred``：每句一个 :class:`~aigc_lib.safety.pii.Span` 列表（或 ``(start, end, kind, ...)`` 元组）。
    返回 ``{类别: {"precision", "recall", "f1", "support"}, ..., "micro": {...}}``；support 是标准片段数。
    类别按 :data:`~aigc_lib.safety.pii.TAGS` 的顺序排（不认识的类别排在后面，按名字），每次运行都一样。
    没有预测时精确率记为 0（与 scikit-learn 的 zero_division=0 相同）。
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold 有 {len(gold)} 句，pred 有 {len(pred)} 句：应一句对一句。")
    gold_sets = [{tuple(s[:3]) for s in g} for g in gold]  # 每句 {(起点, 终点, 类别)}
    pred_sets = [{tuple(s[:3]) for s in p} for p in pred]
    found = {kind for spans in gold_sets + pred_sets for _, _, kind in spans}
    kinds = [k for k in TAGS if k in found] + sorted(found - set(TAGS))

    def scores(kind: str | None) -> dict:  # kind=None：所有类别合在一起（micro）
        def of_kind(spans):
            return {s for s in spans if kind in (None, s[2])}

        g = [of_kind(spans) for spans in gold_sets]
        precision, recall, f1 = span_prf(g, [of_kind(spans) for spans in pred_sets])
        return {"precision": precision, "recall": recall, "f1": f1, "support": sum(map(len, g))}

    return {**{kind: scores(kind) for kind in kinds}, "micro": scores(None)}
