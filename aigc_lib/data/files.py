"""你自己的文件：读文本（自动识别编码）和带标签的数据（csv / tsv / jsonl）::

    text = read_text("我的评论.txt")                                  # UTF-8、GBK、Big5、UTF-16 都能读
    pairs = load_labeled("标注.csv", text_col="评论", label_col="情感")   # [(文本, 标签), ...]
    texts = load_texts("待预测.csv", text_col="评论")                    # 只要文本；.txt 每行一条

编码怎样认出来（:func:`detect_encoding`）：

1. 文件头的 BOM（UTF-8 BOM、UTF-16 BOM）说了算；
2. 能按 UTF-8 解码就是 UTF-8——随便一段别的编码的字节几乎不可能恰好是合法的 UTF-8；
3. 否则 GB18030（GBK 的超集，简体中文 Windows 的 “ANSI”）、Big5（繁体中文 Windows）、没有 BOM 的
   UTF-16 都试一遍。这几种编码几乎什么字节都能解出“字”来（Big5 的字节按 GB18030 解出来是日文假名、
   希腊字母和生僻字），所以不能只看能不能解码：给每种解法打分——解出来的字里有多少是
   这种编码里的常用汉字、标点和 ASCII——取分最高的；都不像中文时报错。
   有几行是地道的 UTF-8、另几行不是时（两个不同编码的文件拼在了一起），报错并指出各是哪一行。

文件本身的问题（空文件、二进制文件、认不出的编码、格式或标签不对）抛 :class:`DataFileError`，
消息写明是哪个文件、哪一行、怎么改；``aigc`` 命令只打印这条消息，不打印堆栈。
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from pathlib import Path

SAMPLE_BYTES = 1 << 20  # load_labeled 边读边解析：编码只看文件开头这么多字节
SCORED_CHARS = 20_000  # 给一种解法打分时看的字数
PLAUSIBLE = 0.6  # 分数低于它：不像中文文本


class DataFileError(ValueError):
    """文件的内容有问题（空、二进制、编码认不出、格式或标签不对）：用户改文件就能解决。"""


def _as_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"找不到文件 {path}：请检查路径和文件名（相对路径从当前工作目录 {Path.cwd()} 算起）。")
    if path.is_dir():
        raise IsADirectoryError(f"{path} 是一个文件夹，不是文件：请给出文件夹里某个文件的路径。")
    return path


# ---------------------------------------------------------------------------------------------- 编码


def _is_common_hanzi(ch: str, encoding: str) -> bool:
    """``ch`` 是不是这种编码里的常用汉字：GB2312 的一、二级汉字（区位 B0–F7），Big5 的常用字（A440–C67E）。"""
    blocks = {"gb18030": (("gb2312", 0xB0, 0xF7),), "big5": (("big5", 0xA4, 0xC6),)}
    for charset, first, last in blocks.get(encoding, (("gb2312", 0xB0, 0xF7), ("big5", 0xA4, 0xC6))):
        try:
            lead = ch.encode(charset)[0]
        except UnicodeEncodeError:
            continue
        if first <= lead <= last:
            return True
    return False


def _plausibility(text: str, encoding: str) -> float:
    """一段解码结果有多像中文文本（0–1）：常用汉字、标点、ASCII 各算 1 分，其他汉字算半分，
    假名、希腊字母、韩文、私用区字符之类算 0 分。"""
    text = text[:SCORED_CHARS]
    if not text:
        return 0.0
    score = 0.0
    for ch in text:
        code = ord(ch)
        if ch.isascii():
            score += ch.isprintable() or ch in "\t\n\r"
        elif 0x3000 <= code <= 0x303F or 0xFF00 <= code <= 0xFFEF or 0x2000 <= code <= 0x206F:
            score += 1  # 中文标点、全角字符、“”‘’……——
        elif 0x4E00 <= code <= 0x9FFF:
            score += 1 if _is_common_hanzi(ch, encoding) else 0.5
    return score / len(text)


def _decode_prefix(data: bytes, encoding: str, final: bool) -> str | None:
    """按 ``encoding`` 严格解码；``final=False`` 时末尾被截断的半个字不算错。解不开返回 None。"""
    try:
        return codecs.getincrementaldecoder(encoding)().decode(data, final=final)
    except UnicodeDecodeError:
        return None


def _refuse_mixed_utf8(data: bytes, name: str, final: bool) -> None:
    """整个文件不是合法的 UTF-8，却有几行是地道的 UTF-8 中文：多半是两个文件（一个 UTF-8、一个 GBK）拼在了一起。
    整体按 GB18030 解码会把 UTF-8 那几行变成乱码，所以报错，指出各是哪一行。

    “地道”：这一行按 UTF-8 解得开，而且解出至少两个汉字。GBK 的字节恰好拼成合法 UTF-8 汉字的机会很小
    （要连着几个字节都落在 UTF-8 的三字节格式里），所以纯 GBK 文件不会被误判。
    """
    lines = data.split(b"\n")
    if not final:
        lines = lines[:-1]  # 只读了文件开头时，最后一行可能被截断
    utf8_line = other_line = None
    for number, line in enumerate(lines, 1):
        if line.isascii():
            continue
        decoded = _decode_prefix(line, "utf-8", True)
        if decoded is None:
            other_line = other_line or number
        elif utf8_line is None and sum("\u4e00" <= ch <= "\u9fff" for ch in decoded) >= 2:
            utf8_line = number
        if utf8_line and other_line:
            raise DataFileError(
                f"{name} 混用了两种编码：第 {utf8_line} 行是 UTF-8，第 {other_line} 行不是（多半是 GBK）。"
                "常见原因是把两个文件直接拼在了一起。请分别用文本编辑器打开、都另存为 UTF-8 以后再合并。"
            )


def _detect(data: bytes, name: str, final: bool) -> str:
    if not data.strip():
        raise DataFileError(f"{name} 是空的（没有任何文字）：请确认选对了文件，并且文件已经保存。")
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # Windows 记事本“另存为 Unicode”得到的就是它
    if data.startswith(b"PK\x03\x04"):
        raise DataFileError(
            f"{name} 是 zip 压缩格式（.xlsx / .docx 都是），不是纯文本：Excel 表格请用"
            "“另存为 -> CSV UTF-8（逗号分隔）”，Word 文档请另存为“纯文本 (.txt)”。"
        )
    has_nul = b"\x00" in data
    text = None if has_nul else _decode_prefix(data, "utf-8", final)
    if text is not None:
        encoding = "utf-8"
    else:
        if not has_nul:
            _refuse_mixed_utf8(data, name, final)
        # 有 NUL 字节的不会是 GB18030 / Big5（ASCII 字符在 UTF-16 里才带一个 NUL）；UTF-16 的字节数是偶数
        candidates = [] if has_nul else ["gb18030", "big5"]
        if len(data) % 2 == 0 or not final:
            candidates += ["utf-16-le", "utf-16-be"]
        scored = []
        for candidate in candidates:
            decoded = _decode_prefix(data, candidate, final)
            if decoded is not None:
                scored.append((_plausibility(decoded, candidate), -len(scored), candidate, decoded))
        best = max(scored, default=None)  # 分数相同时取前面的（GB18030 优先）
        if best is None or best[0] < PLAUSIBLE:
            if has_nul:
                raise DataFileError(f"{name} 看起来是二进制文件（含有 NUL 字节），不是文本：请换成 .txt / .csv / .jsonl 文本文件。")
            raise DataFileError(
                f"无法识别 {name} 的编码：按 UTF-8、GB18030/GBK、Big5、UTF-16 解出来都不像中文文本。请用文本编辑器把它"
                "另存为 UTF-8（在 Python 里也可以明确指定编码，例如 read_text(path, encoding='big5')）。"
            )
        _, _, encoding, text = best
    sample = text[:8192]
    controls = sum(ch < " " and ch not in "\t\n\r\f" for ch in sample)
    if controls > 0.01 * len(sample):
        raise DataFileError(f"{name} 里有大量控制字符，看起来是二进制文件而不是文本：请换成纯文本文件。")
    return encoding


def detect_encoding(data: bytes, name: str = "数据") -> str:
    """判断一段字节的编码，返回 ``"utf-8-sig"``、``"utf-16"``（有 BOM）、``"utf-8"``、``"gb18030"``、
    ``"big5"``、``"utf-16-le"`` 或 ``"utf-16-be"``（没有 BOM）。做法见模块说明。

    ``name`` 用在报错里。空数据、二进制数据或认不出的编码抛出 :class:`DataFileError`，说明原因和解决办法。

    >>> detect_encoding("今天的天氣很好，我們去公園散步。".encode("big5"))
    'big5'
    >>> detect_encoding("今天天气很好，我们去公园散步。".encode("utf-16-le"))
    'utf-16-le'
    """
    return _detect(data, name, final=True)


def read_text(path: str | Path, encoding: str | None = None) -> str:
    """读入一个文本文件，自动识别编码（UTF-8、UTF-8 BOM、UTF-16、GB18030/GBK、Big5，见 :func:`detect_encoding`）。

    换行统一成 ``\\n``，BOM 去掉。空文件、二进制文件、无法解码的文件抛出 :class:`DataFileError`，
    错误信息写明是哪个文件、怎么处理；``encoding`` 给定时直接按它解码。

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "gbk.txt")
    >>> _ = open(path, "wb").write("质量很好".encode("gbk"))
    >>> read_text(path)
    '质量很好'
    """
    path = _as_file(path)
    return decode_text(path.read_bytes(), name=f"文件 {path}", encoding=encoding)


def decode_text(data: bytes, name: str = "数据", encoding: str | None = None) -> str:
    """一段字节 -> 文字，做法与 :func:`read_text` 相同（自动识别编码、换行统一成 ``\\n``、空的或二进制的报错）。
    用来读文件以外的来源，例如管道送进来的标准输入：``decode_text(sys.stdin.buffer.read(), "标准输入")``。

    >>> decode_text("电话 13812345678".encode("utf-16"))
    '电话 13812345678'
    """
    if encoding is None:
        encoding = detect_encoding(data, name=name)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataFileError(f"{name} 不能按 {encoding} 解码（第 {err.start} 字节）：请换一个编码，"
                            "或不指定 encoding 让程序自动识别。") from err
    if not text.strip():
        raise DataFileError(f"{name} 是空的（没有任何文字）：请确认选对了文件，并且文件已经保存。")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------------------------------------- 带标签的数据


def _to_label(value, where: str):
    """一个标签 -> int（``1``、``"1"``、``"-3"``）或 str（``"pos"``、``"好评"``）；小数和列表不是分类标签。"""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise DataFileError(f"{where}的标签 {json.dumps(value, ensure_ascii=False)} 是 {type(value).__name__}："
                            "分类标签应是整数（0、1、2……）或文字（如 pos、neg），每行一个。")
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|[+-]?\d+[eE][+-]?\d+", text):
        raise DataFileError(f"{where}的标签 {text!r} 是小数：分类标签应是整数（0、1、2……）或文字（如 pos、neg）。")
    if text.startswith(("[", "{")):
        raise DataFileError(f"{where}的标签 {text!r} 像一个列表：每行只能有一个分类标签（整数或文字）。")
    return text


class _LabelKind:
    """记住第一个标签是整数还是文字；之后类型不同的标签报错，说出是哪一行。"""

    def __init__(self) -> None:
        self.first = None  # (哪一行, 标签)

    def check(self, label, where: str) -> None:
        if self.first is None:
            self.first = (where, label)
            return
        first_where, first = self.first
        if isinstance(label, int) != isinstance(first, int):
            kind = {True: "整数", False: "文字"}
            raise DataFileError(
                f"{where}的标签 {label!r} 是{kind[isinstance(label, int)]}，而{first_where}的标签 {first!r} 是"
                f"{kind[isinstance(first, int)]}：一个文件里的标签要么都是整数，要么都是文字，请统一。")


def _rows(f, path: Path, suffix: str):
    """逐行产出 ``(行号, 列名 -> 值)``：文件边读边解析，不把整个文件读进内存。"""
    if suffix != ".jsonl":
        reader = csv.DictReader(f, delimiter="," if suffix == ".csv" else "\t")
        for row in reader:
            yield reader.line_num, row
        return
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"文件 {path} 第 {number} 行不是合法的 JSON（{err.msg}）：每行应是一个对象，"
                                "如 {\"text\": \"很好\", \"label\": 1}。") from err
        if not isinstance(record, dict):
            raise DataFileError(f"文件 {path} 第 {number} 行是 {type(record).__name__}，不是 JSON 对象 {{...}}。")
        yield number, record


TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl")  # 有列名的表格文件：按列读


def _table_rows(path: Path, encoding: str | None, columns: dict[str, str], how_to_name: str):
    """逐行产出 ``(行的位置说明, 列名 -> 值)``；编码自动识别，第一行数据就缺 ``columns`` 里的列时报错
    （``columns``：列名 -> 它的角色，例如 ``{"评论": "text_col"}``；``how_to_name`` 说怎样指定列名）。"""
    if encoding is None:
        with open(path, "rb") as f:
            head = f.read(SAMPLE_BYTES)
        encoding = _detect(head, f"文件 {path}", final=len(head) < SAMPLE_BYTES)
    try:
        with open(path, encoding=encoding, newline="") as f:
            for i, (number, row) in enumerate(_rows(f, path, path.suffix.lower())):
                if i == 0:  # 第一行数据就没有这一列：多半是列名写错了
                    for column, role in columns.items():
                        if column not in row:
                            raise DataFileError(f"文件 {path} 里没有名为 {column!r} 的列（{role}）；找到的列是 "
                                                f"{list(row)}。{how_to_name}")
                yield f"文件 {path} 第 {number} 行", row
    except UnicodeDecodeError as err:
        raise DataFileError(f"文件 {path} 读到后面时不能按 {encoding} 解码了（开头看起来是 {encoding}）：文件里可能混了"
                            "两种编码。请用文本编辑器把它另存为 UTF-8，或用 encoding=... 指定编码。") from err


def load_labeled(
    path: str | Path,
    text_col: str = "text",
    label_col: str = "label",
    encoding: str | None = None,
) -> list[tuple[str, int | str]]:
    """读入带标签的数据，返回 ``[(text, label), ...]``，格式由扩展名决定：

    - ``.csv``（逗号分隔）、``.tsv`` / ``.tab``（制表符分隔）：第一行是列名；
    - ``.jsonl``：每行一个 JSON 对象，如 ``{"text": "很好", "label": 1}``。

    ``text_col``/``label_col`` 指定文本列和标签列。标签要么都是整数（``"1"`` 转成 int），要么都是文字；
    小数、列表或两种混用时报错，说出是哪一行。编码自动识别（看文件开头，见 :func:`detect_encoding`），
    文件边读边解析，所以几百 MB 的 CSV 占用的内存也只比结果本身多一点。缺列、缺键、空文本或 JSON 写错时，
    错误信息写明文件、行号和列名。

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "mine.csv")
    >>> _ = open(path, "w", encoding="utf-8").write("评论,情感\\n很好,1\\n太差,0\\n")
    >>> load_labeled(path, text_col="评论", label_col="情感")
    [('很好', 1), ('太差', 0)]
    """
    path = _as_file(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataFileError(f"不支持的文件类型 {path.name}：load_labeled 读 .csv、.tsv 和 .jsonl；纯文本请用 read_text。")
    pairs, kind = [], _LabelKind()
    for where, row in _table_rows(path, encoding, {text_col: "text_col", label_col: "label_col"},
                                  "请用 load_labeled(path, text_col=..., label_col=...) 指定列名。"):
        text, label = row.get(text_col), row.get(label_col)
        if text is None or label is None or (isinstance(label, str) and not label.strip()):
            missing = text_col if text is None else label_col
            raise DataFileError(f"{where}缺少 {missing!r} 的值：请补上，或删掉这一行。")
        if not str(text).strip():
            raise DataFileError(f"{where}的 {text_col!r} 是空的：请补上文本，或删掉这一行。")
        label = _to_label(label, where)
        kind.check(label, where)
        pairs.append((str(text), label))
    if not pairs:
        raise DataFileError(f"文件 {path} 只有列名，没有数据行。")
    return pairs


def load_texts(path: str | Path, text_col: str = "text", encoding: str | None = None,
               how_to_name: str = "请用 load_texts(path, text_col=...) 指定文本所在的列。") -> list[str]:
    """只要文本（例如拿去预测）：``.csv`` / ``.tsv`` / ``.jsonl`` 取 ``text_col`` 这一列（有没有标签列都行，
    列名那一行不算）；其他文件（``.txt`` 等）每个非空行一条。首尾空白去掉，编码自动识别。

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "mine.csv")
    >>> _ = open(path, "w", encoding="utf-8").write("评论,情感\\n很好,1\\n太差,0\\n")
    >>> load_texts(path, text_col="评论")
    ['很好', '太差']
    """
    path = _as_file(path)
    if path.suffix.lower() == ".json":  # 一整个 JSON 数组按行读，会把 [{"text": ...}] 当成一句话
        raise DataFileError(f"{path.name} 是 JSON 文件：请存成 JSON Lines（.jsonl，每行一个 {{\"text\": ...}}），"
                            "或者纯文本（.txt，每行一句）。")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        return [line.strip() for line in read_text(path, encoding).splitlines() if line.strip()]
    texts = []
    for where, row in _table_rows(path, encoding, {text_col: "文本列"}, how_to_name):
        text = row.get(text_col)
        if text is None or not str(text).strip():
            raise DataFileError(f"{where}的 {text_col!r} 是空的：请补上文本，或删掉这一行。")
        texts.append(str(text).strip())
    if not texts:
        raise DataFileError(f"文件 {path} 只有列名，没有数据行。")
    return texts
