"""aigc course run / build：在临时目录里的几个小 notebook 上端到端地跑，不开浏览器。"""

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from aigc_lib.course import run as course, site as course_site
from aigc_lib.cli import main

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"


def _notebook(path: Path, *cells) -> Path:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def tiny_course(tmp_path):
    """三章：01 正常；02 第 2 个代码单元格抛出异常；03 在出错之后，不应当被运行。"""
    folder = tmp_path / "chapters"
    folder.mkdir()
    stale = new_code_cell("import os\nprint(os.environ['AIGC_PROFILE'], os.environ['AIGC_PROGRESS'])",
                          execution_count=7, outputs=[nbformat.v4.new_output("stream", text="上次的输出\n")])
    _notebook(folder / "01_good.ipynb", new_markdown_cell("# 01 好的一章"), stale,
              new_code_cell("from pathlib import Path\nprint(Path.cwd().name)", execution_count=3),
              new_code_cell("open('written_by_01.txt', 'w').write('ok')"))
    _notebook(folder / "02_broken.ipynb", new_markdown_cell("# 02 坏的一章"), new_code_cell("x = 1"),
              new_code_cell("y = x + 1\nraise ValueError('数据坏了：第 3 行')"),
              new_code_cell("print('不该运行')", execution_count=9,
                            outputs=[nbformat.v4.new_output("stream", text="上次的输出\n")]))
    _notebook(folder / "03_after.ipynb", new_markdown_cell("# 03 后面的一章"), new_code_cell("print('后面')"))
    return folder


def test_run_executes_in_order_stops_at_failing_cell(tiny_course, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["course", "run", "--chapters", str(tiny_course), "--profile", "smoke", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1

    good = nbformat.read(out / "01_good.ipynb", as_version=4)
    code_cells = [c for c in good.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code_cells] == [1, 2, 3]  # 旧的编号清掉了
    assert "".join(o.get("text", "") for o in code_cells[0].outputs) == "smoke off\n"  # 旧的输出也清掉了
    assert code_cells[1].outputs[0]["text"].strip() == "chapters"  # 工作目录是章节所在的文件夹
    assert (tiny_course / "written_by_01.txt").is_file()
    assert "execution" not in code_cells[0].metadata  # 不记录执行时间，提交的 diff 干净

    # 出错的说明：哪一章、哪个单元格（索引和第一行）、错误名称和信息、调用栈
    err = captured.err
    assert "02_broken.ipynb" in err
    assert "索引 2" in err and "第一行：y = x + 1" in err
    assert "ValueError" in err and "数据坏了：第 3 行" in err
    assert "调用栈" in err and "raise ValueError" in err
    assert "--only 02" in err
    # 执行到出错为止的 notebook 保存下来，最后一个单元格没有运行
    broken = nbformat.read(out / "02_broken.ipynb", as_version=4)
    assert broken.cells[-1].execution_count is None and broken.cells[-1].outputs == []  # 没运行，旧输出也清掉
    assert any(o["output_type"] == "error" for o in broken.cells[2].outputs)
    assert not (out / "03_after.ipynb").exists()

    table = captured.out[captured.out.index("章节"):]
    assert re.search(r"01_good\.ipynb\s+成功\s+\d+\.\d", table)
    assert re.search(r"02_broken\.ipynb\s+出错\s+\d+\.\d", table)
    assert re.search(r"03_after\.ipynb\s+未运行\s+-", table)
    assert "合计" in table


def test_run_inplace_only_rewrites_the_selected_chapter(tiny_course, capsys):
    before = (tiny_course / "02_broken.ipynb").read_text(encoding="utf-8")
    assert main(["course", "run", "--chapters", str(tiny_course), "--profile", "smoke", "--only", "1",
                 "--inplace"]) == 0
    out = capsys.readouterr().out
    good = nbformat.read(tiny_course / "01_good.ipynb", as_version=4)
    assert [c.execution_count for c in good.cells if c.cell_type == "code"] == [1, 2, 3]
    assert (tiny_course / "02_broken.ipynb").read_text(encoding="utf-8") == before
    assert "01_good.ipynb：完成" in out and re.search(r"01_good\.ipynb\s+成功", out)
    assert "02_broken" not in out


def test_run_keeps_kernel_log_noise_out_of_the_terminal(tiny_course, tmp_path, capfd):
    """内核自己的启动警告（ipykernel 7："Kernel is running over TCP without encryption"）不该打乱终端；
    单元格写到 stderr 的内容照常记进 notebook。"""
    chapter = _notebook(tiny_course / "04_stderr.ipynb", new_code_cell("import sys\nprint('写到 stderr', file=sys.stderr)"))
    assert main(["course", "run", "--chapters", str(tiny_course), "--profile", "smoke", "--only", "04",
                 "--out", str(tmp_path / "out")]) == 0
    terminal = capfd.readouterr().err
    assert "IPKernelApp" not in terminal and "without encryption" not in terminal
    ran = nbformat.read(tmp_path / "out" / chapter.name, as_version=4)
    assert ran.cells[0].outputs[0]["name"] == "stderr" and "写到 stderr" in ran.cells[0].outputs[0]["text"]


def test_unknown_chapter_number_lists_the_available_ones(tiny_course, capsys):
    assert main(["course", "run", "--chapters", str(tiny_course), "--only", "07"]) == 2
    err = capsys.readouterr().err
    assert "没有第 07 章" in err and "可选的章节编号：01, 02, 03" in err
    assert main(["course", "build", "--src", str(tiny_course), "--only", "1,x"]) == 2
    assert "没有第 x 章" in capsys.readouterr().err
    assert main(["course", "run", "--chapters", str(tiny_course.parent / "nowhere")]) == 2
    assert "找不到章节目录" in capsys.readouterr().err


def test_select_chapters_keeps_number_order():
    paths = [Path(f"{n}_x.ipynb") for n in ("00", "03", "05", "10")]
    assert course.select_chapters(paths, "10,3") == [paths[1], paths[3]]
    assert course.select_chapters(paths, None) == paths


def test_parse_runtimes_and_goals():
    line = ("**预计运行时间**：smoke 档位约 10 秒；cpu 档位（2 核 CPU）约 8 分钟；gpu 档位与 cpu 相同"
            "（这一章不训练模型）。")
    assert course_site.parse_runtimes(line) == {"smoke": "约 10 秒", "cpu": "约 8 分钟", "gpu": "与 cpu 相同"}
    nested = "**预计运行时间**：smoke 档位几秒；cpu 档位约 6 分钟（2 核 CPU 上实测；其中一分多钟是解码）；gpu 档位几分钟。"
    assert course_site.parse_runtimes(nested) == {"smoke": "几秒", "cpu": "约 6 分钟", "gpu": "几分钟"}
    # 还没填好的占位符不当真
    assert course_site.parse_runtimes("**预计运行时间**：smoke 档位约 __SMOKE__；cpu 档位约 ? 分钟；gpu 档位几分钟。") == {
        "smoke": "", "cpu": "", "gpu": "几分钟"}
    assert course_site.parse_runtimes("**预计运行时间**：⟦runtime⟧") == {"smoke": "", "cpu": "", "gpu": ""}
    first = "# 01 标题\n\n导语。\n\n**你将学到**\n- 第一条；\n- 第二条 $x^2$。\n\n**先修**：无。"
    assert course_site.parse_learning_goals(first) == "- 第一条；\n- 第二条 $x^2$。"
    assert course_site.parse_learning_goals("# 01 标题\n\n只有一段导语。") == "只有一段导语。"
    assert course_site.parse_headline(first + "\n\n**主要结果**：分词 F1 对照表。\n\n**预计运行时间**：……") == "分词 F1 对照表。"
    assert course_site.parse_headline(first) == ""
    assert course_site.parse_headline("**主要结果**：⟦headline⟧") == ""



def test_default_slide_types_split_at_headings_and_explicit_metadata_wins():
    nb = new_notebook(cells=[
        new_markdown_cell("# 标题\n\n导语"),
        new_code_cell("x = 1"),
        new_markdown_cell("上一段输出说明了什么。\n\n## 1. 第一节\n\n"
                          "```python\n# 代码块里的井号不是标题\n```\n\n### 细节"),
        new_code_cell(""),
        new_code_cell("\n".join(f"print({i})" for i in range(30))),
    ])
    assert course_site.assign_default_slide_types(nb)
    kinds = [(c.cell_type, c.source.splitlines()[0] if c.source else "", c.metadata.slideshow.slide_type)
             for c in nb.cells]
    assert kinds == [
        ("markdown", "# 标题", "slide"),
        ("code", "x = 1", "-"),
        ("markdown", "上一段输出说明了什么。", "-"),
        ("markdown", "## 1. 第一节", "slide"),
        ("markdown", "### 细节", "subslide"),
        ("code", "", "skip"),
        ("code", "print(0)", "subslide"),  # 一页放不下
    ]
    assert len({c.id for c in nb.cells}) == len(nb.cells)

    explicit = new_notebook(cells=[new_markdown_cell("# 标题"), new_markdown_cell("## 一节")])
    explicit.cells[1].metadata["slideshow"] = {"slide_type": "fragment"}
    assert not course_site.assign_default_slide_types(explicit)
    assert "slideshow" not in explicit.cells[0].metadata and len(explicit.cells) == 2


def test_find_remote_references_catches_scripts_styles_fonts_not_prose_links():
    for remote in ['<script src="https://cdn.example.com/a.js"></script>',
                   "<link rel='stylesheet' href='//fonts.example.com/x.css'>",
                   '<style>@import url("https://fonts.example.com/css");</style>',
                   "@font-face { src: url(http://example.com/f.woff) }",
                   '<img src="https://example.com/a.png">',
                   'const m = (await import("https://cdn.example.com/mermaid.mjs")).default;']:
        assert course_site.find_remote_references(remote), remote
    local = ('<script src="assets/mathjax/MathJax.js"></script><link href="assets/course.css" rel="stylesheet">'
             '<a href="https://ui.perfetto.dev">Perfetto</a> url(fonts/x.otf) xmlns="http://www.w3.org/2000/svg"')
    assert course_site.find_remote_references(local) == []


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """00_setup 的副本加一个小章节（标题在单元格中间、公式、指回 00 的链接、一张“图”），生成网站。"""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(CHAPTERS / "00_setup.ipynb", src / "00_setup.ipynb")
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    plot = new_code_cell("plot()", execution_count=1, outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": png, "text/plain": "<Figure>"})])
    _notebook(src / "01_tiny.ipynb",
              new_markdown_cell("# 01 小章节：公式\n\n导语。\n\n**你将学到**\n"
                                "- 注意力 $\\operatorname{softmax}(QK^\\top)$；\n- 第二条。\n\n"
                                "**先修**：[00 环境准备](00_setup.ipynb)。\n\n"
                                "**主要结果**：一张 F1 对照表。\n\n"
                                "**预计运行时间**：smoke 档位约 5 秒；cpu 档位约 1 分钟；gpu 档位几秒。"),
              new_markdown_cell("## 1. 第一节\n\n$$F_1 = \\frac{2PR}{P+R}$$"),
              plot,
              new_markdown_cell("说明上一张图。\n\n## 2. 第二节\n\n正文。"))
    out = tmp_path_factory.mktemp("site") / "site"
    written = course_site.build_site(src, out)
    return src, out, written


def test_build_writes_index_pages_and_slides(built_site):
    _, out, written = built_site
    names = sorted(p.name for p in written)
    assert names == ["00_setup.html", "00_setup.slides.html", "01_tiny.html", "01_tiny.slides.html", "index.html"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert '<a href="00_setup.html">环境准备：这台机器能做什么</a>' in index
    assert '<a href="01_tiny.html">小章节：公式</a>' in index
    assert "$\\operatorname{softmax}(QK^\\top)$" in index  # 学习目标里的公式交给 MathJax
    assert "smoke：约 5 秒" in index and "cpu：约 1 分钟" in index and "gpu：几秒" in index
    assert "<th>主要结果</th>" in index and "<td>一张 F1 对照表。</td>" in index
    assert "<td>一张表：这台机器能做什么" in index  # 00_setup 开头写的主要结果
    assert 'href="01_tiny.slides.html"' in index

    first = (out / "00_setup.html").read_text(encoding="utf-8")
    second = (out / "01_tiny.html").read_text(encoding="utf-8")
    assert '<a href="01_tiny.html" rel="next">01 小章节：公式 →</a>' in first and 'rel="prev"' not in first
    assert '<a href="00_setup.html" rel="prev">← 00 环境准备：这台机器能做什么</a>' in second
    assert 'rel="next"' not in second and '<a href="index.html">目录</a>' in second
    assert 'href="00_setup.html">00 环境准备</a>' in second  # 指向 notebook 的链接改成了页面
    assert "data:image/png;base64," in second
    assert '<html lang="zh">' in second and "AIGC Noto Sans CJK SC" in (out / "assets" / "course.css").read_text()


def test_slides_use_local_reveal_and_auto_slide_breaks(built_site):
    src, out, _ = built_site
    slides = (out / "01_tiny.slides.html").read_text(encoding="utf-8")
    assert '<script src="assets/reveal.js/dist/reveal.js"></script>' in slides
    assert 'href="assets/reveal.js/dist/reveal.css"' in slides
    assert 'href="assets/reveal.js/dist/theme/white.css"' in slides
    assert "Reveal.initialize" in slides and "require(" not in slides
    # 标题、第一节、第二节各一页（第二节的标题写在说明文字之后，也要另起一页）
    assert len(re.findall(r'<section[^>]*>\s*<section', slides)) == 3
    nb = json.loads((src / "01_tiny.ipynb").read_text(encoding="utf-8"))
    assert len(nb["cells"]) == 4 and all("slideshow" not in cell["metadata"] for cell in nb["cells"])  # 原文件不动


def test_site_assets_are_local_and_nothing_is_fetched_from_elsewhere(built_site):
    _, out, _ = built_site
    for relative in ("assets/mathjax/MathJax.js", "assets/mathjax/config/TeX-AMS-MML_HTMLorMML-full.js",
                     "assets/reveal.js/dist/reveal.js", "assets/reveal.js/dist/reveal.css",
                     "assets/reveal.js/dist/theme/white.css", "assets/reveal.js/plugin/notes/notes.js",
                     "assets/reveal.js/LICENSE", "assets/course.css"):
        assert (out / relative).is_file(), relative
    pages = list(out.glob("*.html"))
    assert len(pages) == 5
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert 'src="assets/mathjax/MathJax.js?config=' in text, page.name
        assert "cdnjs" not in text and "unpkg" not in text, page.name
    for path in [*pages, *out.rglob("*.css")]:
        assert course_site.find_remote_references(path.read_text(encoding="utf-8")) == [], path


def test_course_help_is_chinese(capsys):
    for argv in (["course", "--help"], ["course", "run", "--help"], ["course", "build", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "用法：" in out and "显示帮助并退出" in out, argv
    assert main(["course"]) == 2  # 只写 aigc course：打印帮助
    assert "run" in capsys.readouterr().out


@pytest.mark.parametrize("command, theirs, content", [("run", "01_good.ipynb", '{"my": "notebook"}'),
                                                    ("build", "index.html", "MY PAGE")])
def test_out_refuses_to_overwrite_someone_elses_file(tiny_course, tmp_path, capsys, command, theirs, content):
    out = tmp_path / "mine"
    out.mkdir()
    (out / theirs).write_text(content, encoding="utf-8")
    source = ["--chapters", str(tiny_course), "--profile", "smoke"] if command == "run" else ["--src", str(tiny_course)]
    assert main(["course", command, *source, "--only", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / theirs} 已经存在" in err and f"不是 aigc course {command} 写出的目录" in err
    assert "请换一个空的或新的目录" in err and len(err.strip().splitlines()) == 1
    assert (out / theirs).read_text(encoding="utf-8") == content
    assert sorted(p.name for p in out.iterdir()) == [theirs]  # 什么都没写


def test_run_out_twice_into_the_same_folder_keeps_unrelated_files(tiny_course, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("我的笔记", encoding="utf-8")
    for _ in range(2):  # 第二次：目录里的 01_good.ipynb 是上一次写的，照常覆盖
        assert main(["course", "run", "--chapters", str(tiny_course), "--profile", "smoke", "--only", "1",
                     "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text(encoding="utf-8") == "我的笔记"
    assert (out / course.RUN_MARKER).is_file() and (out / "01_good.ipynb").is_file()


def test_build_again_into_the_same_folder_keeps_unrelated_files(tiny_course, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "notes.txt").write_text("我的笔记", encoding="utf-8")
    course_site.build_site(tiny_course, out, only="1")
    assert (out / course_site.SITE_MARKER).is_file()
    course_site.build_site(tiny_course, out, only="1")  # 有标记文件：照常覆盖自己写的页面
    (out / course_site.SITE_MARKER).unlink()  # 加标记文件之前生成的网站（认 assets/course.css）也能重新生成
    course_site.build_site(tiny_course, out, only="1")
    assert (out / "notes.txt").read_text(encoding="utf-8") == "我的笔记"
    assert (out / "01_good.html").is_file() and (out / course_site.SITE_MARKER).is_file()
