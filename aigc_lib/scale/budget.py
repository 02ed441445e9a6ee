"""算力预算：训练多少个词、要多少次浮点运算、在 N 块 GPU 上要几天，以及外推到真实大小的表。

三条经验公式：
  * 计算最优的词数 D ≈ 20·N（Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"，
    即 Chinchilla：给定算力，参数量和词数应同比增长，约每个参数 20 个词）；
  * 训练计算量 C ≈ 6·N·D 次浮点运算（Kaplan et al. 2020, "Scaling Laws for Neural Language Models"：
    每个词前向约 2N 次（每个参数一次乘加）、反向约 4N 次；不含注意力里与序列长度有关的那一项）；
  * 时间 = C / (GPU 数 × 每块的峰值算力 × 利用率)。利用率（MFU）在好的大模型训练里约 40%～55%。
"""

from __future__ import annotations

from .memory import memory_bill

TOKENS_PER_PARAM = 20  # Hoffmann et al. (2022)
H100_BF16_PEAK_FLOPS = 989e12  # H100 SXM 的 bf16 稠密矩阵峰值（每秒浮点运算次数，不算稀疏加速）
SECONDS_PER_DAY = 86_400


def chinchilla_tokens(n_params: float, tokens_per_param: float = TOKENS_PER_PARAM) -> float:
    """计算最优的训练词数 D = tokens_per_param × N（默认 20，Hoffmann et al. 2022）。

    >>> chinchilla_tokens(70e9) / 1e12      # Chinchilla 本身：70B 参数、1.4T 词
    1.4
    """
    return tokens_per_param * n_params


def training_flops(n_params: float, tokens: float) -> float:
    """训练计算量 C = 6·N·D 次浮点运算（Kaplan et al. 2020）。

    >>> training_flops(1e9, 20e9)
    1.2e+20
    """
    return 6 * n_params * tokens


def training_days(flops: float, n_gpus: int, peak_flops: float = H100_BF16_PEAK_FLOPS,
                  utilization: float = 0.4) -> float:
    """用 ``n_gpus`` 块峰值 ``peak_flops``（次/秒）的卡、以 ``utilization`` 的利用率，算完 ``flops`` 要几天。"""
    if n_gpus < 1 or peak_flops <= 0 or not 0 < utilization <= 1:
        raise ValueError("training_days：n_gpus 要 >= 1，peak_flops 要 > 0，utilization 要在 (0, 1] 之间（例如 0.4）。")
    return flops / (n_gpus * peak_flops * utilization) / SECONDS_PER_DAY


def extrapolation_table(sizes=(1e9, 7e9, 70e9), *, n_gpus: int = 8, peak_flops: float = H100_BF16_PEAK_FLOPS,
                        utilization: float = 0.4, precisions=("fp32", "bf16-mixed"), optimizer: str = "adamw",
                        tokens_per_param: float = TOKENS_PER_PARAM) -> list[dict]:
    """外推到真实大小：每个参数量一行，全部由本模块和 :mod:`~aigc_lib.scale.memory` 的公式算出。

    每行的键：
      * ``params``、``tokens``（计算最优词数）、``flops``（6ND）、``days``（n_gpus 块卡、给定利用率）；
      * ``memory_<strategy>_<precision>``：每块卡上参数 + 梯度 + 优化器状态（+ 主权重）的字节数，
        strategy 为 single / ddp（都是完整一份）和 fsdp（切成 n_gpus 份），**不含激活**
        （激活随批大小和序列长度变，用 :func:`~aigc_lib.scale.memory.gpt_activation_bytes` 另算）。

    fp32 与 bf16-mixed 的状态内存一样（都是 16 B/参数，见 :func:`~aigc_lib.scale.memory.memory_bill`）：
    混合精度省的是激活和时间，不是参数和优化器状态；能把状态切小的是 FSDP。
    直接 ``pandas.DataFrame(extrapolation_table())`` 就是一张表。
    """
    rows = []
    for n_params in sizes:
        tokens = chinchilla_tokens(n_params, tokens_per_param)
        flops = training_flops(n_params, tokens)
        row = {"params": n_params, "tokens": tokens, "flops": flops,
               "days": training_days(flops, n_gpus, peak_flops, utilization)}
        for precision in precisions:
            for strategy in ("single", "ddp", "fsdp"):
                world_size = 1 if strategy == "single" else n_gpus
                bill = memory_bill(n_params, precision=precision, optimizer=optimizer, strategy=strategy,
                                   world_size=world_size)
                row[f"memory_{strategy}_{precision}"] = bill.total
        rows.append(row)
    return rows
