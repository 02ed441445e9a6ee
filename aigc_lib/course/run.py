"""``aigc course run``：按顺序执行所有章节，每章计时，最后打印汇总表；生成离线网站见 :mod:`aigc_lib.course.site`。

老师上课前在 GPU 机器上刷新 notebook 里提交的输出，再生成一个不联网也能打开的网站和幻灯片::

    aigc course run --profile gpu --inplace      # 逐章执行 chapters/*.ipynb，结果写回原文件
    aigc course build --out site/                # site/index.html、每章一页、每章一套幻灯片

执行用 nbclient，和 JupyterLab 一样启动 python3 内核，工作目录是章节所在的文件夹（notebook 里的相对路径
照常可用），环境变量 ``AIGC_PROFILE`` 决定规模，``AIGC_PROGRESS=off`` 让保存的输出里没有进度条。某个单元格
出错就停下，说清是哪一章、哪个单元格、什么错误。
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..console import display_width, pad

PROFILES = ("smoke", "cpu", "gpu")
CHAPTER_NAME = re.compile(r"(\d\d)_[A-Za-z0-9_]+\.ipynb")
RUN_MARKER = ".aigc-course-run"  # aigc course run --out 留在输出目录里的标记文件，见 claim_output


class CourseError(Exception):
    """用户能自己改正的问题（找不到目录、章节编号不对、缺少依赖包）；``aigc`` 只打印这一行说明。"""


# ----------------------------------------------------------------------------------------------
# 找到章节
# ----------------------------------------------------------------------------------------------

def find_chapters(folder: str | Path) -> list[Path]:
    """``folder`` 里按编号排好的章节 notebook（``NN_name.ipynb``）。"""
    folder = Path(folder)
    if not folder.is_dir():
        raise CourseError(f"找不到章节目录 {folder}/：请在课程仓库的根目录运行，"
                          "或用 --chapters（course run）/ --src（course build）指定章节所在的目录。")
    chapters = sorted(path for path in folder.glob("*.ipynb") if CHAPTER_NAME.fullmatch(path.name))
    if not chapters:
        raise CourseError(f"{folder}/ 里没有章节：章节文件名应当形如 00_setup.ipynb。")
    return chapters


def chapter_number(path: Path) -> str:
    """``03_sequence_labeling.ipynb`` -> ``"03"``。"""
    return path.name[:2]


def select_chapters(chapters: list[Path], only: str | list[str] | None) -> list[Path]:
    """按 ``--only 03,05`` 挑出章节（保持编号顺序）；``None`` 表示全部。编号不存在时报错并列出可选的编号。"""
    if not only:
        return list(chapters)
    wanted = only.split(",") if isinstance(only, str) else list(only)
    available = [chapter_number(path) for path in chapters]
    numbers = set()
    for item in (item.strip() for item in wanted):
        if not item:
            continue
        number = f"{int(item):02d}" if item.isdigit() else item
        if number not in available:
            raise CourseError(f"没有第 {item} 章。可选的章节编号：{', '.join(available)}"
                              f"（例如 --only {available[0]}{',' + available[1] if len(available) > 1 else ''}）。")
        numbers.add(number)
    if not numbers:
        raise CourseError(f"--only 里没有章节编号。可选的章节编号：{', '.join(available)}。")
    return [path for path in chapters if chapter_number(path) in numbers]


# ----------------------------------------------------------------------------------------------
# 输出目录：不覆盖别人的文件
# ----------------------------------------------------------------------------------------------

def claim_output(out: str | Path, names, command: str, marker: str, ours=None) -> Path:
    """准备输出目录 ``out``（必要时建好它）并留下标记文件 ``marker``，返回它的 ``Path``。

    目录里有 ``marker`` 说明是 ``command`` 以前写的，照常覆盖。没有标记时，``names``（这次要写的文件，
    相对于 ``out``）里只要有一个已经存在，就拒绝并说明是哪个文件：那是别人的文件，什么都不删、不改。
    ``ours(out)`` 返回 True 时也当作自己写的（给加标记文件之前生成的旧目录用）。
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CourseError(f"--out {path} 是一个已有的文件，不是目录：请换一个目录名。")
    if path.is_dir() and not (path / marker).exists() and not (ours and ours(path)):
        for name in names:
            if os.path.lexists(path / name):
                raise CourseError(f"{path / name} 已经存在，而 {path}/ 不是 {command} 写出的目录，覆盖会丢掉这个文件："
                                  f"请换一个空的或新的目录（--out），或者确认不要它之后自己删掉它。")
    path.mkdir(parents=True, exist_ok=True)
    (path / marker).write_text(f"这个目录由 {command} 写出；再次运行时会覆盖它写过的文件。\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# aigc course run：逐章执行
# ----------------------------------------------------------------------------------------------

@dataclass
class ChapterRun:
    """一章的执行结果：``status`` 是 成功 / 出错 / 未运行。"""

    name: str
    status: str = "未运行"
    seconds: float | None = None


@dataclass
class CellFailure:
    """出错的单元格：在哪一章、第几个单元格、第一行代码、错误名称、错误信息和调用栈。"""

    notebook: Path
    cell_index: int
    first_line: str
    ename: str
    evalue: str
    traceback: list[str] = field(default_factory=list)


class ChapterFailed(Exception):
    """某个单元格出错，整门课停在这里。``notebook`` 是执行到出错为止的 notebook（含错误输出）。"""

    def __init__(self, failure: CellFailure, notebook):
        super().__init__(f"{failure.notebook.name}：单元格 {failure.cell_index} 出错（{failure.ename}）")
        self.failure = failure
        self.notebook = notebook


def clear_outputs(nb) -> None:
    """清掉所有输出和执行编号（以及 nbclient 记下的执行时间），重新执行后编号就是 1..n。"""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)


def execute_notebook(path: Path, profile: str, on_cell=None):
    """在 ``path`` 所在的目录里启动 python3 内核，从头到尾执行这个 notebook，返回执行后的 notebook。

    ``on_cell(index, total)`` 在每个单元格开始前调用（用来刷新进度条）。出错时抛出 :class:`ChapterFailed`：
    ``error.failure`` 说明是哪个单元格，``error.notebook`` 是执行到出错为止的 notebook。
    """
    import nbformat
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    clear_outputs(nb)
    state = {"index": 0}

    def cell_started(cell, cell_index):
        state["index"] = cell_index
        if on_cell is not None:
            on_cell(cell_index, len(nb.cells))

    # 内核只在本机、只跟这个进程通信；ipykernel 7 每次启动都在终端警告"TCP 没有加密"，会打乱进度条，
    # 所以只让内核报告错误（单元格里的输出和报错照常记进 notebook）
    client = NotebookClient(nb, kernel_name="python3", timeout=None, record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}}, on_cell_start=cell_started,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    env = dict(os.environ, AIGC_PROFILE=profile, AIGC_PROGRESS="off")
    try:
        client.execute(env=env)
    except NoSuchKernel as error:
        raise CourseError("找不到名为 python3 的 Jupyter 内核：请运行 pip install ipykernel。") from error
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
        raise ChapterFailed(_describe_failure(path, nb, state["index"], error), nb) from error
    return nb


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _describe_failure(path: Path, nb, index: int, error: Exception) -> CellFailure:
    """从出错单元格的 error 输出里取出错误名称、信息和调用栈（去掉终端颜色码）。"""
    cell = nb.cells[index]
    lines = [line for line in cell.source.splitlines() if line.strip()]
    # 超时、内核崩溃时没有 error 输出，就用异常本身
    ename = getattr(error, "ename", None) or type(error).__name__
    evalue = getattr(error, "evalue", None) or (str(error).strip().splitlines() or [""])[-1]
    traceback: list[str] = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            ename, evalue = output.get("ename", ename), output.get("evalue", evalue)
            traceback = _ANSI.sub("", "\n".join(output.get("traceback", []))).splitlines()
    return CellFailure(path, index, lines[0] if lines else "", ename, evalue, traceback)


def format_failure(failure: CellFailure, tail: int = 12) -> str:
    """出错时给人看的说明（中文）：哪一章、哪个单元格、什么错误、调用栈的最后几行、下一步怎么做。"""
    number = chapter_number(failure.notebook)
    lines = [
        f"运行停止：{failure.notebook} 出错了。",
        f"  出错的单元格：第 {failure.cell_index + 1} 个（索引 {failure.cell_index}，从 0 数起），"
        f"第一行：{failure.first_line}",
        f"  错误类型：{failure.ename}",
        f"  错误信息：{failure.evalue}",
    ]
    if failure.traceback:
        lines.append(f"  调用栈的最后 {min(tail, len(failure.traceback))} 行：")
        lines += ["    " + line for line in failure.traceback[-tail:]]
    lines.append(f"在 JupyterLab 里打开这一章、修好这个单元格后，可以只重跑这一章：aigc course run --only {number}")
    return "\n".join(lines)


def summary_table(results: list[ChapterRun]) -> str:
    """执行结束后的汇总表：章节、状态、用时（秒），最后一行是合计。"""
    width = max([display_width("章节")] + [display_width(r.name) for r in results]) + 2
    rows = [pad("章节", width) + pad("状态", 8) + "用时（秒）"]
    for result in results:
        seconds = "-" if result.seconds is None else f"{result.seconds:.1f}"
        rows.append(pad(result.name, width) + pad(result.status, 8) + f"{seconds:>9}")
    total = sum(r.seconds or 0.0 for r in results)
    rows.append(pad("合计", width) + pad("", 8) + f"{total:>9.1f}")
    return "\n".join(rows)


def run_course(chapters_dir: str | Path = "chapters", profile: str | None = None, only=None,
               inplace: bool = False, out: str | Path | None = None) -> int:
    """按编号顺序执行章节，打印每章用时和汇总表。全部成功返回 0；某个单元格出错时停下、说明原因，返回 1。

    ``inplace=True`` 把执行结果写回原 notebook（刷新提交的输出）；否则写进 ``out``（默认
    ``runs/course/<profile>/``）。出错的那一章不会写回原文件；写到 ``out`` 时会保存下来，方便打开查看。
    ``out`` 里已有同名、却不是这个命令写的 notebook 时，什么都不运行就报错（见 :func:`claim_output`）。
    """
    import nbformat

    from ..plotting import progress
    from ..core.runtime import profile as current_profile

    try:
        profile = profile or current_profile()
    except ValueError as error:  # 环境变量 AIGC_PROFILE 写错了
        raise CourseError(str(error)) from error
    if profile not in PROFILES:
        raise CourseError(f"运行档位 {profile!r} 无效：只能是 {' | '.join(PROFILES)}。")
    if inplace and out is not None:
        raise CourseError("--inplace 和 --out 只能选一个：--inplace 写回原文件，--out 写到另一个目录。")
    chapters = select_chapters(find_chapters(chapters_dir), only)
    target = None if inplace else Path(out) if out is not None else Path("runs") / "course" / profile
    if target is not None:  # 默认的 runs/course/<档位>/ 本来就归这个命令用，只检查用户用 --out 指定的目录
        claim_output(target, [] if out is None else [path.name for path in chapters], "aigc course run", RUN_MARKER)

    results = [ChapterRun(path.name) for path in chapters]
    where = "写回原文件" if inplace else f"写到 {target}/"
    print(f"用 {profile} 档位执行 {len(chapters)} 章（{chapters[0].parent}/），结果{where}。")
    bar = progress(total=len(chapters), desc="运行课程", unit="章")
    failure = None
    try:
        for path, result in zip(chapters, results):
            def show_cell(index, total, name=path.name):
                bar.set_postfix_str(f"{name} 单元格 {index + 1}/{total}", refresh=False)
                bar.update(0)  # 按 tqdm 的最短间隔刷新，日志里不会每个单元格一行

            start = time.perf_counter()
            try:
                nb = execute_notebook(path, profile, on_cell=show_cell)
            except ChapterFailed as error:
                result.status, result.seconds = "出错", time.perf_counter() - start
                failure = error.failure
                if target is not None:
                    nbformat.write(error.notebook, target / path.name)
                break
            result.status, result.seconds = "成功", time.perf_counter() - start
            nbformat.write(nb, path if inplace else target / path.name)
            bar.update(1)
            bar.write(f"{path.name}：完成，用时 {result.seconds:.1f} 秒")
    finally:
        bar.close()

    print()
    print(summary_table(results))
    if failure is not None:
        print(file=sys.stderr)
        print(format_failure(failure), file=sys.stderr)
        if target is not None:
            print(f"执行到出错为止的 notebook 保存在 {target / failure.notebook.name}。", file=sys.stderr)
        else:
            print("出错的这一章没有写回原文件；前面已经成功的章节已经更新。", file=sys.stderr)
        return 1
    return 0
