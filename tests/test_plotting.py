"""plotting：中文字体开箱即用、无缺字警告、负号正确；进度条在各环境下的行为。"""

import logging
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from aigc_lib import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _save_with_warnings_as_errors(fig, path):
    """保存图片；缺字时 matplotlib 可能发 UserWarning（普通文字），也可能只写日志（mathtext）：两种都算失败。"""
    messages = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("matplotlib")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fig.savefig(path)
    finally:
        logger.removeHandler(handler)
    assert not messages, f"matplotlib 报告了问题：{messages[:3]}"


def test_packaged_chinese_font_is_registered_and_first():
    name = plotting.chinese_font_name()
    assert name is not None
    families = matplotlib.rcParams["font.family"]
    assert families == [name, "DejaVu Sans"]
    assert matplotlib.rcParams["axes.unicode_minus"] is True


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_figure_with_chinese_saves_without_missing_glyph_warning(tmp_path, fmt):
    fig, ax = plt.subplots()
    ax.plot([-2, -1, 0, 1], [1, -3, 2, 0], label="验证损失")
    ax.set_title("训练曲线：损失随轮次下降（负数 −3）")
    ax.set_xlabel("轮次")
    ax.set_ylabel("损失 loss")
    ax.legend()
    out = tmp_path / f"figure.{fmt}"
    _save_with_warnings_as_errors(fig, out)
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_chinese_next_to_a_formula_saves_without_missing_glyph(tmp_path, fmt):
    """标签里有 $...$ 公式时整段由 mathtext 排版：其中的汉字也要能画出来。"""
    fig, ax = plt.subplots()
    ax.plot([0.1, 0.5, 0.9], [2.3, 0.7, -0.1], label=r"$\gamma = 2$（交叉熵）")
    ax.set_xlabel("正确类别的概率 $p_y$")
    ax.set_ylabel(r"损失 $-(1-p_y)^\gamma \log p_y$")
    ax.set_title(r"温度 $T$ 越高，分布越平：$\mathrm{softmax}(z/T)$")
    ax.legend()
    _save_with_warnings_as_errors(fig, tmp_path / f"formula.{fmt}")


def test_control_check_mathtext_tofu_is_detectable(tmp_path):
    """第一个字体没有汉字时，公式标签里的汉字确实会被报告——证明上一个测试能够失败。"""
    fig, ax = plt.subplots()
    ax.set_xlabel("正确类别的概率 $p_y$", family="DejaVu Sans")
    with pytest.raises(AssertionError, match="does not have a glyph"):
        _save_with_warnings_as_errors(fig, tmp_path / "tofu.png")


def test_control_check_missing_glyph_warning_is_detectable(tmp_path):
    """没有中文字体时确实会有警告——证明上一个测试能够失败。"""
    fig, ax = plt.subplots()
    ax.set_title("中文", family="DejaVu Sans")
    with pytest.warns(UserWarning, match="missing from font"):
        fig.savefig(tmp_path / "tofu.png")


def test_chinese_glyphs_are_drawn_not_tofu(tmp_path):
    """同一个汉字用中文字体画出的像素与 DejaVu 的“方块”不同。"""
    import numpy as np

    def render(**font):
        fig = plt.figure(figsize=(1, 1), dpi=50)
        fig.text(0.1, 0.3, "龍", fontsize=30, **font)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba()).copy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tofu = render(family="DejaVu Sans")
    chinese = render()
    assert (chinese != 255).any() and not np.array_equal(chinese, tofu)


def test_shared_plots_accept_chinese_labels(tmp_path):
    ax = plotting.plot_heatmap([[0.2, 0.8], [0.6, 0.4]], ["我", "爱"], ["北京", "天安门"], title="注意力")
    _save_with_warnings_as_errors(ax.figure, tmp_path / "heat.png")
    ax = plotting.plot_confusion_matrix([[5, 1], [2, 7]], ["负面", "正面"], normalize=True)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.83", "0.17", "0.22", "0.78"]
    _save_with_warnings_as_errors(ax.figure, tmp_path / "cm.png")
    ax = plotting.plot_embedding_map([[0, 0], [1, 1], [2, 0]], ["北京", "上海", "经济"], highlight={"北京"})
    _save_with_warnings_as_errors(ax.figure, tmp_path / "map.png")
    with pytest.raises(ValueError, match="二维"):
        plotting.plot_heatmap([1, 2, 3])
    with pytest.raises(ValueError, match="N 等于词数"):
        plotting.plot_embedding_map([[0, 0]], ["a", "b"])


def test_progress_modes(monkeypatch, capsys):
    monkeypatch.delenv("AIGC_PROGRESS", raising=False)
    monkeypatch.setenv("CI", "true")
    assert plotting.progress_mode() == "off"
    assert list(plotting.progress(range(5), desc="训练")) == list(range(5))
    assert capsys.readouterr().err == ""

    monkeypatch.delenv("CI")
    assert plotting.progress_mode() == "text"  # pytest 不在 Jupyter 内核里
    monkeypatch.setenv("AIGC_PROGRESS", "text")
    bar = plotting.progress(range(3), desc="训练", mininterval=0)
    assert list(bar) == [0, 1, 2]
    assert "训练" in capsys.readouterr().err

    monkeypatch.setenv("AIGC_PROGRESS", "off")
    assert plotting.progress(range(2)).disable
    monkeypatch.setenv("AIGC_PROGRESS", "loud")
    with pytest.raises(ValueError, match="AIGC_PROGRESS"):
        plotting.progress_mode()


def test_embedding_map_labels_do_not_overlap():
    """挨得很近的点（第 04 章的“上海 / 天津”“法国 / 俄罗斯”那样）标签要错开，而不是叠在一起。"""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.text import Text

    rng = np.random.default_rng(0)
    for trial in range(5):
        centers = rng.uniform(-1, 1, size=(4, 2))
        points = np.concatenate([c + rng.normal(scale=0.02, size=(4, 2)) for c in centers])  # 4 簇，每簇 4 个点
        words = [f"词语{i}" for i in range(len(points))]
        fig, ax = plt.subplots(figsize=(7, 6))
        plotting.plot_embedding_map(points, words, ax=ax)
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # 只算文字，不算连回点的细线
        assert [t.get_text() for t in ax.texts] == words
        overlaps = [(a, b) for a in range(len(boxes)) for b in range(a + 1, len(boxes)) if boxes[a].overlaps(boxes[b])]
        assert not overlaps, f"第 {trial} 次：标签重叠 {overlaps}"
        plt.close(fig)


# ---- 热力图里字的颜色：按格子亮度选白字或黑字 ----------------------------------------------

def _contrast_ratios(rgb):
    """参照实现（WCAG 2 的定义逐步写出）：(白字对比度, 黑字对比度)。"""
    channels = []
    for c in rgb:
        channels.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    luminance = sum(w * c for w, c in zip((0.2126, 0.7152, 0.0722), channels))
    on_white = (1.0 + 0.05) / (luminance + 0.05)
    on_black = (luminance + 0.05) / (0.0 + 0.05)
    return on_white, on_black


@pytest.mark.parametrize("cmap, value, expected", [
    ("Blues", 0.0, "black"), ("Blues", 0.15, "black"), ("Blues", 0.9, "white"), ("Blues", 1.0, "white"),
    ("viridis", 0.0, "white"), ("viridis", 0.2, "white"), ("viridis", 0.85, "black"), ("viridis", 1.0, "black"),
    ("Greys", 0.0, "black"), ("Greys", 1.0, "white"), ("magma", 0.05, "white"), ("magma", 0.95, "black"),
])
def test_text_color_for_colormap_values(cmap, value, expected):
    background = matplotlib.colormaps[cmap](value)
    assert plotting.text_color_for(background) == expected


def test_text_color_for_matches_the_higher_contrast_on_random_colors():
    import numpy as np

    rng = np.random.default_rng(0)
    colors = rng.random((500, 3))
    for rgb in colors:
        on_white, on_black = _contrast_ratios(rgb)
        if abs(on_white - on_black) < 1e-9:
            continue
        expected = "white" if on_white > on_black else "black"
        assert plotting.text_color_for(tuple(rgb)) == expected, rgb
        assert plotting.text_color_for(tuple(rgb) + (0.5,)) == expected  # 第四个数（透明度）不影响
    # 颜色名与十六进制字符串也行；纯红配黑字（对比度 5.25 对 4.0），纯蓝配白字
    assert [plotting.text_color_for(c) for c in ("red", "blue", "#ffffff", "#000000", "navy", "yellow")] == \
        ["black", "white", "black", "white", "white", "black"]


def test_text_color_for_switches_once_along_a_gray_ramp():
    import numpy as np

    colors = [plotting.text_color_for((v, v, v)) for v in np.linspace(0, 1, 201)]
    switch = colors.index("black")
    assert colors[:switch] == ["white"] * switch and colors[switch:] == ["black"] * (201 - switch)
    # 灰度的切换点在相对亮度约 0.179 处，即 sRGB 值约 0.46
    assert 0.45 < switch / 200 < 0.47


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("cm", [[[775, 116], [177, 645]], [[65, 0, 5], [6, 14, 0], [8, 0, 2]], [[3, 40], [0, 1]]])
def test_confusion_matrix_annotations_contrast_with_their_cells(cm, normalize):
    # 每个格子的字色都要与这个格子实际画出的颜色对比度更高；旧版按“小于中间值写白字”，Blues 浅色格上的白字看不见
    ax = plotting.plot_confusion_matrix(cm, [str(i) for i in range(len(cm))], normalize=normalize)
    image = ax.images[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(texts) == len(cm) * len(cm[0])
    data = image.get_array()
    for (i, j), text in texts.items():
        rgb = image.cmap(image.norm(data[i, j]))[:3]
        on_white, on_black = _contrast_ratios(rgb)
        expected = "white" if on_white > on_black else "black"
        assert matplotlib.colors.same_color(text.get_color(), expected), (cm, i, j, text.get_text())
