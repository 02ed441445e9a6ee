"""KV 缓存让生成快多少？同一个 GPT、同一段提示、贪心解码，带缓存和不带缓存各生成 128、512、1024 个字。

    python benchmarks/generation_speed.py          # CPU 上约一分钟；有 GPU 时自动用 GPU

不带缓存时，第 t 步要把前面 t 个字整段重新过一遍模型（只在最后一个位置算输出层，与 nanoGPT 的
generate 相同），生成 n 个字共要处理约 n²/2 个位置；带缓存时每步只处理 1 个新位置。所以生成得越长，
差距越大。两种做法必须生成完全相同的字（脚本会检查），否则比速度没有意义。

模型是第 09 章 cpu 档位的 GPT 结构（宽 128、4 层、4 头，字表 3343），随机初始化——速度与权重无关；
上下文长度设为 1040，能装下 16 个字的提示和 1024 个新字。

怎么计时：GPU 上用墙钟时间（前后 cuda.synchronize）。CPU 上用单线程和本进程的 CPU 时间
（time.process_time）：共享或繁忙的机器上，别的进程抢走 CPU 会让墙钟读数忽快忽慢，而本进程实际
花掉的 CPU 时间不受影响。每个长度各测一次（128 个字的测三次取中位数）。
最后一行 ``ratio <512 个字时 带缓存/不带缓存 的速度比>``（目标：CPU 上 >= 5）。
"""

import statistics

import torch

from aigc_lib.generation import generate
from aigc_lib.models import GPTLanguageModel
from aigc_lib.core.runtime import device, seed_everything
from timing import clock

LENGTHS = (128, 512, 1024)
PROMPT_LEN = 16


def tokens_per_second(model, prompt, n, use_cache, dev, repeats=1):
    speeds, tokens = [], None
    for _ in range(repeats):
        start = clock(dev)
        tokens = generate(model, prompt, n, strategy="greedy", use_cache=use_cache)
        speeds.append(len(tokens) / (clock(dev) - start))
    return statistics.median(speeds), tokens


def main() -> None:
    dev = device()
    if dev.type == "cpu":
        torch.set_num_threads(1)
    seed_everything(0)
    model = GPTLanguageModel(3343, d_model=128, num_heads=4, num_layers=4, dropout=0.0,
                             context_len=PROMPT_LEN + max(LENGTHS)).to(dev).eval()
    prompt = torch.randint(0, 3343, (PROMPT_LEN,)).tolist()
    generate(model, prompt, 16, strategy="greedy")  # 热身（第一次调用要分配内存、选内核）
    generate(model, prompt, 16, strategy="greedy", use_cache=False)
    timing = "墙钟时间" if dev.type == "cuda" else "单线程 CPU 时间"
    print(f"设备：{dev}（{timing}）；GPT 宽 128、4 层，{sum(p.numel() for p in model.parameters()):,} 个参数；"
          f"提示 {PROMPT_LEN} 个字，贪心解码")
    print(f"{'新字数':>6} {'带缓存 字/秒':>14} {'不带缓存 字/秒':>16} {'速度比':>8}")
    ratios = {}
    for n in LENGTHS:
        repeats = 3 if n <= 128 else 1
        cached, tokens_cached = tokens_per_second(model, prompt, n, True, dev, repeats)
        uncached, tokens_uncached = tokens_per_second(model, prompt, n, False, dev, repeats)
        if tokens_cached != tokens_uncached:
            raise SystemExit(f"带缓存与不带缓存生成的字不同（{n} 个字）：KV 缓存有错，比速度没有意义。")
        ratios[n] = cached / uncached
        print(f"{n:>9} {cached:>16,.0f} {uncached:>18,.0f} {ratios[n]:>9.1f}x", flush=True)
    print(f"ratio {ratios[512]:.2f}")


if __name__ == "__main__":
    main()
