"""GPT 经 fit 训练时每秒处理多少个字（token），以及在 CUDA 上的模型 FLOP 利用率（MFU）。

    python benchmarks/gpt_throughput.py                    # CPU 上约一分钟：cpu 档位的 GPT
    python benchmarks/gpt_throughput.py                    # 有 GPU 时：gpu 档位的 GPT，bf16 + torch.compile
    python benchmarks/gpt_throughput.py --d-model 768 --num-layers 12 --num-heads 12 --context-len 1024 --batch-size 16

MFU = 实际达到的每秒浮点运算数 / 设备 bf16 稠密矩阵乘法的峰值。每个字的训练计算量按 nanoGPT
（PaLM 附录 B）的估计：

    每字 FLOPs ≈ 6N + 12·L·T·d

N 是参数量（不含位置编码；输出层与词向量共用，只算一次），6N 是前向 2N、反向 4N 的矩阵乘法；
12·L·T·d 是注意力里 QK^T 和加权求和 V 两次 (T×T×d) 的乘法（前向加反向）。
MFU 只在 CUDA 上计算：CPU 没有一个公认的"峰值"，这里只报告每秒的字数。

数据是随机字（吞吐与内容无关）。GPU 上 fit 跑 2 轮：第 1 轮包括 torch.compile 的编译和各种热身，
只用第 2 轮的吞吐（fit 记录的 样本/秒 × 每个样本的字数，墙钟时间）。CPU 上先用几批热身，再用单线程
和本进程的 CPU 时间（time.process_time）给一整轮 fit 计时：在共享或繁忙的机器上墙钟读数忽快忽慢，
本进程实际花掉的 CPU 时间不受影响（与 benchmarks/generation_speed.py 相同）。
"""

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from aigc_lib.models import GPTLanguageModel
from aigc_lib.core.runtime import device, seed_everything
from aigc_lib.core.training import fit
from zh_args import ChineseArgumentParser

# 各种 GPU 的 bf16 稠密（非稀疏）张量核心峰值，单位 TFLOPS（厂商数据表）。按名字里的关键词匹配，先匹配先得。
PEAK_BF16_TFLOPS = [
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("GH200", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0),
    ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("A6000", 155.0),
]

SIZES = {  # 与 aigc train --task lm --model gpt 的 cpu / gpu 档位一致（字表约 3343 / 4035 个字）
    "cpu": dict(vocab=3343, d_model=128, num_heads=4, num_layers=4, context_len=128, batch_size=32, batches=60),
    "cuda": dict(vocab=4035, d_model=384, num_heads=6, num_layers=6, context_len=256, batch_size=128, batches=200),
}


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


def flops_per_token(model: GPTLanguageModel, context_len: int) -> float:
    cfg = model.config
    n = sum(p.numel() for p in model.parameters()) - model.positions.table.weight.numel()
    return 6 * n + 12 * cfg["num_layers"] * context_len * cfg["d_model"]


def main() -> None:
    parser = ChineseArgumentParser(description="GPT 训练吞吐与 MFU")
    for key in ("d_model", "num_heads", "num_layers", "context_len", "batch_size", "batches", "vocab"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="CUDA 上不用 torch.compile")
    parser.add_argument("--peak-tflops", type=float, default=None, help="设备的 bf16 峰值（不在内置表里时）")
    args = parser.parse_args()

    dev = device()
    cfg = dict(SIZES["cuda" if dev.type == "cuda" else "cpu"])
    cfg.update({k: v for k, v in vars(args).items() if k in cfg and v is not None})
    seed_everything(0)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    n_seq = cfg["batch_size"] * cfg["batches"]
    data = torch.randint(0, cfg["vocab"], (n_seq, cfg["context_len"] + 1))
    loader = DataLoader(TensorDataset(data[:, :-1], data[:, 1:]), batch_size=cfg["batch_size"], shuffle=True,
                        pin_memory=dev.type == "cuda")
    model = GPTLanguageModel(cfg["vocab"], d_model=cfg["d_model"], num_heads=cfg["num_heads"], num_layers=cfg["num_layers"],
                             dropout=0.0, context_len=cfg["context_len"])
    use_fused = dev.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=use_fused or None)
    amp = "bf16" if dev.type == "cuda" else "off"
    compile_model = dev.type == "cuda" and not args.no_compile

    options = dict(optimizer=optimizer, device=dev, amp=amp, clip_grad_norm=1.0, progress=False)
    if dev.type == "cuda":
        history = fit(model, loader, epochs=2, compile=compile_model, **options)
        tokens_per_s = history.records[-1]["items_per_s"] * cfg["context_len"]
    else:
        torch.set_num_threads(1)
        warmup = DataLoader(TensorDataset(data[:3, :-1], data[:3, 1:]), batch_size=1)
        fit(model, warmup, epochs=1, **options)  # 热身：第一次分配内存、建优化器状态
        start = time.process_time()
        fit(model, loader, epochs=1, **options)
        tokens_per_s = n_seq * cfg["context_len"] / (time.process_time() - start)
    params = sum(p.numel() for p in model.parameters())
    per_token = flops_per_token(model, cfg["context_len"])
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"设备：{name}；GPT 宽 {cfg['d_model']}、{cfg['num_layers']} 层、{cfg['num_heads']} 头，{params:,} 个参数；"
          f"片段 {cfg['context_len']} 个字 × 批 {cfg['batch_size']}；混合精度 {amp}，torch.compile {compile_model}")
    print(f"每字训练计算量 6N + 12LTd ≈ {per_token / 1e6:.1f} MFLOPs")
    timing = "第 2 轮，墙钟时间" if dev.type == "cuda" else "一整轮，单线程 CPU 时间"
    print(f"训练吞吐（{timing}）：{tokens_per_s:,.0f} 字/秒，即 {tokens_per_s * per_token / 1e12:.3f} TFLOPS")
    if dev.type != "cuda":
        print("MFU 只在 CUDA 上计算（CPU 没有公认的 bf16 峰值）。")
        return
    peak = args.peak_tflops or peak_tflops(name)
    if peak is None:
        print(f"不知道 {name} 的 bf16 峰值：请用 --peak-tflops 给出（厂商数据表里的稠密 bf16 TFLOPS）。")
        return
    mfu = tokens_per_s * per_token / (peak * 1e12)
    print(f"MFU {mfu:.1%}（峰值 {peak:.0f} TFLOPS）")
    print(f"mfu {mfu:.4f}")


if __name__ == "__main__":
    main()
