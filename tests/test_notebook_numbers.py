"""正文里写的数必须是输出里量出来的：每个 markdown 单元格里带小数点、百分号或乘号/倍的数，
都要在同一个 notebook 的某个输出里出现（允许按正文的位数四舍五入，例如正文"约 0.81"、输出 0.8088）。

训练时逐轮打印的进度行（"第 3/5 轮 ……"）不算：那是过程，不是结果。正文引用某一轮的数，
要由一个单元格专门打印出来（例如历史表），否则很容易把第 4 轮的数当成最后的结果写进正文。

公式里的常数、文献里的数和练习里手算的数不是测出来的，放在下面的 ALLOWED 里，每个写明原因。
标题、代码块、行内代码和章首的“预计运行时间”（`aigc course run` 量的，不在输出里）里的数不检查。
"""

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))

# 正文里的数：带 % / × / 倍 的数，或者带小数点的数（不是 "3.1 节" 这种编号：编号后面跟 "节"，另外排除）
PROSE_NUMBER = re.compile(r"(?<![\d.\w])(\d+(?:\.\d+)?)\s*(%|％|×|倍)|(?<![\d.\w])(\d+\.\d+)(?![\d.]|\s*节)")
OUTPUT_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")
EPOCH_LINE = re.compile(r"^\s*第 \d+/\d+ 轮.*$", re.M)

# notebook -> {正文里的写法: 为什么不是测出来的}
ALLOWED: dict[str, dict[str, str]] = {
    "01_text_cleaning.ipynb": {"80%": "划分比例是设定的常数（80/10/10）"},
    "02_word_segmentation.ipynb": {"0.93": "练习 1 答案里的代码打印的 F1（tests/test_exercises.py 运行它）"},
    "04_word_embeddings.ipynb": {"0.025": "skip-gram 的初始学习率，Mikolov 等（2013）的默认值"},
    "05_rnn_lstm_gru.ipynb": {"0.95": "公式：σ(3) ≈ 0.95"},
    "06_transformer.ipynb": {"0.97": "练习 1 答案里的代码算出的（tests/test_exercises.py 运行它）",
                             "100 倍": "公式：长度 10 倍，T² 就是 100 倍"},
    "07_optimizers.ipynb": {"0.693": "公式：ln 2", "0.095": "练习 1 答案手算的 2/21", "0.905": "练习 1 答案手算的 19/21"},
    "08_evaluation.ipynb": {"4.3": "课程大纲的节号", "3.4": "课程大纲的节号",
                            "2.3": "练习 5 题目给定的交叉熵", "3.3": "练习 5 题目给定的交叉熵",
                            "9.97": "练习 5 答案手算 e^2.3", "9.85": "练习 5 答案手算 2^3.3",
                            "0.333": "练习答案手算的 F1 = 2/6"},
    "09_text_generation.ipynb": {"0.02": "GPT-2 的初始化标准差（Radford 等，2019）",
                                 "3.0": "例子里代码给定的 logit", "2.0": "例子里的 logit 3.0 除以重复惩罚 1.5"},
    "10_seq2seq_translation.ipynb": {"0.90": "课程定下的目标（issue 15），不是结果"},
    "14_large_models.ipynb": {"0.076": "Kaplan 等（2020）测得的 α_N",
                              "0.34": "Hoffmann 等（2022）拟合的参数量指数", "0.28": "Hoffmann 等（2022）拟合的词元数指数",
                              "1.4": "Chinchilla 的训练词元数 1.4T（Hoffmann 等，2022）"},
    "16_responsible_aigc.ipynb": {"2.33": "正态分布的 1% 分位点（练习 2 题目给定的放宽阈值）",
                                  "37.5": "练习 2 答案手算 Tγ(1−γ) = 200 × 0.25 × 0.75",
                                  "64.3": "练习 2 答案手算 50 + 2.33 × √37.5"},
}


def _output_text(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            for key in ("text/plain", "text/html", "text/markdown"):
                parts.append("".join(output.get("data", {}).get(key, "")))
    return EPOCH_LINE.sub("", "\n".join(parts))


def _prose(source: str) -> str:
    source = re.sub(r"\*\*预计运行时间\*\*[^\n]*", " ", source)
    source = re.sub(r"```.*?```", " ", source, flags=re.S)
    source = re.sub(r"`[^`]*`", " ", source)
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))


def _matches(written: str, percent: bool, printed: list[str]) -> bool:
    """written 按自己的位数四舍五入后等于某个输出的数（输出至少要有同样多的小数位）。百分数也可以对应输出里的小数。"""
    places = len(written.split(".")[1]) if "." in written else 0
    target = Decimal(written)
    half = Decimal(1).scaleb(-places) / 2
    for token in printed:
        token_places = len(token.split(".")[1]) if "." in token else 0
        candidates = [(Decimal(token), token_places)]
        if percent:
            candidates.append((Decimal(token) * 100, token_places - 2))
        for value, value_places in candidates:
            if value_places >= places and abs(value - target) <= half and (value_places == places) <= (value == target):
                return True
    return False


def unmeasured_numbers(nb: dict, allowed: dict[str, str] = {}) -> list[tuple[int, str, str]]:
    """``(单元格序号, 正文里的写法, 上下文)``：正文写了、输出里找不到的数。"""
    printed = OUTPUT_NUMBER.findall(_output_text(nb))
    missing = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        prose = _prose("".join(cell["source"]))
        for match in PROSE_NUMBER.finditer(prose):
            written = match.group(1) or match.group(3)
            if match.group(0).strip() in allowed or written in allowed:
                continue
            if not _matches(written, match.group(2) in ("%", "％"), printed):
                context = prose[max(0, match.start() - 30): match.end() + 10].replace("\n", " ")
                missing.append((index, match.group(0).strip(), context))
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_numbers_in_prose_are_printed_by_the_notebook(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    missing = unmeasured_numbers(nb, ALLOWED.get(path.name, {}))
    assert not missing, f"{path.name} 正文里有输出中找不到的数（单元格, 数, 上下文）：\n" + "\n".join(map(str, missing))


def _notebook(markdown: str, output: str) -> dict:
    return {"cells": [{"cell_type": "markdown", "source": markdown},
                      {"cell_type": "code", "source": "", "outputs": [{"output_type": "stream", "text": output}]}]}


@pytest.mark.parametrize("markdown, output, ok", [
    ("准确率 0.8007。", "最后一轮 0.8007\n", True),
    ("准确率 0.8007。", "第 4/5 轮  val_accuracy 0.8007\n最后一轮 0.8001\n", False),  # 只在逐轮进度里
    ("准确率约 0.81。", "F1 0.8088", True),   # 按正文的位数四舍五入
    ("准确率约 0.81。", "F1 0.8049", False),
    ("慢 44×。", "慢 43.9 倍", True),
    ("重复了 17.0%。", "重复比例 0.1703", True),  # 百分数对应输出里的小数
    ("重复了 17.0%。", "重复比例 0.1753", False),
    ("约 2 倍。", "1.18×", False),
    ("见 4.3 节，`lr=0.001`", "", True),      # 章节号和行内代码不查
    ("# 3.1 SGD\n正文", "", True),            # 标题不查
    ("准确率 0.80。", "0.8", False),          # 输出的位数比正文少：不能说正文是从它四舍五入来的
])
def test_checker_catches_numbers_that_no_output_prints(markdown, output, ok):
    assert (unmeasured_numbers(_notebook(markdown, output)) == []) is ok
