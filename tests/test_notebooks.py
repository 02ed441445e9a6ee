"""每个提交的 notebook 都要像刚从头到尾干净地运行过一次（cpu 档位）。

nbval 负责在 smoke 档位里重新执行它们；这里检查提交的文件本身：读者打开时看到的内容。
"""

import json
import re
from pathlib import Path

import pytest

from aigc_lib.course.site import parse_headline

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))
MAX_BYTES = 3_000_000  # 图片嵌在 notebook 里，但一个章节不该超过几 MB

ABSOLUTE_PATH = re.compile(r"(/home/|/root/|/Users/|/tmp/|/work/|[A-Za-z]:\\\\Users)")
PLACEHOLDER = re.compile(r"__[A-Z][A-Z0-9_]*__|⟦[^⟧]*⟧|\bTODO\b|^[A-Z][A-Z0-9_]+$", re.M)  # 写作时留的空，运行后要换成正文
MEMORY_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{6,}")
MISSING_GLYPH = re.compile(r"does not have a glyph|missing from (current )?font")  # 图里的汉字画成了方块


def test_chapters_exist_and_are_numbered():
    assert NOTEBOOKS, "chapters/ 里没有 notebook"
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), path.name


def _text_of(output):
    if "text" in output:
        return "".join(output["text"])
    parts = []
    for key, value in output.get("data", {}).items():
        if key.startswith("text/") or key == "application/json":
            parts.append(value if isinstance(value, str) else "".join(value) if isinstance(value, list) else json.dumps(value))
    return "".join(parts) + "".join(output.get("traceback", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_executed_and_clean(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} 太大：{path.stat().st_size} 字节"
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["kernelspec"]["language"] == "python"

    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} 不是从头到尾一次运行的：{counts}"

    for cell in code:
        source = "".join(cell["source"])
        expected_error = "NBVAL_RAISES_EXCEPTION" in source
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                assert expected_error, f"{path.name} 有报错的单元格：{source[:80]!r}"
            text = _text_of(output)
            assert not ABSOLUTE_PATH.search(text), f"{path.name} 的输出含绝对路径：{ABSOLUTE_PATH.search(text)[0]!r}"
            assert not MEMORY_ADDRESS.search(text), f"{path.name} 的输出含内存地址"
            assert not MISSING_GLYPH.search(text), f"{path.name} 的图缺字（汉字成了方块）：{source[:80]!r}"
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {}), (
                f"{path.name} 的输出里有控件（widget），保存后读者看不到；请用 aigc course run --profile cpu --only NN --inplace 重新执行"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_follows_course_conventions(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# ")
    for heading in ("小结", "练习"):
        assert heading in markdown, f"{path.name} 缺少“{heading}”"
    assert "<details>" in markdown, f"{path.name} 的练习缺少折叠的参考答案"
    leftover = PLACEHOLDER.findall(markdown)
    assert not leftover, f"{path.name} 的正文里还有没填写的占位符：{sorted(set(leftover))}"
    assert "**预计运行时间**" in markdown, f"{path.name} 缺少“预计运行时间”一行"
    first_cell = "".join(nb["cells"][0]["source"])
    assert parse_headline(first_cell), f"{path.name} 开头的说明里缺少“**主要结果**：……”一行（网站目录页要显示它）"
