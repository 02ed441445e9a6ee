"""运行目录（``aigc train --out``）的保护：训练之前先检查，不悄悄覆盖别的训练，不让两次训练同时写。

:func:`claim` 在准备数据之前调用，检查三件事：

1. **目录能写**：``--out`` 不是空字符串、不是一个已有的文件，目录建得起来、里面写得进文件
   （``/proc/x``、只读的盘会在这里报错，而不是训练完一轮才报错）。
2. **没有别的训练正在写它**：目录里的锁文件 ``.aigc.lock`` 由 `filelock <https://py-filelock.readthedocs.io>`_
   加锁，锁在进程结束（哪怕被 kill）时由操作系统自动释放，所以死掉的进程留下的锁不会挡路；
   正在运行的那次训练的进程号写在 ``.aigc.pid`` 里，报错时说出来。
3. **不覆盖另一次训练**：目录里已经有 ``best.pt``、``last.pt``、``history.json`` 或 ``summary.json`` 时
   拒绝，除非给了 ``overwrite=True``（命令行 ``--overwrite``）。覆盖时先把旧的这几个文件挪进
   ``.aigc-old/``，目录里就不会出现一半是旧训练、一半是新训练的文件；新的训练写出了自己的文件，
   才真正删掉旧的。新的训练还没写出任何文件就出了错或被 Ctrl-C 打断（例如数据准备时参数不合适），
   旧的文件原样放回去：``--overwrite`` 加错了地方，也不会白白丢掉一次训练。

JSON 文件用 :func:`write_json` 写：先写临时文件再改名（``os.replace`` 是原子的），中途被打断也不会留下
写了一半的文件。
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import TaskError

RUN_FILES = ("best.pt", "last.pt", "history.json", "summary.json")
LOCK_NAME, PID_NAME = ".aigc.lock", ".aigc.pid"
OLD_NAME = ".aigc-old"  # --overwrite 时旧的训练结果先放在这里，见模块说明第 3 条


def check_out(out: str | Path) -> Path:
    """检查 ``out`` 能用作运行目录（必要时建好它），返回 ``Path``；不行时抛 TaskError（中文，说怎么改）。"""
    if not str(out).strip():
        raise TaskError("--out 不能是空的：请给一个目录，例如 --out runs/gru。")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise TaskError(f"--out {path} 是一个已有的文件，不是目录：请换一个目录名。")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # 真的写一次：权限、只读的盘、/proc 这类地方都在这里发现
            pass
    except OSError as error:
        raise TaskError(f"无法在 --out {path} 里写文件（{error.strerror or error}）：请换一个有写权限的目录。") from None
    return path


def existing_run(path: Path) -> str | None:
    """目录里已有的训练结果的简短描述（没有时返回 None）。"""
    found = [name for name in RUN_FILES if (path / name).exists()]
    if not found:
        return None
    try:
        summary = json.loads((path / "summary.json").read_text("utf-8"))
        if summary.get("task") and summary.get("model"):
            return f"任务 {summary['task']}、模型 {summary['model']} 的训练结果（{', '.join(found)}）"
    except (OSError, ValueError, AttributeError):  # 没有 summary.json，或者它不是 aigc train 写的
        pass
    return f"另一次训练（或别的程序）留下的文件（{', '.join(found)}）"


def running_training(path: Path) -> str | None:
    """``path`` 里正在进行的 aigc train 的进程号（文字）；没有训练在进行时返回 None。
    只看不占：``.aigc.pid`` 在、锁也确实被别的进程拿着，才算在进行（被 kill 的训练留下的 .aigc.pid 不算）。"""
    pid_file = path / PID_NAME
    if not pid_file.is_file():
        return None
    lock = FileLock(str(path / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            return pid_file.read_text("utf-8").strip() or "未知"
        except OSError:
            return "未知"
    lock.release()
    return None


@contextmanager
def claim(out: str | Path, overwrite: bool = False, *, resume: bool = False):
    """在 ``with`` 块里独占运行目录 ``out``（见模块说明），产出它的 ``Path``。

    ``resume=True``（``aigc train --resume``）时同样加锁，但目录里的训练结果正是要继续的那次训练：不拒绝、不删除。
    """
    path = check_out(out)
    lock = FileLock(str(path / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            holder = (path / PID_NAME).read_text("utf-8").strip()
        except OSError:
            holder = "未知"
        raise TaskError(f"另一个 aigc train（进程号 {holder}）正在往 {path} 里写：等它结束，或换一个 --out。") from None
    pid_file = path / PID_NAME
    try:
        pid_file.write_text(str(os.getpid()), "utf-8")
        found = None if resume else existing_run(path)
        if found and not overwrite:
            again = f"；要继续它，用 aigc train --resume {path}" if (path / "last.pt").is_file() else ""
            raise TaskError(f"--out {path} 里已经有{found}。换一个目录，或加 --overwrite 覆盖它（旧的这几个文件会被删掉）"
                            f"{again}。")
        old = None if resume or not found else _set_aside(path)
        try:
            yield path
        except BaseException:
            if old is not None and not any((path / name).exists() for name in RUN_FILES):
                for item in old.iterdir():  # 新的训练一个文件都没写出来：把旧的放回原处
                    os.replace(item, path / item.name)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def _set_aside(path: Path) -> Path:
    """把 ``path`` 里旧的训练结果（:data:`RUN_FILES`）挪进 ``path/.aigc-old/``，返回这个目录。
    同一个盘上的改名是原子的，不复制数据；上次被 kill 留下的 ``.aigc-old/`` 先清掉。"""
    old = path / OLD_NAME
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir()
    for name in RUN_FILES:
        if (path / name).exists():
            os.replace(path / name, old / name)
    return old


def write_json(path: Path, data) -> None:
    """把 ``data`` 写成 UTF-8 JSON：先写同目录的临时文件，再原子地改名成 ``path``。"""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), "utf-8")
    os.replace(tmp, path)
