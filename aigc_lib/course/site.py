"""``aigc course build``：把执行过的章节生成一个离线网站（目录页、每章一页、每章一套幻灯片）。

nbconvert 的默认模板会从 CDN 加载 MathJax、require.js、reveal.js。这里换成本文件里的小模板：公式由
MathJax 2.7 渲染，文件取自已安装的 ``jupyter-server-mathjax`` 包；幻灯片用 reveal.js，文件取自已安装的
``sphinx-revealjs`` 包（reveal.js 本身是 MIT 许可证）；本机没有中文字体时，用 ``mplfonts`` 包里的
Noto Sans CJK SC。这些都复制进 ``site/assets/``，生成的页面不向站外发出任何请求；
:func:`find_remote_references` 在写出每个文件前再检查一遍。幻灯片的分页见 :func:`assign_default_slide_types`。

为什么选 MathJax 而不是在生成时把 LaTeX 转成 MathML：nbconvert 的幻灯片模板本来就按 MathJax 2 的接口
写（翻页时重新排版公式），MathJax 支持章节里用到的全部 TeX 写法（``\\operatorname``、``aligned`` 等），
也不必在生成时自己从 Markdown 里找出 ``$...$``（代码里的 ``$`` 很容易被误认成公式）。
"""

from __future__ import annotations

import copy
import html
import importlib.util
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .run import PROFILES, CourseError, chapter_number, claim_output, find_chapters, select_chapters

# ----------------------------------------------------------------------------------------------
# aigc course build：离线网站
# ----------------------------------------------------------------------------------------------

SITE_TITLE = "AIGC 文本模型训练与优化"
# 先用本机的中文字体；一个都没有时（例如没装中文字体的 Linux），用随 mplfonts 包复制进网站的 Noto Sans CJK SC。
FONT_STACK = ('"Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", '
              '"WenQuanYi Micro Hei", "AIGC Noto Sans CJK SC", sans-serif')
FALLBACK_FONT = ("mplfonts", "fonts/NotoSansCJKsc-Regular.otf")  # SIL 开源字体许可证，可以随网站分发
SITE_MARKER = ".aigc-site"  # aigc course build 留在网站目录里的标记文件，见 run.claim_output
SLIDE_LINE_BUDGET = 22  # 自动分页时一页幻灯片大约放得下的行数（一张图按 12 行算）

# 页面公用的 MathJax 设置。jupyter-server-mathjax 只带 STIX-Web 网页字体（以及把 TeX 输入和 HTML-CSS 输出
# 打包在一起的配置文件 TeX-AMS-MML_HTMLorMML-full），所以指定 STIX-Web、关掉图片字体。HTML-CSS 输出还会声明
# 一个 src 为 about:blank 的探测字体 MathJax_Blank，浏览器会把它记成一次失败的请求，这里改成 local()。
MATHJAX_HTML = r"""
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
            processEscapes: true, processEnvironments: true},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true}, undefinedFamily: 'FONT_STACK',  // 公式里 \text{...} 中的汉字
               styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank')"}}},
  MathMenu: {showLocale: false},
  displayAlign: "center",
  messageStyle: "none"
});
</script>
<script src="assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"></script>
<link rel="icon" href="data:,">
""".replace("FONT_STACK", FONT_STACK.replace('"', ""))

# 章节页面：nbconvert 的 lab 模板，去掉所有从 CDN 加载的脚本（require.js、控件、mermaid），换上本地 MathJax。
PAGE_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{% block html_head_js %}{% endblock html_head_js %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{{ resources.aigc.mathjax_html }}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block html_head_css %}<link rel="stylesheet" href="assets/course.css">{% endblock html_head_css %}
{% block body_header %}
<body class="jp-Notebook aigc-page" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<main>
{{ resources.aigc.nav_html }}
{% endblock body_header %}
{% block body_footer %}
{{ resources.aigc.nav_html }}
</main>
</body>
{% endblock body_footer %}
"""

# 幻灯片：nbconvert 的 reveal 模板，reveal.js 不经 require.js、直接从 assets/ 加载。
SLIDES_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{% block html_head_js %}{% endblock html_head_js %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{{ resources.aigc.mathjax_html }}{% endblock html_head_js_mathjax %}
{% block html_head_css %}<link rel="stylesheet" href="assets/course.css">{% endblock html_head_css %}
{% block body_footer %}
</div>
</div>
<a class="aigc-back" href="{{ resources.aigc.page }}">返回章节页面</a>
</main>
</body>
{% endblock body_footer %}
{% block footer_js %}
<script src="{{ resources.reveal.url_prefix }}/dist/reveal.js"></script>
<script src="{{ resources.reveal.url_prefix }}/plugin/notes/notes.js"></script>
<script>
Reveal.initialize({
  controls: true, progress: true, hash: true, center: false,
  transition: "{{ resources.reveal.transition }}", slideNumber: "c/t",
  width: {{ resources.reveal.width }}, height: {{ resources.reveal.height }},
  plugins: [RevealNotes]
});
// 翻到新的一页时重新排版公式（隐藏的页面里 MathJax 量不出字号）
Reveal.on("slidechanged", function (event) {
  if (window.MathJax && MathJax.Hub) { MathJax.Hub.Queue(["Rerender", MathJax.Hub, event.currentSlide]); }
});
</script>
{% endblock footer_js %}
"""

COURSE_CSS = """/* aigc course build 生成的网站用的样式。字体不从网络加载：先用本机的中文字体，没有时用 fonts/ 里的。 */
@font-face { font-family: "AIGC Noto Sans CJK SC"; src: url("fonts/NotoSansCJKsc-Regular.otf") format("opentype");
             font-display: swap; }
:root {
  --aigc-font: FONT_STACK;
  --jp-content-font-family: var(--aigc-font);
  --jp-ui-font-family: var(--aigc-font);
  /* 代码和输出里的汉字：等宽字体没有汉字时，逐字换用后面的中文字体 */
  --jp-code-font-family: Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", "Noto Sans Mono CJK SC",
                         FONT_STACK_NO_GENERIC, monospace;
}
html:root { /* reveal.js 主题的变量；html:root 比主题里的 :root 优先 */
  --r-main-font: var(--aigc-font);
  --r-heading-font: var(--aigc-font);
  --r-heading-text-transform: none;
  --r-code-font: var(--jp-code-font-family);
}
body { font-family: var(--aigc-font); }
body.aigc-page main, body.aigc-index main { max-width: 1100px; margin: 0 auto; padding: 0 1.5rem 3rem; }
.aigc-nav { display: flex; gap: 1.5rem; justify-content: space-between; margin: 1rem 0;
            padding: 0.6rem 0; border-bottom: 1px solid #ddd; border-top: 1px solid #ddd; }
.aigc-nav a { text-decoration: none; }
.aigc-index table { border-collapse: collapse; width: 100%; }
.aigc-index th, .aigc-index td { border: 1px solid #ccc; padding: 0.5rem; vertical-align: top; text-align: left; }
.aigc-index th { background: #f3f3f3; white-space: nowrap; }
.aigc-index td ul { margin: 0; padding-left: 1.2rem; }
.aigc-index .runtime { white-space: nowrap; }
/* 幻灯片：内容放不下时在页内滚动，而不是被裁掉 */
.reveal .slides > section, .reveal .slides > section > section { height: 100%; overflow-y: auto; }
.reveal .jp-RenderedImage img { max-height: 520px; }
.aigc-back { position: fixed; left: 1rem; bottom: 1rem; z-index: 40; font-size: 14px; opacity: 0.6; }
""".replace("FONT_STACK_NO_GENERIC", FONT_STACK.removesuffix(", sans-serif")).replace("FONT_STACK", FONT_STACK)


@dataclass
class ChapterInfo:
    """目录页上一章的信息，全部取自 notebook 本身。"""

    path: Path
    number: str
    title: str
    goals_markdown: str
    runtimes: dict[str, str]
    headline: str = ""

    @property
    def page(self) -> str:
        return self.path.stem + ".html"

    @property
    def slides(self) -> str:
        return self.path.stem + ".slides.html"


def _markdown_of(nb) -> str:
    return "\n\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def parse_runtimes(markdown: str) -> dict[str, str]:
    """从 ``**预计运行时间**：smoke 档位约 10 秒；cpu 档位约 2 分钟；gpu 档位几分钟。`` 取出每个档位的时间。

    括号里的补充说明去掉；还没填好的占位符（``__CPU__``、``⟦runtime⟧``、``?``）当作未知，不显示。
    """
    match = re.search(r"\*\*预计运行时间\*\*\s*[：:]\s*(.+)", markdown)
    runtimes = {name: "" for name in PROFILES}
    if not match:
        return runtimes
    # 先去掉括号里的补充说明（其中可能也有分号），再按分号分开各档位
    line = re.sub(r"（[^）]*）|\([^)]*\)", "", match.group(1))
    for part in re.split(r"[；;]", line):
        found = re.search(r"\b(smoke|cpu|gpu)\s*档位\s*(.*)", part)
        if not found:
            continue
        text = found.group(2).strip(" 。.，,")
        if text and not re.search(r"__|⟦|RUNTIME|\?|？", text):
            runtimes[found.group(1)] = text
    return runtimes


def parse_headline(markdown: str) -> str:
    """``**主要结果**：……`` 那一行：读者在这一章最后能看到的主要结果（写在开头的说明里）；没有时返回空串。"""
    match = re.search(r"\*\*主要结果\*\*\s*[：:]\s*(.+)", markdown)
    return match.group(1).strip() if match and not re.search(r"__|⟦", match.group(1)) else ""


def parse_learning_goals(first_cell: str) -> str:
    """第一个单元格里 ``**你将学到**`` 下面的列表；没有时退回到标题后的第一段。返回 Markdown。"""
    match = re.search(r"\*\*你将学到\*\*[：:]?[ \t]*\n((?:[ \t]*[-*] .*(?:\n|$))+)", first_cell)
    if match:
        return match.group(1).strip()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", first_cell) if p.strip()]
    return next((p for p in paragraphs if not p.startswith("#")), "")


def chapter_info(path: Path, nb) -> ChapterInfo:
    """标题（第一个 ``# `` 标题）、学习目标、主要结果和各档位的运行时间。"""
    markdown = _markdown_of(nb)
    heading = re.search(r"^# (.+)$", markdown, flags=re.M)
    number = chapter_number(path)
    title = heading.group(1).strip() if heading else path.stem
    title = re.sub(rf"^{number}\s+", "", title)
    first = next((cell.source for cell in nb.cells if cell.cell_type == "markdown"), "")
    return ChapterInfo(path, number, title, parse_learning_goals(first), parse_runtimes(markdown),
                       parse_headline(first))


def assign_default_slide_types(nb) -> bool:
    """没有幻灯片元数据的 notebook 自动分页，返回是否改动了 ``nb``。

    作者明确写了元数据时以作者为准：只要有一个单元格带 ``metadata.slideshow.slide_type``，整本 notebook
    原样不动。否则：第一个单元格和每个 ``#``/``##`` 标题开始新的一页（slide），``###`` 标题开始一个子页
    （subslide，按 ↓ 翻到），一页放不下（约 :data:`SLIDE_LINE_BUDGET` 行）时也接一个子页；空的代码单元格跳过。
    标题常常写在一个 Markdown 单元格的中间（先评论上一段输出，再开始新的一节），所以先在标题处把
    Markdown 单元格切开；这只发生在 ``nb`` 上，调用者应当传入副本。
    """
    if any("slide_type" in cell.metadata.get("slideshow", {}) for cell in nb.cells):
        return False
    nb.cells = [piece for cell in nb.cells for piece in _split_at_headings(cell)]
    used = 0
    for index, cell in enumerate(nb.cells):
        source = cell.source.lstrip()
        height = _estimated_lines(cell)
        if cell.cell_type == "code" and not source:
            kind = "skip"
        elif index == 0 or (cell.cell_type == "markdown" and re.match(r"#{1,2} ", source)):
            kind, used = "slide", 0
        elif cell.cell_type == "markdown" and source.startswith("### "):
            kind, used = "subslide", 0
        elif used and used + height > SLIDE_LINE_BUDGET:
            kind, used = "subslide", 0
        else:
            kind = "-"
        used += height
        cell.metadata["slideshow"] = {"slide_type": kind}
    return True


def _split_at_headings(cell) -> list:
    """把一个 Markdown 单元格在每个 ``#``/``##``/``###`` 标题行前切开（代码块里的 ``#`` 不算）。"""
    if cell.cell_type != "markdown":
        return [cell]
    pieces, current, in_fence = [], [], False
    for line in cell.source.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence and re.match(r"#{1,3} ", line) and "".join(current).strip():
            pieces.append(current)
            current = []
        current.append(line)
    pieces.append(current)
    if len(pieces) == 1:
        return [cell]
    cells = []
    for number, lines in enumerate(pieces):
        piece = copy.deepcopy(cell)
        piece.source = "".join(lines).strip("\n")
        if "id" in piece:
            piece.id = f"{cell.id}-{number}"
        cells.append(piece)
    return cells


def _estimated_lines(cell) -> int:
    """一个单元格在幻灯片上大约占几行：长行按 80 个字符折行，每张图按 12 行算。"""
    def lines_of(text: str) -> int:
        return sum(1 + len(line) // 80 for line in text.splitlines())

    total = lines_of(cell.source)
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if any(key.startswith("image/") for key in data):
            total += 12
        elif "text" in output:
            total += min(lines_of(output["text"]), 15)
        elif "text/plain" in data or "text/html" in data:
            total += min(lines_of(str(data.get("text/plain", ""))), 15)
    return total


_REMOTE = r"""(?:https?:)?//"""
REMOTE_PATTERNS = [
    re.compile(r"<script\b[^>]*\ssrc\s*=\s*[\"']?" + _REMOTE, re.I),
    re.compile(r"<link\b[^>]*\shref\s*=\s*[\"']?" + _REMOTE, re.I),
    re.compile(r"<(?:img|iframe|source|video|audio|embed)\b[^>]*\ssrc\s*=\s*[\"']?" + _REMOTE, re.I),
    re.compile(r"@import\s+(?:url\(\s*)?[\"']?" + _REMOTE, re.I),
    re.compile(r"url\(\s*[\"']?" + _REMOTE, re.I),
    re.compile(r"\bimport\s*\(\s*[\"']" + _REMOTE, re.I),
    re.compile(r"\bfrom\s+[\"']" + _REMOTE, re.I),
]


def find_remote_references(text: str) -> list[str]:
    """HTML 或 CSS 里会让浏览器向别的网站发请求的引用：脚本、样式表、图片、``@import``、``url(...)``、
    ``import("...")``。正文里的普通链接（``<a href>``）不算。返回找到的片段，离线的页面应当返回空列表。"""
    found = []
    for pattern in REMOTE_PATTERNS:
        found += [text[m.start():m.end() + 40] for m in pattern.finditer(text)]
    return found


def _package_dir(package: str) -> Path:
    """已安装的包所在的目录；只查找，不导入（sphinx_revealjs 导入时会拉起整个 Sphinx）。"""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise CourseError(f"缺少 Python 包 {pip_name}（网站离线使用的文件来自它）：请运行 pip install {pip_name}，"
                          "或重新安装课程：pip install -e \".[dev]\"。")
    return Path(list(spec.submodule_search_locations)[0])


def copy_assets(out: Path) -> None:
    """把 MathJax、reveal.js、备用中文字体和课程样式复制到 ``out/assets/``，页面只引用这里的文件。"""
    assets = out / "assets"
    mathjax = _package_dir("jupyter_server_mathjax") / "static"
    reveal = _package_dir("sphinx_revealjs") / "_static" / "revealjs"
    for source in (mathjax / "MathJax.js", reveal / "dist" / "reveal.js"):
        if not source.is_file():
            raise CourseError(f"找不到 {source}：这个包的文件不完整，请重新安装它（pip install --force-reinstall）。")
    shutil.copytree(mathjax, assets / "mathjax", dirs_exist_ok=True)
    # reveal.js 只取用到的文件：其他主题会从 Google Fonts 加载字体，white 主题的字体就在包里。
    for relative in ("LICENSE", "dist/reset.css", "dist/reveal.css", "dist/reveal.js", "dist/theme/white.css",
                     "dist/theme/fonts/source-sans-pro", "plugin/notes/notes.js"):
        source, target = reveal / relative, assets / "reveal.js" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    font = _package_dir(FALLBACK_FONT[0]) / FALLBACK_FONT[1]
    if font.is_file():  # 没有这个字体也不要紧：有中文字体的电脑用不到它
        (assets / "fonts").mkdir(exist_ok=True)
        if not (assets / "fonts" / font.name).is_file():
            shutil.copy2(font, assets / "fonts" / font.name)
    (assets / "course.css").write_text(COURSE_CSS, encoding="utf-8")


def _nav_html(chapters: list[ChapterInfo], index: int) -> str:
    """章节页面上下的导航：上一章、目录、幻灯片、下一章。"""
    def link(info: ChapterInfo, rel: str, arrow_left: str = "", arrow_right: str = "") -> str:
        label = html.escape(f"{info.number} {info.title}")
        return f'<a href="{info.page}" rel="{rel}">{arrow_left}{label}{arrow_right}</a>'

    current = chapters[index]
    prev = link(chapters[index - 1], "prev", "← ") if index > 0 else "<span></span>"
    nxt = link(chapters[index + 1], "next", arrow_right=" →") if index + 1 < len(chapters) else "<span></span>"
    middle = f'<span><a href="index.html">目录</a> · <a href="{current.slides}">幻灯片</a></span>'
    return f'<nav class="aigc-nav">{prev}{middle}{nxt}</nav>'


def _link_chapters(text: str, pages: set[str]) -> str:
    """正文里指向其他章节 notebook 的链接（``05_rnn_lstm_gru.ipynb``）改成网站里的页面。"""
    def replace(match):
        page = match.group(2) + ".html"
        return f'href="{page}{match.group(3) or ""}"' if page in pages else match.group(0)

    return re.sub(r'href="((\d\d_[A-Za-z0-9_]+)\.ipynb)(#[^"]*)?"', replace, text)


def _exporters():
    """章节页面和幻灯片的 nbconvert 导出器，模板见 :data:`PAGE_TEMPLATE`、:data:`SLIDES_TEMPLATE`。"""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter, SlidesExporter

    loader = DictLoader({"aigc_page.html.j2": PAGE_TEMPLATE, "aigc_slides.html.j2": SLIDES_TEMPLATE})
    page = HTMLExporter(template_name="lab", extra_loaders=[loader], template_file="aigc_page.html.j2",
                        language_code="zh")
    slides = SlidesExporter(extra_loaders=[loader], template_file="aigc_slides.html.j2", language_code="zh",
                            reveal_url_prefix="assets/reveal.js", reveal_theme="white", reveal_transition="slide",
                            reveal_width="1280", reveal_height="800",
                            exclude_input_prompt=True, exclude_output_prompt=True)
    return page, slides


def _write_offline(path: Path, text: str) -> None:
    """写出一个页面；页面若引用了站外的脚本或样式（模板出了问题），拒绝写出。"""
    remote = find_remote_references(text)
    if remote:
        raise CourseError(f"{path.name} 引用了站外的资源，离线时打不开：{remote[:3]}。"
                          "这是 aigc_lib/course/site.py 的问题，请报告。")
    path.write_text(text, encoding="utf-8")


INDEX_INTRO = ("每一章都是一个执行过的 notebook：点标题看完整的章节（代码、输出和图），点“幻灯片”在课堂上投影"
               "（← → 翻页，↓ 看同一节的下一页，Esc 看全部页面，S 打开演讲者视图）。网站用到的脚本、样式和公式渲染"
               "文件都在这个文件夹里，断网也能打开。主要结果和预计运行时间取自每章开头的说明，具体数字在每章执行过的输出里；"
               "“—”表示那一章没有写。")


def index_html(chapters: list[ChapterInfo], title: str = SITE_TITLE) -> str:
    """目录页：每章的编号、标题、学到什么、主要结果、各档位的预计运行时间和幻灯片链接。"""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    pages = {info.page for info in chapters}
    rows = []
    for info in chapters:
        goals = _link_chapters(markdown2html_mistune(info.goals_markdown), pages)
        runtime = "<br>".join(f"{name}：{html.escape(info.runtimes[name] or '—')}" for name in PROFILES)
        rows.append(
            f"<tr><td>{info.number}</td><td><a href=\"{info.page}\">{html.escape(info.title)}</a></td>"
            f"<td>{goals}</td><td>{html.escape(info.headline or '—')}</td><td class=\"runtime\">{runtime}</td>"
            f"<td><a href=\"{info.slides}\">幻灯片</a></td></tr>"
        )
    return f"""<!DOCTYPE html>
<html lang="zh">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="assets/course.css">
{MATHJAX_HTML}
</head>
<body class="aigc-index">
<main>
<h1>{html.escape(title)}</h1>
<p>{INDEX_INTRO}</p>
<table>
<thead><tr><th>编号</th><th>章节</th><th>你将学到</th><th>主要结果</th><th>预计运行时间</th><th>幻灯片</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</main>
</body>
</html>
"""


def _built_before_markers(out: Path) -> bool:
    """``out`` 是不是还没有标记文件时由 aigc course build 生成的网站：``assets/course.css`` 的第一行是我们写的。"""
    try:
        with open(out / "assets" / "course.css", encoding="utf-8") as css:
            return css.readline() == COURSE_CSS.splitlines(keepends=True)[0]
    except (OSError, UnicodeDecodeError):
        return False


def build_site(src: str | Path = "chapters", out: str | Path = "site", only=None) -> list[Path]:
    """把 ``src`` 里（执行过的）章节生成一个离线网站，返回写出的 HTML 文件。

    ``out/index.html`` 是目录；每章一页 ``NN_name.html``（带上一章、下一章的链接）和一套幻灯片
    ``NN_name.slides.html``；``out/assets/`` 里是 MathJax、reveal.js 和样式。notebook 本身不会被改动。
    ``out`` 里已有这些文件（或 ``assets/``）、却不是这个命令生成的时，什么都不写就报错（见 ``claim_output``）。
    """
    import nbformat

    paths = select_chapters(find_chapters(src), only)
    names = ["index.html", "assets"] + [path.stem + suffix for path in paths for suffix in (".html", ".slides.html")]
    out = claim_output(out, names, "aigc course build", SITE_MARKER, ours=_built_before_markers)
    copy_assets(out)
    notebooks = [nbformat.read(path, as_version=4) for path in paths]
    chapters = [chapter_info(path, nb) for path, nb in zip(paths, notebooks)]
    pages = {info.page for info in chapters}
    page_exporter, slides_exporter = _exporters()
    written = []
    for index, (info, nb) in enumerate(zip(chapters, notebooks)):
        aigc = {"mathjax_html": MATHJAX_HTML, "nav_html": _nav_html(chapters, index), "page": info.page}
        resources = {"metadata": {"name": f"{info.number} {info.title}", "path": str(info.path.parent)},
                     "aigc": aigc}
        body, _ = page_exporter.from_notebook_node(nb, resources=dict(resources))
        _write_offline(out / info.page, _link_chapters(body, pages))
        slides_nb = copy.deepcopy(nb)  # 幻灯片的分页信息只加在副本上
        assign_default_slide_types(slides_nb)
        body, _ = slides_exporter.from_notebook_node(slides_nb, resources=dict(resources))
        _write_offline(out / info.slides, _link_chapters(body, pages))
        written += [out / info.page, out / info.slides]
    _write_offline(out / "index.html", index_html(chapters))
    return [out / "index.html", *written]
