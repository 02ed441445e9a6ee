"""指令数据：用课程自己的标注语料拼出"指令 -> 回答"，不联网。

五种指令，每种有几种说法（同一件事换着问，模型学的是意思而不是某一句固定的话）：

==========  ===========================  =============================  ======================
种类         来源                          用户说                          助手答
==========  ===========================  =============================  ======================
sentiment   评论（load_reviews）          判断这条评论的情感：…            正面 / 负面
segment     《人民日报》人工分词            给这句话分词：…                  词之间用空格隔开
pinyin      拼音语料（pinyin_pairs）        把拼音转成汉字：jin tian         今天
ner         《人民日报》的人名地名机构名     找出句子里的人名地名机构名：…      人名：…；地名：…；机构名：…（没有就答"没有"）
continue    《人民日报》的句子              续写这句话：前半句                后半句
==========  ===========================  =============================  ======================

**对话模板**（:func:`render_chat`）：每条消息是 ``角色标记 + 内容 + <|end|>``，角色标记是
``<|user|>`` 或 ``<|assistant|>``；生成时在最后写上 ``<|assistant|>``，让模型接着写助手的话，
写到 ``<|end|>`` 停下。三个特殊标记在词表里各是**一个** token（:func:`chat_tokens`），
用户打不出来，也就不会和正文混在一起。

**划分**：每个来源用它自己的 train / val / test（评论、《人民日报》的句子划分、拼音小句的划分），
再去重：验证集去掉训练集里出现过的原文，测试集去掉训练集和验证集里出现过的——不分种类，同一句
原文不会出现在两份里（测试里检查）。

**词表外的字**：SFT 从参考语言模型 lm-gpt 出发，它的字表（约 3.3k 字，全角数字和字母）是定的。
我们的决定：词表**只追加**三个特殊标记、26 个小写字母与空格（:data:`NEW_TOKENS`，分词的答案也用
空格隔开词），以及**每个不带声调的拼音音节各一个 token**（:func:`syllables`，约 420 个）：
``"jin tian"`` 切成 ``["jin", " ", "tian"]``，不是 8 个字母。一个音节 token 的词向量从"读这个音的字"的
词向量的平均开始（:func:`reading_groups`，见 ``task.build_chat_gpt``），模型一开始就知道 tian 和
天、田、甜离得近；如果只给 26 个字母，模型要从几千条样本里自己学会"字母组合 -> 字"，实测学不会。
不是音节的一串字母（例如 iphone）仍按字母切。其余不在字表里的字照旧变成 ``<unk>``。评论里的半角
数字和标点先转成全角（:func:`to_model_text`，与语料的写法一致），这样"2小时"不会变成 ``<unk>``。
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

from ...data.corpora import entity_spans, load_peoples_daily, load_reviews
from ...data.text import Vocab
from ..pinyin.data import clause_texts, pinyin_pairs, pinyin_syllables

syllables = pinyin_syllables  # 所有不带声调的拼音音节：与拼音任务检查用户输入时是同一份

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = (USER, ASSISTANT, END)
ROLES = {"user": USER, "assistant": ASSISTANT}
# 追加到 lm-gpt 字表后面的 token：特殊标记、拼音的小写字母、空格（拼音音节之间、分词答案的词之间）
NEW_TOKENS = SPECIAL_TOKENS + tuple("abcdefghijklmnopqrstuvwxyz ")
KINDS = ("sentiment", "segment", "pinyin", "ner", "continue")
LABELS = {1: "正面", 0: "负面"}
ENTITY_NAMES = {"PER": "人名", "LOC": "地名", "ORG": "机构名"}
NO_ENTITY = "没有"

# 每种指令的几种说法，{} 处放输入
PHRASINGS = {
    "sentiment": ("判断这条评论的情感：{}", "这条评论是正面还是负面？{}", "评论：{}\n这条评论的情感是？"),
    "segment": ("给这句话分词：{}", "请把下面的句子切分成词：{}", "分词：{}"),
    "pinyin": ("把拼音转成汉字：{}", "这段拼音写成汉字是什么？{}", "拼音：{}\n请写出汉字。"),
    "ner": ("找出句子里的人名地名机构名：{}", "这句话提到了哪些人名、地名和机构名？{}", "实体识别：{}"),
    "continue": ("续写这句话：{}", "接着写下去：{}", "把这句话补充完整：{}"),
}

# 每种输入的长度上限（字）：加上说法、特殊标记和回答，一条对话要放得进 128 个位置
MAX_REVIEW = 60
MAX_SEGMENT = 36   # 回答在词之间加空格，最长约 2 倍
MAX_NER = 48
MAX_PINYIN = 12    # 一个音节平均约 4 个字母（含空格）
CONTINUE_RANGE = (16, 60)  # 续写用的句子长度；前一半是提示，后一半（最多 20 字）是回答
MAX_CONTINUATION = 20


@dataclass(frozen=True)
class Example:
    """一条指令样本。``source`` 是它来自的原句（检查划分不重叠时用）。"""

    kind: str
    prompt: str
    answer: str
    source: str


# ---------------------------------------------------------------------------
# 模板与编码
# ---------------------------------------------------------------------------


def to_model_text(text: str) -> str:
    """用户的文字 -> 模型的写法：半角 ASCII（数字、大写字母、标点）转成全角，与《人民日报》语料一致；
    小写字母和空格保留（拼音用它们）。

    >>> to_model_text("电池能用2小时, iphone")
    '电池能用２小时， iphone'
    """
    return "".join(ch if ch == " " or "a" <= ch <= "z" or not "!" <= ch <= "~" else chr(ord(ch) + 0xFEE0)
                   for ch in text)


def render_chat(messages, add_generation_prompt: bool = False, plain: bool = False) -> str:
    """对话 ``[("user", 内容), ("assistant", 内容), ...]`` -> 一段文字。

    每条消息写成 ``角色标记 + 内容 + <|end|>``；``add_generation_prompt=True`` 时在末尾再写一个
    ``<|assistant|>``，模型从这里接着写。``plain=True`` 给没见过特殊标记的预训练模型用：
    角色写成"用户：""助手："，消息以换行结束（lm-gpt 的句子也以换行结束）。

    >>> render_chat([("user", "你好"), ("assistant", "你好！")])
    '<|user|>你好<|end|><|assistant|>你好！<|end|>'
    >>> render_chat([("user", "你好")], add_generation_prompt=True, plain=True)
    '用户：你好\\n助手：'
    """
    marks = {"user": "用户：", "assistant": "助手："} if plain else ROLES
    end = "\n" if plain else END
    parts = []
    for role, content in messages:
        if role not in marks:
            raise ValueError(f"消息的角色只能是 user 或 assistant，收到 {role!r}。")
        parts.append(marks[role] + content + end)
    if add_generation_prompt:
        parts.append(marks["assistant"])
    return "".join(parts)


_SPECIAL = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")
_LETTERS = re.compile("([a-z]+)")


def reading_groups(itos) -> dict[str, list[int]]:
    """字表 ``itos`` 里每个汉字的编号按读音分组：``{"tian": [天的编号, 田的编号, ...], ...}``。
    多音字在每个读音下都出现（"行"在 xing 和 hang 下）。音节 token 的初始词向量就是这一组的平均。"""
    from pypinyin import Style, pinyin

    groups: dict[str, list[int]] = {}
    for index, token in enumerate(itos):
        if len(token) == 1 and "\u4e00" <= token <= "\u9fff":
            for reading in pinyin(token, style=Style.NORMAL, heteronym=True)[0]:
                groups.setdefault(reading, []).append(index)
    return groups


def chat_tokens(text: str) -> list[str]:
    """按字切分，但特殊标记各算一个 token，一个完整的拼音音节（前后不是字母）也算一个 token。

    >>> chat_tokens("<|user|>你好 jin tian<|end|>")
    ['<|user|>', '你', '好', ' ', 'jin', ' ', 'tian', '<|end|>']
    >>> chat_tokens("ipad")                      # 不是音节：按字母切
    ['i', 'p', 'a', 'd']
    """
    tokens = []
    for piece in _SPECIAL.split(text):
        if piece in SPECIAL_TOKENS:
            tokens.append(piece)
            continue
        for run in _LETTERS.split(piece):
            tokens.extend([run] if run in syllables() else list(run))
    return tokens


def parse_chat(text: str) -> list[tuple[str, str]]:
    """:func:`render_chat` 的逆：一段模板文字 -> ``[(角色, 内容), ...]``。格式不对时抛 ValueError。"""
    tokens, messages, i = _SPECIAL.split(text), [], 0
    pieces = [p for p in tokens if p != ""]
    while i < len(pieces):
        role = {v: k for k, v in ROLES.items()}.get(pieces[i])
        if role is None:
            raise ValueError(f"第 {len(messages) + 1} 条消息应该以 <|user|> 或 <|assistant|> 开头，收到 {pieces[i]!r}。")
        content = ""
        if i + 1 < len(pieces) and pieces[i + 1] not in SPECIAL_TOKENS:
            content, i = pieces[i + 1], i + 1
        if i + 1 >= len(pieces) or pieces[i + 1] != END:
            raise ValueError(f"第 {len(messages) + 1} 条消息没有以 <|end|> 结束。")
        messages.append((role, content))
        i += 2
    return messages


def chat_vocab(base_itos) -> Vocab:
    """lm-gpt 的字表后面追加 :data:`NEW_TOKENS` 和所有拼音音节（按字母序）里还没有的 token；
    原有的编号不变（预训练的词向量对得上）。"""
    itos = list(base_itos)
    known = set(itos)
    new = [t for t in NEW_TOKENS if t not in known]
    new += [t for t in sorted(syllables()) if t not in known and t not in new]
    return Vocab.from_itos(itos + new)


def encode_conversation(messages, vocab: Vocab) -> tuple[list[int], list[int]]:
    """一段对话 -> ``(ids, labels)``，两者等长（每个 token 一个）。

    只在**助手回答的 token 上**算损失：助手消息的内容和它后面的 ``<|end|>``（学会什么时候停）的
    label 是它自己的编号，其余（用户的话、角色标记）都是 -100，交叉熵忽略它们。训练时输入是
    ``ids[:-1]``、目标是 ``labels[1:]``（预测下一个 token）。
    """
    ids, labels = [], []
    for role, content in messages:
        tokens = chat_tokens(render_chat([(role, content)]))  # [角色标记, 内容..., <|end|>]
        encoded = vocab.encode(tokens)
        ids += encoded
        labels += [-100] + (encoded[1:] if role == "assistant" else [-100] * (len(encoded) - 1))
    return ids, labels


# ---------------------------------------------------------------------------
# 五种指令
# ---------------------------------------------------------------------------


def sentence_text(sentence) -> str:
    return "".join(word for word, _ in sentence)


def entity_answer(sentence) -> str:
    """一句话的实体，按人名、地名、机构名的顺序："人名：江泽民；地名：北京"；一个都没有时答"没有"。"""
    text = sentence_text(sentence)
    found: dict[str, list[str]] = {}
    for start, end, kind in entity_spans(sentence):
        names = found.setdefault(kind, [])
        if text[start:end] not in names:
            names.append(text[start:end])
    parts = [f"{ENTITY_NAMES[k]}：{'、'.join(found[k])}" for k in ENTITY_NAMES if k in found]
    return "；".join(parts) or NO_ENTITY


def _sources(split: str, pinyin_limit: int | None) -> dict[str, list]:
    """每种指令的源材料（这一份里的），已按长度过滤，并去掉前面几份里出现过的源句子。

    拼音小句由 :func:`~aigc_lib.tasks.pinyin.data.pinyin_pairs` 给出，它已经按同样的规则跨份去重；
    注音很慢，所以只取前 ``pinyin_limit`` 对（None 表示全部）。"""
    earlier = {"train": (), "val": ("train",), "test": ("train", "val")}[split]
    # 前面几份里用过的所有原文，不分种类：《人民日报》的句子、它们切出的小句（拼音指令的原文）、评论。
    # 评论按转成全角以后的写法去重："好,便宜" 和 "好，便宜" 对模型是同一句话。跨种类也要去重：
    # "日本""李鹏"这样的短标题在训练集里是拼音小句，在测试集里可能是一整句要分词的话
    seen = {sentence_text(s) for other in earlier for s in load_peoples_daily(other)}
    seen |= {to_model_text(t) for other in earlier for t, _ in load_reviews(other)}
    seen |= {text for other in earlier for text in clause_texts(other)}
    sentences = [s for s in load_peoples_daily(split) if sentence_text(s) not in seen]
    return {
        "sentiment": [(to_model_text(t), y) for t, y in load_reviews(split)
                      if len(t) <= MAX_REVIEW and to_model_text(t) not in seen],
        "segment": [s for s in sentences if len(sentence_text(s)) <= MAX_SEGMENT],
        "pinyin": [(syllable_list, text) for syllable_list, text in
                   pinyin_pairs(split, max_chars=MAX_PINYIN, limit=pinyin_limit) if text not in seen],
        "ner": [s for s in sentences if len(sentence_text(s)) <= MAX_NER],
        "continue": [s for s in sentences if CONTINUE_RANGE[0] <= len(sentence_text(s)) <= CONTINUE_RANGE[1]],
    }


def make_example(kind: str, item, phrasing: int) -> Example:
    """一个源材料 -> 一条指令样本，用第 ``phrasing`` 种说法。"""
    template = PHRASINGS[kind][phrasing % len(PHRASINGS[kind])]
    if kind == "sentiment":
        text, label = item
        return Example(kind, template.format(text), LABELS[label], text)
    if kind == "pinyin":
        syllables, text = item
        return Example(kind, template.format(" ".join(syllables)), text, text)
    text = sentence_text(item)
    if kind == "segment":
        return Example(kind, template.format(text), " ".join(word for word, _ in item), text)
    if kind == "ner":
        return Example(kind, template.format(text), entity_answer(item), text)
    cut = len(text) // 2
    return Example(kind, template.format(text[:cut]), text[cut:cut + MAX_CONTINUATION], text)


@lru_cache(maxsize=8)
def instruction_examples(split: str, per_type: int = 0, seed: int = 0) -> tuple[Example, ...]:
    """一份数据的指令样本：每种最多 ``per_type`` 条（0 表示全部），用 ``seed`` 打乱后取前面的
    （拼音只注音前 ``per_type`` 个小句，不打乱）；说法轮流用。结果按种类排列（:data:`KINDS` 的顺序），
    同样的参数总是同样的结果。"""
    result = []
    for kind, items in _sources(split, per_type or None).items():
        made = [make_example(kind, item, i) for i, item in enumerate(items)]
        random.Random(f"{seed}-{kind}").shuffle(made)
        result += made[:per_type] if per_type else made
    return tuple(result)


def conversations(examples, max_tokens: int, multi_turn: float = 0.3, seed: int = 0) -> list[list[tuple[str, str]]]:
    """把样本拼成对话：每条样本是一问一答；按 ``multi_turn`` 的概率把接下来的 2–3 条（种类随机）
    拼成一段多轮对话，前提是整段不超过 ``max_tokens`` 个 token。放不下一轮的样本丢掉。"""
    rng = random.Random(seed)
    pool = list(examples)
    rng.shuffle(pool)
    result, i = [], 0
    while i < len(pool):
        turns = rng.choice((2, 3)) if rng.random() < multi_turn else 1
        chat: list[tuple[str, str]] = []
        for example in pool[i:i + turns]:
            longer = chat + [("user", example.prompt), ("assistant", example.answer)]
            if len(chat_tokens(render_chat(longer))) > max_tokens:
                break
            chat = longer
        i += max(1, len(chat) // 2)
        if chat:
            result.append(chat)
    return result
