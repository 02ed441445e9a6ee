"""代码在哪里跑、跑多大：设备、随机种子、运行档位、计时器。

每个 notebook 都以这几行开头::

    from aigc_lib import device, seed_everything, profile, pick
    seed_everything(0)
    dev = device()                                   # cuda > mps > cpu
    epochs = pick(smoke=1, cpu=4, gpu=10)            # sized by AIGC_PROFILE

本模块不依赖 ``aigc_lib`` 的其他部分（``describe`` 只在需要时顺便问一下字体），可以单独复制。
"""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PROFILES = ("smoke", "cpu", "gpu")
_PROFILE_ENV = "AIGC_PROFILE"


def device(prefer: str | torch.device | None = None) -> torch.device:
    """返回用来训练的设备。

    不传参数时依次选择：CUDA GPU、Apple 芯片的 ``mps``、CPU。
    明确指定（``"cpu"``、``"cuda:1"`` 或一个 ``torch.device``）时总是听你的，
    所以在 GPU 机器上 ``device("cpu")`` 也会强制使用 CPU。
    """
    if prefer is not None:
        try:
            chosen = torch.device(prefer)
        except RuntimeError:
            raise ValueError(f"不认识的设备 {prefer!r}：请用 cpu、cuda、cuda:1 或 mps。") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"要求使用设备 {chosen}，但本机没有可用的 CUDA GPU。"
                "请改用 cpu，或安装带 CUDA 的 PyTorch。"
            )
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise RuntimeError(f"本机只有 {torch.cuda.device_count()} 块 GPU（cuda:0 起编号），没有 {chosen}。")
        mps = getattr(torch.backends, "mps", None)
        if chosen.type == "mps" and not (mps is not None and mps.is_available()):
            raise RuntimeError("要求使用设备 mps，但本机没有可用的 Apple 芯片 GPU。请改用 cpu。")
        if chosen.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"课程只支持 cpu、cuda、mps 三种设备，收到 {prefer!r}。")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> int:
    """用同一个数给 Python、NumPy 和 PyTorch（CPU 与所有 CUDA 设备）设随机种子。

    在 CPU 上，种子相同的两次运行得到完全相同的权重。GPU 上有些算子本身不确定，除非再调用
    ``torch.use_deterministic_algorithms(True)``；它更慢，所以这里不打开。返回种子，方便记录。
    """
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # 没装 NumPy 也能用
        pass
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


class ProfileError(ValueError):
    """环境变量 ``AIGC_PROFILE`` 的值无效（用户能自己改正：``aigc`` 只打印这条说明，不打印堆栈）。"""


def profile() -> str:
    """运行档位：``smoke``（CI，几秒）、``cpu``（笔记本电脑，几分钟）或 ``gpu``。

    从环境变量 ``AIGC_PROFILE`` 读取；没有设置时，有 CUDA 就是 ``gpu``，否则是 ``cpu``。
    其他取值会报错，并说明允许的取值。
    """
    value = os.environ.get(_PROFILE_ENV, "").strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        raise ProfileError(
            f"环境变量 {_PROFILE_ENV}={os.environ[_PROFILE_ENV]!r} 无效：只能是 "
            f"{' | '.join(PROFILES)}。例如：export {_PROFILE_ENV}=cpu"
            f"（Windows PowerShell：$env:{_PROFILE_ENV}='cpu'），或者删除该变量让程序自动选择。"
        )
    return value


_SAME_AS_CPU = object()  # pick 的 gpu 没有给出；不能用 None：None 本身常被当作"全部"传进来


def pick(smoke, cpu, gpu=_SAME_AS_CPU):
    """按当前档位取值：``pick(smoke=200, cpu=20_000, gpu=100_000)``。

    不写 ``gpu`` 时它等于 ``cpu`` 的值，所以不需要在 GPU 上变大的尺寸只写两个。``gpu=None`` 就是 None
    （例如"None = 全部数据"），不会退回 cpu 的值。
    """
    chosen = profile()
    if chosen == "smoke":
        return smoke
    if chosen == "gpu" and gpu is not _SAME_AS_CPU:
        return gpu
    return cpu


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """在 ``with`` 块里把模型切到 eval 模式（关掉 dropout 等），离开时恢复原来的 train/eval 状态，
    出错时也恢复。生成、解码、测速这类"借用一下模型"的函数都用它，不会悄悄改掉调用者的模式。

    >>> net = torch.nn.Dropout(0.5)
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training
    True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class Timer:
    """一个小秒表，可以用 ``with`` 语句，也可以手动读数。

    >>> with Timer() as t:
    ...     _ = sum(range(1000))
    >>> t.elapsed >= 0
    True

    ``t.lap()`` 返回距上一次 lap（或开始）的秒数，并记入 ``t.laps``。在 CUDA 上读数前要先
    ``torch.cuda.synchronize()``，否则量到的只是内核的启动时间，而不是计算本身。
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self._last = self.start
        self.laps: list[float] = []
        self._stopped: float | None = None

    def __enter__(self) -> "Timer":
        self.start = self._last = time.perf_counter()
        self._stopped = None
        return self

    def __exit__(self, *exc) -> None:
        self._stopped = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self.laps.append(seconds)
        return seconds

    @property
    def elapsed(self) -> float:
        end = self._stopped if self._stopped is not None else time.perf_counter()
        return end - self.start


def cuda_bf16_native() -> bool:
    """这块 GPU 有没有原生的 bf16 运算（计算能力 8.0 起，A100、RTX 30 系列及以后）。

    ``torch.cuda.is_bf16_supported()`` 默认把“能模拟”也算作支持，T4、V100 上也返回 True，
    可模拟的 bf16 比 float32 还慢；所以课程问的是原生支持。没有 GPU 时返回 False。
    """
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def cpu_bf16_fast() -> bool:
    """这台 CPU 做 bf16 运算快不快：有 AVX-512（oneDNN 用它做 bf16）或 AMX 时为 True。

    没有这些指令的 CPU（多数笔记本、只有 AVX2 的服务器）上 bf16 只能来回转换着模拟，训练比 float32
    慢好几倍（第 12 章在这样的 CPU 上量过）。问的是 oneDNN 自己的判断；PyTorch 不提供它时返回 False。
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compile_problem(dev: str | torch.device = "cpu") -> str | None:
    """``torch.compile`` 在这台机器的这个设备上能不能用：能用返回 None，不能用返回一句中文的原因和办法。

    - CPU：Inductor 把生成的 C++ 代码交给本机的编译器。Linux 用 g++（或环境变量 ``CXX``），macOS 用
      clang++，Windows 只认 Visual Studio 的 ``cl``（而且要英文语言包，要在运行过 ``vcvars64.bat`` 的终端里）；
      MinGW 的 g++ 在 Windows 上不行。这里直接问 PyTorch 自己找编译器的函数，结论和真正编译时一样。
    - CUDA：生成的是 Triton 代码，要装了 ``triton`` 才行（Linux 版 PyTorch 自带，Windows 版没有）。
    - mps：交给 PyTorch 自己（返回 None）。

    第一次调用 CPU 的检查要两三秒（载入 Inductor、试一下编译器）。

    >>> compile_problem("cpu") is None or "编译器" in compile_problem("cpu")
    True
    """
    import importlib.util
    import sys

    dev = torch.device(dev)
    if dev.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return ("torch.compile 在 GPU 上要用 Triton，这个环境里没有装（Windows 版 PyTorch 不带它）："
                    "Linux 上 pip install triton，Windows 上 pip install triton-windows；或者不用编译。")
        return None
    if dev.type != "cpu":
        return None
    hint = {"win32": "装 Visual Studio 生成工具（勾选“使用 C++ 的桌面开发”，语言包选英语），再从“x64 Native Tools "
                     "Command Prompt”（或先运行 vcvars64.bat 的终端）里启动 Jupyter / aigc",
            "darwin": "运行 xcode-select --install"}.get(sys.platform, "装 g++（例如 sudo apt install g++）")
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # PyTorch 内部的函数换了地方：交给 torch.compile 自己报错
        return None
    try:
        get_cpp_compiler()
    except Exception as error:  # 各版本、各平台抛的类型不同（InvalidCxxCompiler、RuntimeError……）
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"torch.compile 在 CPU 上要用 C++ 编译器，这里用不了（{reason}）：{hint}；或者不用编译。"
    return None


def describe() -> dict:
    """本机的能力：PyTorch 版本、设备、GPU 名称与显存、CPU 线程数、档位、中文字体（00_setup 展示）。"""
    dev = device()
    info = {
        "Python": platform.python_version(),
        "PyTorch": torch.__version__,
        "操作系统": f"{platform.system()} {platform.machine()}",
        "设备": str(dev),
        "CPU 线程数": torch.get_num_threads(),
        "CPU 快速 bf16": cpu_bf16_fast(),
        "运行档位 (AIGC_PROFILE)": profile(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["GPU"] = props.name
        info["GPU 显存 (GiB)"] = round(props.total_memory / 2**30, 1)
        info["GPU 数量"] = torch.cuda.device_count()
        info["bf16 支持"] = cuda_bf16_native()
    else:
        info["GPU"] = "无"
    try:  # describe() 顺便报告字体；runtime 本身不依赖 matplotlib
        from ..plotting import chinese_font_name

        info["中文字体"] = chinese_font_name() or "未找到"
    except ImportError:
        info["中文字体"] = "未安装 matplotlib"
    return info
