"""测试共用：像用户在终端里那样，在子进程里运行 ``aigc`` 命令。

环境：smoke 档位、每个进程 1 个线程、不显示进度条；``PYTHONPATH`` 指向仓库根目录，没装成包时也能运行。
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict:
    """子进程的环境变量（``extra`` 覆盖或添加几项）。

    ``PYTHONUTF8=1``：子进程里的 Python 一律用 UTF-8 读写标准输入输出，父进程按 UTF-8 解码
    （Windows 上默认是系统的 ANSI 编码，简体中文是 GBK）；Windows 版 PyTorch 的 TCPStore 没有 libuv。
    """
    windows = {"USE_LIBUV": "0"} if sys.platform == "win32" else {}
    return {**os.environ, "AIGC_PROFILE": "smoke", "AIGC_PROGRESS": "off", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT), "PYTHONUTF8": "1", **windows, **extra}


def run_aigc(*args: str, stdin: str = "", timeout: int = 240, env: dict | None = None
             ) -> subprocess.CompletedProcess:
    """``aigc ARGS...``，返回 CompletedProcess（returncode、stdout、stderr 都是文本）。
    标准输入默认是空的：读标准输入的命令（``aigc chat``、``aigc mask``）马上读到结尾，不会等着测试进程。"""
    return subprocess.run([sys.executable, "-m", "aigc_lib.cli", *args], input=stdin, capture_output=True,
                          encoding="utf-8", env=cli_env() if env is None else env, timeout=timeout)
