"""画图与进度条：中文标签开箱即用，进度条在 notebook、终端和 CI 里都得体。

导入 ``aigc_lib`` 时会自动调用 :func:`use_chinese_font`，所以 notebook 里直接写
``plt.title("训练损失")`` 就能正确显示中文，不需要在本机安装任何系统字体：字体文件来自
pip 安装的 ``mplfonts`` 包（Noto Sans CJK SC，SIL 开源字体许可证）。

本模块只依赖 matplotlib 和 tqdm，不导入 ``aigc_lib`` 的其他部分，可以单独复制。
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from importlib import resources

import matplotlib
from matplotlib import font_manager

# 按顺序寻找的中文字体：先用随 pip 安装的字体，找不到时再试常见的系统字体。
_PACKAGED_FONT = ("mplfonts", "fonts/NotoSansCJKsc-Regular.otf")
_SYSTEM_FALLBACKS = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Heiti SC",
)


@lru_cache(maxsize=1)
def chinese_font_name() -> str | None:
    """注册并返回一个可用的中文字体名称；一个都找不到时返回 ``None``。

    优先使用 ``mplfonts`` 包自带的 Noto Sans CJK SC（对所有人都一样，图才可复现），
    否则退回到系统里已经安装的常见中文字体。
    """
    package, relative = _PACKAGED_FONT
    try:
        path = resources.files(package).joinpath(relative)
        if path.is_file():
            font_manager.fontManager.addfont(str(path))
            return font_manager.FontProperties(fname=str(path)).get_name()
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        pass
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in _SYSTEM_FALLBACKS:
        if name in installed:
            return name
    return None


def use_chinese_font() -> str | None:
    """让 matplotlib 正确显示中文，返回所用中文字体的名称。

    中文字体排在字体列表的第一位：Noto Sans CJK SC 本身就有拉丁字母、数字、希腊字母和
    负号 "−"，所以不需要关闭 ``axes.unicode_minus``（很多教程关掉它，负号就变成了短横线）。
    DejaVu Sans 排第二，是逐字回退（matplotlib >= 3.6）的后备：中文字体没有的字符由它来画。

    为什么中文字体必须排第一：带公式的标签（如 ``"正确类别的概率 $p_y$"``）由 mathtext
    排版，它的非公式部分只用列表里的**第一个**字体，不做逐字回退。第一个若是 DejaVu Sans，
    这类标签里的汉字就全成了方块（matplotlib 只在日志里说一句 "does not have a glyph"）。
    """
    name = chinese_font_name()
    if name is None:
        import warnings

        warnings.warn(
            "没有找到中文字体，图中的汉字会显示成方块。请运行 pip install mplfonts，"
            "或在系统中安装 Noto Sans CJK SC 字体。",
            stacklevel=2,
        )
        return None
    # 直接列出字体名，逐字回退才生效（写 "sans-serif" 只会用到那一族里的第一个字体）。
    matplotlib.rcParams["font.family"] = [name, "DejaVu Sans"]
    matplotlib.rcParams["axes.unicode_minus"] = True
    matplotlib.rcParams["figure.dpi"] = 100
    matplotlib.rcParams["savefig.dpi"] = 150
    matplotlib.rcParams["savefig.bbox"] = "tight"
    matplotlib.rcParams["axes.grid"] = True
    matplotlib.rcParams["grid.alpha"] = 0.3
    matplotlib.rcParams["axes.spines.top"] = False
    matplotlib.rcParams["axes.spines.right"] = False
    return name


# ----------------------------------------------------------------------------------------------
# 进度条
# ----------------------------------------------------------------------------------------------

def _in_notebook() -> bool:
    """当前代码是否运行在 Jupyter 内核里（而不是终端里的 python / ipython）。"""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def progress_mode() -> str:
    """进度条的显示方式：``off`` | ``text`` | ``widget``。

    由环境变量 ``AIGC_PROGRESS`` 决定（``auto`` | ``text`` | ``off``，默认 ``auto``）：
    ``auto`` 在 CI（设置了 ``CI`` 环境变量）里关闭进度条，免得日志里全是刷新行；在
    JupyterLab 里显示为控件；在终端里显示为文字。
    """
    setting = os.environ.get("AIGC_PROGRESS", "auto").strip().lower()
    if setting not in {"auto", "text", "off"}:
        raise ValueError(
            f"环境变量 AIGC_PROGRESS={setting!r} 无效：只能是 auto | text | off。"
        )
    if setting != "auto":
        return setting
    if os.environ.get("CI"):
        return "off"
    return "widget" if _in_notebook() else "text"


def progress(iterable=None, **kwargs):
    """带进度条地遍历 ``iterable``，参数与 ``tqdm`` 相同（``desc``、``total``、``leave`` ...）。

    >>> for batch in progress(range(3), desc="训练"):
    ...     pass

    返回的对象就是 tqdm 进度条，可以调用 ``set_postfix(loss=...)``。在 CI 中它什么都不打印。
    """
    mode = progress_mode()
    if mode == "widget":
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm

        kwargs.setdefault("mininterval", 1.0)  # 文字模式少刷新几次，日志和 notebook 更干净
        kwargs.setdefault("dynamic_ncols", True)
    if mode == "off":
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


# ----------------------------------------------------------------------------------------------
# 各章共用的几种图
# ----------------------------------------------------------------------------------------------

def text_color_for(background) -> str:
    """在颜色为 ``background`` 的格子上写字，该用白字还是黑字：返回 ``"white"`` 或 ``"black"``。

    ``background`` 是 matplotlib 认得的任何颜色：``(r, g, b)`` 或 ``(r, g, b, a)``（0~1，例如
    ``image.cmap(image.norm(value))`` 的返回值）、``"#08306b"``、``"navy"`` 都行。

    按 WCAG 2 的相对亮度 :math:`L = 0.2126 R + 0.7152 G + 0.0722 B`（先把 sRGB 还原成线性光强）
    算出白字和黑字各自与背景的对比度 :math:`(L_1 + 0.05) / (L_2 + 0.05)`，取对比度高的那个。
    只看数值大小不行：``Blues`` 里小的数是浅色，``viridis`` 里小的数是深色。

    >>> text_color_for((0.03, 0.19, 0.42)), text_color_for("#f7fbff"), text_color_for("yellow")
    ('white', 'black', 'black')
    """
    from matplotlib.colors import to_rgba

    def linear(c):  # sRGB 的伽马校正还原成线性光强
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b, _ = to_rgba(background)
    luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    white_contrast = 1.05 / (luminance + 0.05)      # 白色的相对亮度是 1
    black_contrast = (luminance + 0.05) / 0.05      # 黑色的相对亮度是 0
    return "white" if white_contrast > black_contrast else "black"


def plot_heatmap(matrix, x_labels=None, y_labels=None, *, title=None, xlabel=None, ylabel=None,
                 annotate=None, fmt="{:.2f}", cmap="viridis", ax=None):
    """画一个带坐标标签的热力图，返回 ``ax``。

    注意力权重（行 = 查询词，列 = 被关注的词）、CRF 转移矩阵、混淆矩阵都用它画。
    ``matrix`` 可以是嵌套列表、NumPy 数组或张量，形状 ``(rows, cols)``。
    ``annotate=None`` 时格子不多（≤ 15×15）才在格子里写数值；字的颜色按格子的亮度选
    （:func:`text_color_for`），浅色格子写黑字、深色格子写白字，换哪个 ``cmap`` 都看得清。
    """
    import numpy as np
    import matplotlib.pyplot as plt

    data = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"热力图需要二维矩阵，收到的形状是 {data.shape}。")
    if ax is None:
        size = (max(4.0, 0.45 * data.shape[1] + 2), max(3.0, 0.4 * data.shape[0] + 1.5))
        _, ax = plt.subplots(figsize=size)
    image = ax.imshow(data, cmap=cmap, aspect="auto")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.grid(False)
    if x_labels is not None:
        ax.set_xticks(range(len(x_labels)), labels=list(x_labels), rotation=90 if len(x_labels) > 8 else 0)
    if y_labels is not None:
        ax.set_yticks(range(len(y_labels)), labels=list(y_labels))
    if annotate is None:
        annotate = data.shape[0] <= 15 and data.shape[1] <= 15
    if annotate:
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                background = image.cmap(image.norm(data[i, j]))  # 这个格子实际画出来的颜色
                ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=8,
                        color=text_color_for(background))
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    return ax


def plot_confusion_matrix(cm, labels, *, normalize=False, title="混淆矩阵", ax=None):
    """画混淆矩阵（行 = 真实类别，列 = 预测类别），``labels`` 可以是中文类名。

    ``normalize=True`` 时每行除以该类样本数，格子里是召回率。
    """
    import numpy as np

    data = np.asarray(cm, dtype=float)
    if normalize:
        data = data / np.clip(data.sum(axis=1, keepdims=True), 1, None)
    fmt = "{:.2f}" if normalize else "{:.0f}"
    return plot_heatmap(data, labels, labels, title=title, xlabel="预测类别", ylabel="真实类别",
                        fmt=fmt, cmap="Blues", annotate=True, ax=ax)


def plot_embedding_map(points, words, *, title="词向量二维投影", ax=None, highlight=None):
    """把二维坐标 ``points``（形状 ``(N, 2)``，例如 PCA 的结果）和对应的词画成散点图。

    ``highlight`` 是要用红色标出的词的集合。挨得很近的点，标签会自动错开（见 :func:`place_labels`）。
    """
    import numpy as np
    import matplotlib.pyplot as plt

    xy = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(words):
        raise ValueError(f"points 应为 (N, 2) 且 N 等于词数 {len(words)}，收到形状 {xy.shape}。")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    highlight = set(highlight or ())
    ax.scatter(xy[:, 0], xy[:, 1], s=12, alpha=0.6)
    ax.set_title(title)
    place_labels(ax, xy, words, colors=["crimson" if w in highlight else "black" for w in words])
    return ax


# 标签相对于点的候选位置（单位：磅），依次尝试：右上、右下、左上、左下，再往外一圈
_LABEL_OFFSETS = [(3, 3), (3, -11), (-3, 3), (-3, -11), (3, 12), (3, -20), (-3, 12), (-3, -20),
                  (10, -4), (-10, -4), (3, 21), (3, -29)]


def place_labels(ax, xy, labels, *, colors=None, fontsize=9):
    """给散点 ``xy``（``(N, 2)``）逐个写上标签，尽量不让标签互相重叠。

    贪心的做法：每个标签依次试几个相对位置（``_LABEL_OFFSETS``），取第一个不与已经放好的标签
    （和其他点）重叠的位置；都重叠时才退回第一个位置。标签离开点较远时画一条细线连回去。
    重叠按屏幕上的像素框判断，所以要在坐标轴范围定下来之后调用（先 scatter 再调用）。返回文字对象的列表。
    """
    from matplotlib.text import Text

    ax.autoscale_view()  # 先把坐标轴范围定下来，像素位置才准
    renderer = ax.figure.canvas.get_renderer()
    colors = colors or ["black"] * len(labels)
    dots = [ax.transData.transform(point) for point in xy]  # 每个点在屏幕上的位置（像素）
    placed, texts = [], []
    for (x, y), label, color in zip(xy, labels, colors):
        for dx, dy in _LABEL_OFFSETS:
            far = abs(dx) > 3 or dy > 3 or dy < -11
            text = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               color=color, ha="left" if dx >= 0 else "right",
                               arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.6"} if far else None)
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer).expanded(1.02, 1.05)  # 只算文字，不算连线
            hits_dot = any(box.contains(px, py) for px, py in dots)
            if not any(box.overlaps(other) for other in placed) and not hits_dot:
                break
            text.remove()
        else:
            text = ax.annotate(label, (x, y), xytext=_LABEL_OFFSETS[0], textcoords="offset points",
                               fontsize=fontsize, color=color)
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer)
        placed.append(box)
        texts.append(text)
    return texts


use_chinese_font()
