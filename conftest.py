"""pytest 公共设置（对 tests/ 和 chapters/ 都生效）。

- 没有设置 AIGC_PROFILE 时用 smoke 档位；
- 单元测试在无界面的后端上画图；
- 单元测试里的张量都很小，多线程同步的开销远大于计算：测试进程只用一个 CPU 线程；
- 用 pytest-xdist 并行时，它启动的 notebook 内核也只用一个线程：两个进程各开两个线程去抢
  两个核，小模型会慢十几倍。
"""

import os

# README 里的测试命令就是 pytest：没有指定档位时用 smoke（CI 也是它），不要在读者的笔记本上跑一小时的 cpu 档位。
# 必须在导入 aigc_lib 之前设置；notebook 内核是子进程，也会继承它。
os.environ.setdefault("AIGC_PROFILE", "smoke")

import matplotlib  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
torch.set_num_threads(1)

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # notebook 内核是子进程，继承这个环境变量
    os.environ["MKL_NUM_THREADS"] = "1"
