"""手写的字节级 BPE（aigc_lib.data.bpe）对照 Hugging Face ``tokenizers`` 与暴力实现。

HF 那边的设置就是手写版的算法：``models.BPE`` + ``pre_tokenizers.ByteLevel(add_prefix_space=False)``
+ ``trainers.BpeTrainer``（同样的 vocab_size、初始字母表为全部 256 个字节、无特殊词元、min_frequency=0）。
两边在同一份文本上训练，要求合并表（按顺序）完全相同、编码结果完全相同。
"""

import doctest
import json
import random
import unicodedata
from collections import Counter

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import aigc_lib
from aigc_lib.data import bpe
from aigc_lib.data.bpe import (
    BPETokenizer,
    byte_tie_order,
    chars_per_token,
    split_chunks,
    train_bpe,
)
from aigc_lib.tasks.lm import split_text


# ---------------------------------------------------------------------------------------------
# HF 那一边
# ---------------------------------------------------------------------------------------------
def gpt2_byte_to_char() -> dict[int, str]:
    """GPT-2 的字节 -> 可见字符表（HF ByteLevel 用它），按定义独立写出，再由下面的测试对照 HF。"""
    keep = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    others = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(others)}}


CHAR_TO_BYTE = {c: b for b, c in gpt2_byte_to_char().items()}


def to_bytes(hf_token: str) -> bytes:
    return bytes(CHAR_TO_BYTE[c] for c in hf_token)


def hf_pre_tokenizer():
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def hf_train(texts: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = hf_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=0, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def hf_merges(tokenizer: Tokenizer) -> list[tuple[bytes, bytes]]:
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]  # 旧版是 "a b"，新版是 ["a", "b"]
    return [(to_bytes(a), to_bytes(b)) for a, b in pairs]


def hf_tokens(tokenizer: Tokenizer, text: str) -> list[bytes]:
    return [to_bytes(t) for t in tokenizer.encode(text).tokens]


def my_merges(tokenizer: BPETokenizer) -> list[tuple[bytes, bytes]]:
    return [(tokenizer.token_bytes(a), tokenizer.token_bytes(b)) for a, b in tokenizer.merges]


def my_tokens(tokenizer: BPETokenizer, text: str) -> list[bytes]:
    return [tokenizer.token_bytes(i) for i in tokenizer.encode(text)]


@pytest.fixture(scope="module")
def train_lines() -> list[str]:
    return split_text("train", limit=3000).splitlines(keepends=True)


@pytest.fixture(scope="module")
def test_lines() -> list[str]:
    return split_text("test", limit=500).splitlines(keepends=True)


MIXED = [
    "我爱北京天安门，Hello world 2024！",
    "I'm sure it's the GPT-2 regex: they'll say we've   got   spaces\t\tand\n\nnewlines  ",
    "全角数字１２３与半角123、①②③、Ⅷ、½；emoji 😀👍🏽 和 🇨🇳 国旗",
    "  前导空格、结尾空格  ",
    "\u3000全角空格\u3000\xa0不换行空格 tab\there\r\nWindows 换行",
    "café naïve e\u0301 ½ x² 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𠀁（扩展 B 区）",
]


def random_code_point(rng: random.Random, assigned: bool) -> str:
    while True:
        ch = chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))  # 不含代理码位
        if not assigned or unicodedata.category(ch) != "Cn":
            return ch


def random_text(rng: random.Random, length: int, assigned: bool = True) -> str:
    """随机的 Unicode：ASCII、汉字、全角、emoji、组合符号、各种空白、任意码位。

    ``assigned=True`` 时不含未分配的码位：``regex`` 模块与 HF 用的 Oniguruma 内置的 Unicode 版本不同，
    新版本才分配的码位可能一边算字母、一边不算，预切分就不同（编码照样无损，只是块的边界不同）。
    """
    pools = [
        lambda: chr(rng.randint(32, 126)),
        lambda: chr(rng.randint(0x4E00, 0x9FFF)),
        lambda: chr(rng.randint(0xFF01, 0xFF5E)),
        lambda: chr(rng.randint(0x1F300, 0x1FAFF)),
        lambda: chr(rng.randint(0x0300, 0x036F)),
        lambda: rng.choice(" \t\n\r\u3000\xa0\u2028\x0b\x1c"),
        lambda: random_code_point(rng, assigned),
    ]
    return "".join(rng.choice(pools)() for _ in range(length))


# ---------------------------------------------------------------------------------------------
# 预切分与平局顺序：与 HF 的 ByteLevel 一致
# ---------------------------------------------------------------------------------------------
def test_gpt2_byte_table_is_hfs():
    table = gpt2_byte_to_char()
    assert sorted(table.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    for text in ["中", " a", "\n", "😀", "\x7f\xad"]:
        [(mapped, _)] = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)
        assert mapped == "".join(table[b] for b in text.encode())


def test_split_chunks_matches_hf_pre_tokenizer(train_lines):
    rng = random.Random(0)
    texts = train_lines[:300] + MIXED + [random_text(rng, 40) for _ in range(300)]
    for text in texts:
        ours = [chunk.encode() for chunk in split_chunks(text)]
        theirs = [to_bytes(chunk) for chunk, _ in hf_pre_tokenizer().pre_tokenize_str(text)]
        assert ours == theirs, text
        assert b"".join(ours) == text.encode()  # 块拼起来就是原文


def test_byte_tie_order_is_hfs_byte_ids():
    """HF 给 256 个字节的编号，正是手写版平局时比较的顺序。"""
    vocab = hf_train(["x"], 256).get_vocab()
    table = gpt2_byte_to_char()
    hf_order = sorted(range(256), key=lambda b: vocab[table[b]])
    assert byte_tie_order() == hf_order
    assert byte_tie_order() != list(range(256))  # 与按字节值排序不同（空格、0x80..0xA0 排在后面）


# ---------------------------------------------------------------------------------------------
# 手算得出的小例子
# ---------------------------------------------------------------------------------------------
def test_wikipedia_example_by_hand():
    """aaabdaaabac：aa 出现 4 次先合并 -> Z a b d Z a b a c；(Z,a) 与 (a,b) 都是 2 次，
    平局取排序键小的：a 是可打印字节（键 64），Z 是新词元（键 256），所以先合 ab=Y；
    然后 ZY=X 出现 2 次；剩下全是 1 次，(a,c) 的键 (64, 66) 最小。"""
    a, b, c, d = map(ord, "abcd")
    tokenizer = train_bpe("aaabdaaabac", vocab_size=260)
    assert tokenizer.merges == [(a, a), (a, b), (256, 257), (a, c)]
    assert [tokenizer.token_bytes(i) for i in range(256, 260)] == [b"aa", b"ab", b"aaab", b"ac"]
    assert tokenizer.encode("aaabdaaabac") == [258, d, 258, 259]
    assert tokenizer.encode("abab aaa") == [257, 257, ord(" "), 256, a]  # " aaa" 一块：aa 合并，剩一个 a
    assert my_merges(tokenizer) == hf_merges(hf_train(["aaabdaaabac"], 260))


def test_tie_uses_hf_byte_order_not_byte_value():
    """"xy z" 的两个块各有一对、都是 1 次。按字节值空格 (32) 更小，会先合 " z"；
    HF 的顺序里空格排在可打印字节之后，所以先合 xy。"""
    tokenizer = train_bpe("xy z", vocab_size=257)
    assert tokenizer.merges == [(ord("x"), ord("y"))]
    assert my_merges(tokenizer) == hf_merges(hf_train(["xy z"], 257))


def test_merge_that_rebuilds_an_existing_token_reuses_its_id():
    a, b, c = map(ord, "abc")
    tokenizer = BPETokenizer([(a, b), (b, c), (256, c), (a, 257)])  # ab, bc, abc, 又一个 abc
    assert len(tokenizer) == 259 and len(tokenizer.merges) == 4
    assert tokenizer.token_bytes(258) == b"abc"
    assert tokenizer.encode("abc") == [258]


def test_merge_in_place_against_recount():
    """增量更新的邻居计数 = 合并后整块重数减去合并前整块重数（被合并的那一对除外）。"""
    rng = random.Random(0)
    for _ in range(2000):
        tokens = [rng.randint(1, 3) for _ in range(rng.randint(0, 12))]
        pair = (rng.randint(1, 3), rng.randint(1, 3))
        expected = bpe._merge(tokens, pair, 9)
        before = Counter(zip(tokens, tokens[1:]))
        changes = bpe._merge_in_place(tokens, pair, 9)
        assert tokens == expected
        net = Counter()
        for p, delta in changes:
            net[p] += delta
        recount = Counter(zip(tokens, tokens[1:]))
        recount.subtract(before)
        del recount[pair], net[pair]
        assert {p: n for p, n in net.items() if n} == {p: n for p, n in recount.items() if n}


def naive_train(text: str, vocab_size: int) -> list[tuple[bytes, bytes]]:
    """暴力版：每一步重数全部块里的所有对，取次数最多的（平局规则相同）。"""
    chunks = [[bytes([b]) for b in chunk.encode()] for chunk in split_chunks(text)]
    order = {bytes([b]): i for i, b in enumerate(byte_tie_order())}
    merges = []
    while len(order) < vocab_size:
        counts = Counter(p for chunk in chunks for p in zip(chunk, chunk[1:]))
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], order[p[0]], order[p[1]]))
        merges.append(best)
        order.setdefault(best[0] + best[1], len(order))
        for chunk in chunks:  # 从左到右，重叠时左边优先
            i = 0
            while i + 1 < len(chunk):
                if (chunk[i], chunk[i + 1]) == best:
                    chunk[i : i + 2] = [best[0] + best[1]]
                i += 1
    return merges


@pytest.mark.parametrize("seed", range(40))
def test_train_matches_brute_force_and_hf_on_random_small_texts(seed):
    """小字母表、很多平局的随机文本：增量版、暴力版、HF 三者的合并表完全相同。"""
    rng = random.Random(seed)
    text = "".join(rng.choice(["a", "b", "c", " ", "中", "文", "。", "1"]) for _ in range(rng.randint(5, 120)))
    vocab_size = 256 + rng.randint(1, 30)
    ours = my_merges(train_bpe(text, vocab_size))
    assert ours == naive_train(text, vocab_size)
    assert ours == hf_merges(hf_train([text], vocab_size))


# ---------------------------------------------------------------------------------------------
# 《人民日报》：合并表、编码与 HF 完全相同
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_sentences", "vocab_size"), [(300, 300), (300, 400), (300, 600), (3000, 1500)])
def test_peoples_daily_merges_and_encodings_identical_to_hf(train_lines, test_lines, n_sentences, vocab_size):
    texts = train_lines[:n_sentences]
    ours = train_bpe(texts, vocab_size)
    theirs = hf_train(texts, vocab_size)
    assert len(ours) == theirs.get_vocab_size() == vocab_size
    assert my_merges(ours) == hf_merges(theirs)
    for line in test_lines:
        assert my_tokens(ours, line) == hf_tokens(theirs, line)
        assert ours.decode(ours.encode(line)) == line
    test_text = "".join(test_lines)
    n_bytes = len(test_text.encode())
    assert n_bytes / len(ours.encode(test_text)) == pytest.approx(n_bytes / len(theirs.encode(test_text).ids), rel=0.01)


def test_more_merges_compress_better(train_lines, test_lines):
    test_text = "".join(test_lines)
    lengths = [len(train_bpe(train_lines[:300], v).encode(test_text)) for v in (256, 300, 600)]
    assert lengths[0] == len(test_text.encode())  # 没有合并时就是字节数
    assert lengths[0] > lengths[1] > lengths[2]


# ---------------------------------------------------------------------------------------------
# 任意文本都能无损还原；保存与读取；给用户看的错误
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer_600(train_lines) -> BPETokenizer:
    return train_bpe(train_lines[:300], 600)


def test_round_trip_any_unicode(tokenizer_600, train_lines):
    rng = random.Random(1)
    texts = MIXED + [random_text(rng, rng.randint(0, 60), assigned=False) for _ in range(300)] + ["", " ", "\n\n"]
    seen = set("".join(train_lines[:300]))
    assert any(ch not in seen for text in texts for ch in text)  # 确实有训练时没见过的字
    hf = hf_train(train_lines[:300], 600)
    for text in texts:
        ids = tokenizer_600.encode(text)
        assert tokenizer_600.decode(ids) == text
        assert all(0 <= i < len(tokenizer_600) for i in ids)
        if all(unicodedata.category(ch) != "Cn" for ch in text):  # 未分配的码位见 random_text
            assert my_tokens(tokenizer_600, text) == hf_tokens(hf, text)


def test_unseen_character_falls_back_to_its_bytes(tokenizer_600):
    ids = tokenizer_600.encode("𠀀")  # 扩展 B 区的字，训练文本里没有
    assert ids == list("𠀀".encode())


def test_save_and_load_json(tokenizer_600, tmp_path, test_lines):
    path = tmp_path / "bpe.json"
    tokenizer_600.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["merges"] == [list(pair) for pair in tokenizer_600.merges]
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tokenizer_600.merges and len(loaded) == len(tokenizer_600)
    assert all(loaded.token_bytes(i) == tokenizer_600.token_bytes(i) for i in range(len(loaded)))
    assert loaded.encode("".join(test_lines[:50])) == tokenizer_600.encode("".join(test_lines[:50]))

    path.write_text('{"merges": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="BPETokenizer.save"):
        BPETokenizer.load(path)


def test_errors_a_user_can_fix():
    with pytest.raises(ValueError, match="至少包含全部 256 个字节"):
        train_bpe("你好", 255)
    for empty in ["", [], ["", ""]]:
        with pytest.raises(ValueError, match="训练文本是空的"):
            train_bpe(empty, 300)
    with pytest.raises(ValueError, match="代理码位"):
        train_bpe("ab", 257).encode("a\ud800b")
    with pytest.raises(ValueError, match="还不存在的词元"):
        BPETokenizer([(256, 1)])


def test_short_text_stops_early():
    tokenizer = train_bpe("ab", 1000)
    assert len(tokenizer) == 257 and tokenizer.encode("ab") == [256]


# ---------------------------------------------------------------------------------------------
# 每个词元几个字符
# ---------------------------------------------------------------------------------------------
def test_chars_per_token_against_counting_by_hand(train_lines, test_lines):
    import jieba

    text = "".join(test_lines[:200])
    assert chars_per_token(text, list) == 1.0
    n_words = 0
    for _ in jieba.cut(text):  # 逐个数 jieba 切出的词
        n_words += 1
    assert chars_per_token(text, jieba.lcut) == len(text) / n_words
    ours, theirs = train_bpe(train_lines[:300], 500), hf_train(train_lines[:300], 500)
    assert chars_per_token(text, ours.encode) == len(text) / len(theirs.encode(text).ids)  # 另一份实现数的词元
    with pytest.raises(ValueError, match="文本是空的"):
        chars_per_token("", list)


def test_public_names_and_doctests():
    assert aigc_lib.train_bpe is train_bpe and aigc_lib.BPETokenizer is BPETokenizer
    assert aigc_lib.chars_per_token is chars_per_token
    assert doctest.testmod(bpe).failed == 0
