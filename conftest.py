"""pytest 公共设置。

- 单元测试在无界面的后端上画图；
- 用 pytest-xdist 并行（``pytest -n 2``）时，每个工作进程和它启动的 notebook 内核只用一个
  CPU 线程：两个进程各开两个线程去抢两个核，小模型会慢十几倍。
"""

import os

import matplotlib

matplotlib.use("Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # notebook 内核是子进程，继承这个环境变量
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
