"""aigc_lib.data.text：每个清洗步骤、切分、preprocess 生成器和 Vocab。

每个步骤都在大量随机输入上与一个独立的参考答案比较：参考答案来自构造过程本身（我们知道往文本里
插了什么）、标准库（html、unicodedata、str.split）或逐字的暴力写法。
"""

import html
import inspect
import itertools
import json
import random
import unicodedata
from collections import Counter

import jieba
import pytest
import torch

from aigc_lib.data import corpora
from aigc_lib.data.text import (
    KEEP_FULL_WIDTH,
    Vocab,
    clean_text,
    collapse_punctuation,
    normalize_whitespace,
    normalize_width,
    preprocess,
    remove_emoji,
    remove_urls,
    strip_html,
    to_simplified,
    tokenize,
)

SEEDS = range(40)
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]  # 常用区的汉字
ASCII_TEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ZH_PUNCT = "，。！？：；（）、“”《》"


def random_chinese(rng, n_min=1, n_max=12, extra=""):
    """随机的一段中文，首尾都是汉字（这样拼接网址时不会和网址粘在一起）。"""
    pool = HAN * 3 + list(ZH_PUNCT) + list(extra)
    body = [rng.choice(pool) for _ in range(rng.randint(n_min, n_max))]
    return rng.choice(HAN) + "".join(body) + rng.choice(HAN)


@pytest.fixture(scope="module")
def corpus_texts():
    """真实的中文句子：人民日报测试集（简体），取前 400 句拼回文本。"""
    sentences = corpora.load_peoples_daily("test")[:400]
    return ["".join(word for word, _ in sentence) for sentence in sentences]


# --------------------------------------------------------------------------------------------
# strip_html
# --------------------------------------------------------------------------------------------

TAGS = ["b", "i", "span", "a", "p", "div", "br", "font", "em", "li", "td", "h2", "strong"]


def random_html(rng):
    """随机 HTML 片段，以及去掉标签、还原实体后应得的文字（不计空白）。"""
    pieces, expected = [], []
    for _ in range(rng.randint(1, 8)):
        raw = "".join(rng.choice(HAN + list("<>&\"' ab12，。")) for _ in range(rng.randint(0, 6)))
        expected.append(raw)
        escaped = html.escape(raw, quote=rng.random() < 0.5)
        tag = rng.choice(TAGS)
        attrs = rng.choice(["", ' class="x"', " id='r1' data-n=\"3\"", ' style="color:red"'])
        kind = rng.random()
        if kind < 0.3:
            pieces.append(f"<{tag}{attrs}>{escaped}</{tag}>")
        elif kind < 0.4:
            pieces.append(f"{escaped}<{tag}{attrs}/>")
        elif kind < 0.5:
            pieces.append(f"<!-- 注释 <b>不该出现</b> -->{escaped}")
        elif kind < 0.6:
            pieces.append(f"<script>var x = '<b>不该出现</b>' < 3;</script>{escaped}<style>.a{{b:c}}</style>")
        else:
            pieces.append(escaped)
    return "".join(pieces), "".join(expected)


def no_space(text):
    return "".join(text.split())


@pytest.mark.parametrize("seed", SEEDS)
def test_strip_html_keeps_exactly_the_text(seed):
    rng = random.Random(seed)
    for _ in range(20):
        document, expected = random_html(rng)
        assert no_space(strip_html(document)) == no_space(expected), document


@pytest.mark.parametrize("seed", range(10))
def test_strip_html_separates_blocks_but_not_inline_tags(seed):
    rng = random.Random(seed)
    for _ in range(20):
        pieces = ["".join(rng.choice(HAN) for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 6))]
        inline = "".join(f"<{rng.choice(['b', 'i', 'span', 'em'])}>{p}</{rng.choice(['b', 'i', 'span'])}>" for p in pieces)
        assert strip_html(inline) == "".join(pieces)  # 行内标签不该在词中间插入空格
        breaks = ["<br>", "<br/>", "<p>", "</p>", '<div class="x">', "</li>"]
        block = "".join(p + rng.choice(breaks) for p in pieces)
        assert strip_html(block).split() == pieces  # 换行类标签变成分隔，句子不会粘在一起


def test_strip_html_decodes_every_kind_of_entity():
    rng = random.Random(0)
    for _ in range(500):
        code = rng.choice([rng.randint(0x4E00, 0x9FFF), rng.randint(0x21, 0x7E), rng.randint(0xA0, 0x3000)])
        if not chr(code).isprintable() or 0x80 <= code <= 0x9F:
            continue
        for form in (f"&#{code};", f"&#x{code:x};", f"&#X{code:X};"):
            assert strip_html(form) == chr(code), form
    named = [(name, value) for name, value in html.entities.html5.items() if name.endswith(";")]
    for name, value in rng.sample(named, 500):  # HTML5 的命名实体表是参照答案
        assert strip_html(f"&{name}") == value, name


def test_strip_html_leaves_plain_text_alone(corpus_texts):
    for text in corpus_texts:
        assert strip_html(text) == text
    for text in ["价格<5000元", "a < b > c", "~{N@Iz<dC;SP4rI>;~}"]:  # 不是标签的尖括号
        assert strip_html(text) == text


# --------------------------------------------------------------------------------------------
# remove_urls
# --------------------------------------------------------------------------------------------

def random_url(rng):
    word = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(1, 8)))
    host = ".".join(word() for _ in range(rng.randint(1, 3))) + rng.choice([".com", ".cn", ".net", ".org", ".com.cn"])
    path = "".join(f"/{word()}" for _ in range(rng.randint(0, 3)))
    if rng.random() < 0.3:
        path += f"/{word()}.html?id={rng.randint(1, 99999)}&from={word()}#top"
    style = rng.random()
    if style < 0.4:
        return rng.choice(["http://", "https://", "HTTPS://"]) + host + path
    if style < 0.6:
        return "www." + host + path
    if style < 0.8:
        return host + path  # 裸域名
    return f"{word()}.{word()}@{host}"  # 邮箱


@pytest.mark.parametrize("seed", SEEDS)
def test_remove_urls_removes_exactly_the_urls(seed):
    rng = random.Random(seed)
    for _ in range(25):
        segments = [random_chinese(rng) for _ in range(rng.randint(1, 4))]
        text = segments[0]
        for segment in segments[1:]:
            text += rng.choice(["", " "]) + random_url(rng) + rng.choice(["", " "]) + segment
        expected = "".join(segments)
        assert no_space(remove_urls(text)) == expected, text


def test_remove_urls_keeps_text_without_urls(corpus_texts):
    for text in corpus_texts + ["版本3.5很好", "价格1.5万", "P37页", "e.g. 例子", "3.14"]:
        assert remove_urls(text) == text


def test_remove_urls_keeps_sentence_punctuation_after_a_url():
    rng = random.Random(1)
    for _ in range(100):
        url = random_url(rng)
        if "@" in url:
            continue
        for mark in ".,!?;)":
            assert remove_urls(f"见{url}{mark}好") == f"见{mark}好"


# --------------------------------------------------------------------------------------------
# remove_emoji
# --------------------------------------------------------------------------------------------

EMOJI = ["😀", "👍", "👍🏻", "❤️", "❤", "🚀", "🇨🇳", "👨\u200d👩\u200d👧", "⭐", "✨", "☀️", "1️⃣", "🥰", "🤖"]
INVISIBLE = ["\u200b", "\u200e", "\ufeff", "\x07", "\x00", "\x1b", "\u2060", "\u00ad"]


@pytest.mark.parametrize("seed", SEEDS)
def test_remove_emoji_removes_exactly_what_was_inserted(seed):
    rng = random.Random(seed)
    for _ in range(25):
        clean = random_chinese(rng, extra="ab12 :)@_@~") + rng.choice(["", "\t", "\n"])
        noisy, expected = list(clean), list(clean)  # 两份一起插：插进噪声的位置，expected 插进应当留下的东西
        for _ in range(rng.randint(0, 6)):
            at, piece = rng.randint(0, len(noisy)), rng.choice(EMOJI + INVISIBLE)
            noisy.insert(at, piece)
            expected.insert(at, "1" if piece == "1️⃣" else "")  # 键帽 emoji 里的 "1" 是个普通数字，留下
        noisy, expected = "".join(noisy), "".join(expected)
        assert remove_emoji(noisy) == expected, noisy
        assert all(unicodedata.category(ch) not in ("Cc", "Cf") or ch in "\t\n" for ch in remove_emoji(noisy))


def test_remove_emoji_leaves_ordinary_text_alone(corpus_texts):
    for text in corpus_texts:
        assert remove_emoji(text) == text


# --------------------------------------------------------------------------------------------
# normalize_width
# --------------------------------------------------------------------------------------------

def test_normalize_width_maps_every_full_width_ascii_character():
    for code in range(0xFF01, 0xFF5F):
        ch = chr(code)
        expected = ch if ch in KEEP_FULL_WIDTH else chr(code - 0xFEE0)  # 全角 = 半角 + 0xFEE0
        assert normalize_width(ch) == expected
    assert normalize_width("\u3000") == " "


@pytest.mark.parametrize("seed", SEEDS)
def test_normalize_width_matches_nfkc_except_chinese_punctuation(seed):
    rng = random.Random(seed)
    pool = HAN + [chr(c) for c in range(0xFF01, 0xFF5F)] + list(KEEP_FULL_WIDTH) + list("①②㎡ﬁ…\u3000 ab")
    for _ in range(50):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        expected = "".join(ch if ch in KEEP_FULL_WIDTH else unicodedata.normalize("NFKC", ch) for ch in text)
        assert normalize_width(text) == expected


def test_normalize_width_composes_accents_like_nfkc():
    assert normalize_width("cafe\u0301，好") == "café，好"


# --------------------------------------------------------------------------------------------
# to_simplified
# --------------------------------------------------------------------------------------------

def test_to_simplified_leaves_simplified_text_alone(corpus_texts):
    unchanged = sum(to_simplified(text) == text for text in corpus_texts)
    assert unchanged >= 0.98 * len(corpus_texts)


def test_to_simplified_undoes_simplified_to_traditional(corpus_texts):
    import opencc

    s2t = opencc.OpenCC("s2t")
    traditional = [s2t.convert(text) for text in corpus_texts]
    assert sum(t != s for t, s in zip(traditional, corpus_texts)) > 0.9 * len(corpus_texts)
    back = sum(to_simplified(t) == s for t, s in zip(traditional, corpus_texts))
    assert back >= 0.95 * len(corpus_texts)


def test_to_simplified_is_idempotent(corpus_texts):
    import opencc

    s2t = opencc.OpenCC("s2t")
    for text in corpus_texts[:100]:
        once = to_simplified(s2t.convert(text))
        assert to_simplified(once) == once


# --------------------------------------------------------------------------------------------
# collapse_punctuation
# --------------------------------------------------------------------------------------------

def reference_collapse(text):
    """逐段（相同字符的最长连续段）处理的参照写法。"""
    out = []
    for ch, group in itertools.groupby(text):
        n = len(list(group))
        if ch in ".。" and n >= 3 or ch == "…":
            out.append("……")
        elif ch == "—":
            out.append("——" if n >= 2 else "—")
        elif unicodedata.category(ch).startswith("P") or ch in "~～":
            out.append(ch)
        else:
            out.append(ch * n)
    return "".join(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_collapse_punctuation_matches_reference(seed):
    rng = random.Random(seed)
    pool = HAN[:20] + list("！？。，!?.,~～…—_-@#★+=ab11 ") * 3
    for _ in range(100):
        text = "".join(rng.choice(pool) * rng.choice([1, 1, 2, 3, 5]) for _ in range(rng.randint(0, 15)))
        assert collapse_punctuation(text) == reference_collapse(text), text


# --------------------------------------------------------------------------------------------
# normalize_whitespace
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_normalize_whitespace_matches_str_split(seed):
    rng = random.Random(seed)
    spaces = [" ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\u2003", "\x0b", "\x0c"]
    for _ in range(50):
        text = "".join(rng.choice(HAN[:30] + spaces * 3) for _ in range(rng.randint(0, 30)))
        assert normalize_whitespace(text) == " ".join(text.split())


# --------------------------------------------------------------------------------------------
# clean_text = 各步骤按顺序组合，每个开关只关掉自己那一步
# --------------------------------------------------------------------------------------------

STEPS = [
    ("html", strip_html),
    ("width", normalize_width),
    ("urls", remove_urls),
    ("emoji", remove_emoji),
    ("traditional", to_simplified),
    ("punctuation", collapse_punctuation),
    ("whitespace", normalize_whitespace),
]


def random_noisy(rng):
    document, _ = random_html(rng)
    parts = [document, random_chinese(rng), random_url(rng), rng.choice(EMOJI), "ＡＢＣ１２３", "這條評論！！！",
             "\u3000\t", rng.choice(INVISIBLE), "。。。。", "&nbsp;"]
    rng.shuffle(parts)
    return "".join(parts)


def test_clean_text_is_the_steps_in_order_and_each_switch_turns_off_one_step():
    rng = random.Random(0)
    texts = [random_noisy(rng) for _ in range(20)]
    for switches in itertools.product([True, False], repeat=len(STEPS)):
        flags = {name: on for (name, _), on in zip(STEPS, switches)}
        for text in texts:
            expected = text
            for (name, step), on in zip(STEPS, switches):
                if on:
                    expected = step(expected)
            assert clean_text(text, **flags) == expected


def test_clean_text_output_has_no_noise_left():
    rng = random.Random(1)
    for _ in range(300):
        cleaned = clean_text(random_noisy(rng))
        assert "</" not in cleaned and "class=" not in cleaned and "&nbsp;" not in cleaned
        assert not any(ch in cleaned for ch in "ＡＢＣ１２３這條評\u3000\u200b")
        assert "http" not in cleaned.lower() and "！！" not in cleaned and "  " not in cleaned
        assert cleaned == cleaned.strip()


def test_clean_text_rejects_non_strings():
    with pytest.raises(TypeError, match="read_text"):
        clean_text(b"bytes")


# --------------------------------------------------------------------------------------------
# tokenize 和 preprocess
# --------------------------------------------------------------------------------------------

def test_tokenize_char_is_every_non_space_character(corpus_texts):
    rng = random.Random(0)
    for text in corpus_texts[:100]:
        spaced = "".join(ch + rng.choice(["", "", " ", "\t"]) for ch in text)
        assert tokenize(spaced, "char") == [ch for ch in text if not ch.isspace()]


def test_tokenize_word_is_jieba_precise_mode_without_spaces(corpus_texts):
    for text in corpus_texts[:200]:
        spaced = text.replace("，", " ， ")
        tokens = tokenize(spaced, "word")
        assert tokens == [w for w in jieba.lcut(spaced) if w.strip()]
        assert "".join(tokens) == "".join(spaced.split())


def test_tokenize_user_dict_keeps_its_words_whole_without_touching_global_jieba(tmp_path):
    rng = random.Random(0)
    words = ["".join(rng.choice(HAN) for _ in range(rng.randint(3, 5))) for _ in range(20)]
    path = tmp_path / "userdict.txt"
    path.write_text("".join(f"{w} 1000 n\n" for w in words), encoding="utf-8")
    sentences = [f"我们都说{w}很好" for w in words]
    before = [jieba.lcut(s) for s in sentences]
    for word, sentence in zip(words, sentences):
        assert word in tokenize(sentence, "word", user_dict=path)
    assert [jieba.lcut(s) for s in sentences] == before  # 全局分词器没被改动


def test_tokenize_errors():
    with pytest.raises(ValueError, match="char"):
        tokenize("你好", "sentence")
    with pytest.raises(FileNotFoundError, match="no_such_dict.txt"):
        tokenize("你好", "word", user_dict="no_such_dict.txt")


def test_preprocess_is_a_lazy_generator_equal_to_clean_then_tokenize():
    rng = random.Random(3)
    texts = [random_noisy(rng) for _ in range(30)]
    stop = {"，", "的", "。"}

    def feed():
        yield from texts
        raise AssertionError("生成器读过了头")

    generator = preprocess(feed(), mode="word", stopwords=stop)
    assert inspect.isgenerator(generator)
    for text, tokens in zip(texts, generator):  # zip 在最后一条之后不再向 generator 要数据
        assert tokens == [t for t in tokenize(clean_text(text), "word") if t not in stop]

    def exploding():
        raise AssertionError("还没遍历就读了输入")
        yield  # pragma: no cover

    preprocess(exploding())  # 只创建不遍历：什么都不发生
    gen = preprocess(["好"], mode="char", clean=False)
    assert list(gen) == [["好"]] and list(gen) == []  # 只能遍历一次


# --------------------------------------------------------------------------------------------
# Vocab
# --------------------------------------------------------------------------------------------

def random_token_lists(rng):
    alphabet = [f"w{i}" for i in range(rng.randint(1, 60))] + list("我爱北京的了")
    weights = [rng.random() ** 3 for _ in alphabet]  # 偏斜的词频，像真实语料
    return [rng.choices(alphabet, weights, k=rng.randint(0, 20)) for _ in range(rng.randint(0, 30))]


def reference_itos(token_lists, min_freq, max_size, specials=()):
    """暴力写法：按 (-词频, 首次出现位置) 排序，再按 min_freq、max_size 截断。"""
    reserved = ["<pad>", "<unk>", *specials]
    flat = [t for tokens in token_lists for t in tokens]
    first = {}
    for i, t in enumerate(flat):
        first.setdefault(t, i)
    counts = Counter(flat)
    ordered = sorted((t for t in counts if t not in reserved), key=lambda t: (-counts[t], first[t]))
    kept = [t for t in ordered if counts[t] >= min_freq]
    if max_size is not None:
        kept = kept[: max_size - len(reserved)]
    return reserved + kept


@pytest.mark.parametrize("seed", range(100))
def test_vocab_matches_reference_and_round_trips(seed, tmp_path):
    rng = random.Random(seed)
    token_lists = random_token_lists(rng)
    min_freq = rng.choice([1, 1, 2, 3, 5])
    max_size = rng.choice([None, None, 2, 5, 20])
    specials = rng.choice([(), ("<bos>", "<eos>")])
    if max_size is not None and max_size < 2 + len(specials):
        max_size = 2 + len(specials)
    vocab = Vocab(token_lists, min_freq=min_freq, max_size=max_size, specials=specials)

    assert vocab.itos == reference_itos(token_lists, min_freq, max_size, specials)
    assert vocab.pad_id == vocab["<pad>"] == 0 and vocab.unk_id == vocab["<unk>"] == 1
    assert len(vocab) == len(vocab.itos) == len(set(vocab.itos))

    probe = [t for tokens in token_lists for t in tokens] + ["从没见过"]
    ids = vocab.encode(probe)
    assert all(0 <= i < len(vocab) for i in ids)
    assert vocab.decode(ids) == [t if t in vocab else "<unk>" for t in probe]
    assert vocab.decode(torch.tensor(ids + [0, 0]), skip_pad=True) == vocab.decode(ids)

    known = sum(t in vocab.itos for tokens in token_lists for t in tokens)
    total = sum(len(tokens) for tokens in token_lists)
    assert vocab.coverage(token_lists) == pytest.approx(known / total if total else 0.0)

    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded.itos == vocab.itos and loaded.encode(probe) == ids and len(loaded) == len(vocab)
    assert json.loads(path.read_text(encoding="utf-8"))["itos"] == vocab.itos


def test_vocab_errors(tmp_path):
    with pytest.raises(TypeError, match="列表的列表"):
        Vocab(["我爱北京", "你好"])
    with pytest.raises(ValueError, match="max_size"):
        Vocab([["a"]], max_size=1)
    vocab = Vocab([["a", "b"]])
    with pytest.raises(IndexError, match="超出词表范围"):
        vocab.decode([len(vocab)])
    with pytest.raises(TypeError, match="tokenize"):
        vocab.encode("ab")
    bad = tmp_path / "bad.json"
    bad.write_text('{"words": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        Vocab.load(bad)
