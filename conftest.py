"""pytest 公共设置（对 tests/ 和 chapters/ 都生效）。

- 单元测试在无界面的后端上画图；
- 单元测试里的张量都很小，多线程同步的开销远大于计算：测试进程只用一个 CPU 线程；
- 用 pytest-xdist 并行时，它启动的 notebook 内核也只用一个线程：两个进程各开两个线程去抢
  两个核，小模型会慢十几倍。
"""

import os

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # notebook 内核是子进程，继承这个环境变量
    os.environ["MKL_NUM_THREADS"] = "1"
