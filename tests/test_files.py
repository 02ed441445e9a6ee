"""aigc_lib.data.files：Big5 与没有 BOM 的 UTF-16 的识别、标签类型一致、大 CSV 边读边解析。
（UTF-8 / GBK / BOM 的识别与各种坏文件在 test_corpora.py 里。）"""

import csv
import json
import random
import tracemalloc

import pytest

from aigc_lib.data.files import DataFileError, detect_encoding, load_labeled, read_text

SIMPLIFIED = ["今天天气很好，我们一起去公园散步。", "这本书的内容非常丰富，值得一读。", "物流太慢了，等了一个星期才到。",
              "质量不错，价格也便宜，下次还会再来买。", "客服态度很好，耐心解答了我的问题。", "房间干净整洁，早餐种类也多。"]
TRADITIONAL = ["今天天氣很好，我們一起去公園散步。", "這本書的內容非常豐富，值得一讀。", "物流太慢了，等了一個星期才到。",
               "質量不錯，價格也便宜，下次還會再來買。", "客服態度很好，耐心解答了我的問題。", "房間乾淨整潔，早餐種類也多。"]


def _text(sentences, seed):
    rng = random.Random(seed)
    return "\n".join(rng.sample(sentences, rng.randint(2, len(sentences))))


@pytest.mark.parametrize("seed", range(8))
def test_big5_is_decoded_right_not_as_gb18030_garbage(seed, tmp_path):
    text = _text(TRADITIONAL, seed)
    data = text.encode("big5")
    garbage = data.decode("gb18030")  # 以前的结果：GB18030 几乎什么字节都能解出“字”来
    assert garbage != text
    path = tmp_path / "big5.txt"
    path.write_bytes(data)
    assert detect_encoding(data) == "big5"
    assert read_text(path) == text


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("sentences", [SIMPLIFIED, TRADITIONAL], ids=["简体", "繁体"])
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_text_not_binary(seed, sentences, encoding, tmp_path):
    text = _text(sentences, seed)
    path = tmp_path / "utf16.txt"
    path.write_bytes(text.encode(encoding))
    assert not path.read_bytes().startswith((b"\xff\xfe", b"\xfe\xff"))
    assert detect_encoding(path.read_bytes()) == encoding
    assert read_text(path) == text


@pytest.mark.parametrize("seed", range(8))
def test_simplified_gbk_is_still_gb18030(seed):
    data = _text(SIMPLIFIED, seed).encode("gbk")
    assert data.decode("big5", errors="replace") != data.decode("gbk")
    assert detect_encoding(data) == "gb18030"


def test_bytes_that_are_no_chinese_text_in_any_encoding_are_refused(tmp_path):
    path = tmp_path / "noise.txt"
    path.write_bytes(bytes(random.Random(0).randrange(0x81, 0xFF) for _ in range(3001)))  # 奇数个字节：不是 UTF-16
    with pytest.raises(DataFileError, match="无法识别 .*noise.txt 的编码"):
        read_text(path)


# --------------------------------------------------------------------------------------------
# load_labeled：标签要么都是整数，要么都是文字
# --------------------------------------------------------------------------------------------

def _csv(path, labels):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([f"第{i}句", label] for i, label in enumerate(labels))
    return path


@pytest.mark.parametrize("labels, line, message", [
    (["pos", "neg", "-3"], 4, "标签 -3 是整数，而文件 .* 第 2 行的标签 'pos' 是文字"),
    (["1", "0", "pos"], 4, "标签 'pos' 是文字，而文件 .* 第 2 行的标签 1 是整数"),
    (["pos", "1.0"], 3, "标签 '1.0' 是小数"),
    (["1", "[1,2]"], 3, r"标签 '\[1,2\]' 像一个列表"),
])
def test_csv_labels_of_mixed_types_name_the_line_that_breaks_them(labels, line, message, tmp_path):
    path = _csv(tmp_path / "mixed.csv", labels)
    with pytest.raises(DataFileError, match=f"第 {line} 行的{message}"):
        load_labeled(path)


@pytest.mark.parametrize("value, message", [(1.0, "是 float"), ([1, 2], "是 list"), ({"a": 1}, "是 dict")])
def test_jsonl_labels_must_be_one_int_or_one_string(value, message, tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [{"text": "很好", "label": 1}, {"text": "太差", "label": value}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    with pytest.raises(DataFileError, match=f"第 2 行的标签 .* {message}"):
        load_labeled(path)


def test_consistent_labels_are_kept_as_they_are(tmp_path):
    assert [label for _, label in load_labeled(_csv(tmp_path / "a.csv", ["1", "-3", "+2"]))] == [1, -3, 2]
    assert [label for _, label in load_labeled(_csv(tmp_path / "b.csv", ["pos", "neg", "中性"]))] == ["pos", "neg", "中性"]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("other", ["gbk", "big5"])
def test_a_file_mixing_utf8_and_another_encoding_names_the_lines(seed, other, tmp_path):
    """两个文件直接拼起来（一个 UTF-8、一个 GBK 或 Big5）：以前整体按 GB18030 解码，UTF-8 那几行成了乱码、不报错。"""
    first = _text(SIMPLIFIED, seed).encode("utf-8") + b"\n"
    second = _text(SIMPLIFIED if other == "gbk" else TRADITIONAL, seed + 100).encode(other)
    utf8_first = seed % 2 == 0
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"title,line\n" + (first + second if utf8_first else second + b"\n" + first))
    utf8_line = 2 if utf8_first else 2 + second.count(b"\n") + 1
    other_line = 2 + first.count(b"\n") if utf8_first else 2
    with pytest.raises(DataFileError, match=f"mixed.txt 混用了两种编码：第 {utf8_line} 行是 UTF-8，第 {other_line} 行不是"):
        read_text(path)
    with pytest.raises(DataFileError, match="混用了两种编码"):
        load_labeled(path.rename(tmp_path / "mixed.csv"), text_col="title", label_col="line")


@pytest.mark.parametrize("sentences, encoding", [(SIMPLIFIED, "gbk"), (TRADITIONAL, "big5")])
def test_one_encoding_per_file_is_not_called_mixed(sentences, encoding):
    """每一句单独成行的 GBK / Big5 文件：没有一行会被当成 UTF-8。"""
    data = "\n".join(sentences * 3).encode(encoding)
    assert detect_encoding(data) == ("gb18030" if encoding == "gbk" else encoding)


# --------------------------------------------------------------------------------------------
# 大 CSV：边读边解析
# --------------------------------------------------------------------------------------------

def test_a_big_csv_is_streamed_not_read_whole(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        for i in range(40_000):
            writer.writerow([i, "".join(rng.choice(SIMPLIFIED)[:-1] for _ in range(4)), rng.choice(["pos", "neg"])])
    size = path.stat().st_size
    assert size > 4_000_000
    tracemalloc.start()
    try:
        pairs = load_labeled(path)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pairs) == 40_000 and pairs[0][1] in ("pos", "neg")
    # 结果本身（4 万个 Python 字符串和元组）占 current；读入时多用的内存不超过文件大小的一小部分
    print(f"文件 {size / 1e6:.1f} MB，结果 {current / 1e6:.1f} MB，峰值 {peak / 1e6:.1f} MB")
    assert peak - current < 0.5 * size
    assert peak < 2 * size
