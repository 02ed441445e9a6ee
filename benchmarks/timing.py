"""基准脚本共用的计时：一个时钟、一个交替重复的计时循环、配对比值的中位数与置信区间。

    from timing import interleaved_throughput, paired_ratio      # 脚本与本文件在同一个目录

怎么计时：GPU 上用墙钟时间（前后 cuda.synchronize）。CPU 上用本进程的 CPU 时间（time.process_time）：
在共享或繁忙的机器（CI）上，别的进程抢走 CPU 的时间会让墙钟读数忽快忽慢 ±30%，而本进程实际花掉的
CPU 时间不受影响——比较的正是几种做法自己要做多少事。调用者应在 CPU 上 torch.set_num_threads(1)：
多线程时 OpenMP 线程互相等待的时间也算进 CPU 时间，繁忙的机器上能差几倍。
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from typing import Callable

import torch


def clock(dev: torch.device) -> float:
    """GPU：等排队的 kernel 都算完再读墙钟；CPU：本进程用掉的 CPU 时间（见文件开头）。"""
    if dev.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def interleaved_throughput(runs: dict[str, Callable[[], tuple[Callable[[], object], int]]], dev: torch.device,
                           repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """交替计时几种做法，返回 {名字: [每次的吞吐（样本/秒）, ...]}。

    runs: 名字 -> prepare()。prepare 建好模型、优化器和数据（不计时），返回 (要计时的函数, 它处理的样本数)。
    先把每种做法各跑 warmup 次（首次调用的导入、内存分配、cuDNN 选算法都不计时），再跑 repeats 轮：
    每轮每种做法一次，奇数轮倒过来（A,B / B,A / ...），机器状态的缓慢漂移对各做法的影响就相互抵消。
    同一轮里的几次紧挨着跑，所以“同一轮的比值”（见 paired_ratio）比两个中位数之比稳得多。
    """

    def once(prepare) -> float:
        work, items = prepare()
        gc.disable()  # 垃圾回收什么时候触发与被测的代码无关，不让它落进计时里
        try:
            start = clock(dev)
            work()
            seconds = clock(dev) - start
        finally:
            gc.enable()
        return items / seconds

    for _ in range(warmup):
        for prepare in runs.values():
            once(prepare)
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(repeats):
        order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
        for name in order:
            speeds[name].append(once(runs[name]))
    return speeds


def paired_ratio(a: list[float], b: list[float], level: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float, float]:
    """同一轮里 a[i] / b[i] 的比值：返回 (中位数, 置信区间下界, 上界)。

    置信区间用 bootstrap：有放回地重抽 len(a) 个比值、取中位数，重复 resamples 次，
    取这些中位数的 (1-level)/2 与 (1+level)/2 分位数（level 精确到 0.001）。种子固定，同样的数据给出同样的区间。
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("需要两组等长、至少 2 次的吞吐才能算配对比值的置信区间。")
    ratios = [x / y for x, y in zip(a, b)]
    rng = random.Random(seed)
    medians = [statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples)]
    # 分位数按线性插值（与 numpy.percentile 的默认做法相同）：level=0.95 取 2.5% 与 97.5% 处
    cuts = statistics.quantiles(medians, n=1000, method="inclusive")  # 第 k 个是 k/1000 分位
    tail = round((1 - level) / 2 * 1000)
    return statistics.median(ratios), cuts[tail - 1], cuts[-tail]
