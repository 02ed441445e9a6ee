"""每一章的练习里至少有一道自成一体的编程题，这里把它的参考解答真正运行一遍。

约定：参考解答是 ``<details>`` 里的一段 ```python 代码，第一行正好是 ``MARKER``。这段代码
只依赖标准库、torch、numpy、jieba、aigc_lib 和 dev 依赖（scikit-learn、sacrebleu、seqeval、
gensim），不依赖 notebook 里的变量，数据很小（几秒内跑完），并且以 assert 结尾：拿它和一个
可信的参照（torch.optim、sklearn、暴力枚举、手算的例子……）比较，答案写错了测试就会失败。

每段代码在一个全新的命名空间里用 exec 运行：AIGC_PROFILE=smoke，工作目录是 chapters/，
matplotlib 用 Agg 后端。环境变量 AIGC_CHAPTERS_DIR 可以把测试指向另一份 chapters 目录。
"""

import json
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # 在任何代码导入 pyplot 之前

MARKER = "# 自成一体的参考解答：tests/test_exercises.py 会运行这段代码"
REPO = Path(__file__).resolve().parent.parent
CHAPTERS = Path(os.environ.get("AIGC_CHAPTERS_DIR") or REPO / "chapters").resolve()
NOTEBOOKS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
FENCED_PYTHON = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def marked_blocks(path: Path) -> list[str]:
    """notebook 里所有 markdown 单元格中、第一行是 MARKER 的 ```python 代码段。"""
    nb = json.loads(path.read_text(encoding="utf-8"))
    blocks = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        for match in FENCED_PYTHON.finditer(source):
            code = match.group(1)
            if code.split("\n", 1)[0].strip() == MARKER:
                blocks.append(code)
    return blocks


def run_block(code: str, label: str) -> None:
    """在全新的命名空间里执行一段参考解答；出错时 traceback 里的文件名就是 label。"""
    namespace = {"__name__": "__exercise__", "__builtins__": __builtins__}
    exec(compile(code, label, "exec"), namespace)


def check_notebook(path: Path) -> int:
    """运行一个 notebook 的全部带标记的参考解答，返回运行了几段。"""
    blocks = marked_blocks(path)
    assert blocks, (
        f"{path.name} 的练习里没有可测试的参考解答：至少一道编程题的答案应是一段 ```python 代码，"
        f"第一行写 {MARKER!r}"
    )
    for i, code in enumerate(blocks, start=1):
        run_block(code, f"<{path.name} 练习参考解答 {i}>")
    return len(blocks)


@pytest.fixture
def exercise_env(monkeypatch):
    """与 nbval 运行 notebook 时相同的环境：smoke 档位、工作目录 chapters/、不弹窗的 matplotlib。"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    monkeypatch.setenv("AIGC_PROFILE", "smoke")
    monkeypatch.setenv("AIGC_PROGRESS", "off")
    monkeypatch.chdir(CHAPTERS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 参考解答应当在一个 CPU 核上几秒内跑完
    yield
    torch.set_num_threads(threads)
    plt.close("all")


def test_there_are_chapters():
    assert NOTEBOOKS, f"{CHAPTERS} 里没有 NN_*.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_exercise_solutions_run(path, exercise_env):
    check_notebook(path)


# ---------------------------------------------------------------------------
# 测试本身也要能失败：用几个假的 notebook 检查它
# ---------------------------------------------------------------------------


def _fake_notebook(tmp_path: Path, markdown: str) -> Path:
    nb = {
        "cells": [
            {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": ["# 假的一章\n"]},
            {"cell_type": "code", "id": "code", "execution_count": None, "metadata": {}, "outputs": [],
             "source": ["value = 41  # 参考解答不能用到 notebook 里的变量\n"]},
            {"cell_type": "markdown", "id": "exercises", "metadata": {}, "source": markdown.splitlines(keepends=True)},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "99_fake.ipynb"
    path.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
    return path


def _exercise_markdown(code: str) -> str:
    return (
        "## 练习\n\n1. **（编程）** 算一算。\n\n<details>\n<summary>参考答案</summary>\n\n"
        f"1. 参考代码：\n\n```python\n{MARKER}\n{code}\n```\n\n</details>\n"
    )


def test_harness_fails_on_a_wrong_solution(tmp_path, exercise_env):
    path = _fake_notebook(tmp_path, _exercise_markdown("total = sum(range(4))\nassert total == 7"))
    assert len(marked_blocks(path)) == 1
    with pytest.raises(AssertionError):
        check_notebook(path)


def test_harness_runs_a_correct_solution(tmp_path, exercise_env):
    path = _fake_notebook(tmp_path, _exercise_markdown("total = sum(range(4))\nassert total == 6"))
    assert check_notebook(path) == 1


def test_harness_uses_a_fresh_namespace(tmp_path, exercise_env):
    # notebook 代码单元格里的变量（value）在参考解答里不存在
    path = _fake_notebook(tmp_path, _exercise_markdown("assert value + 1 == 42"))
    with pytest.raises(NameError):
        check_notebook(path)


def test_harness_requires_a_marked_block(tmp_path, exercise_env):
    unmarked = "## 练习\n\n1. 想一想。\n\n<details>\n<summary>参考答案</summary>\n\n```python\nassert False\n```\n\n</details>\n"
    path = _fake_notebook(tmp_path, unmarked)
    assert marked_blocks(path) == []
    with pytest.raises(AssertionError, match="没有可测试的参考解答"):
        check_notebook(path)
