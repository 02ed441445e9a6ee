"""编码器-解码器的 KV 缓存让贪心解码快多少？第 10 章 cpu 档位结构的 seq2seq（宽 128、编码器 3 层、
解码器 1 层、4 头，aligned），一批 64 个源序列，每个正好写 20 个字（再加 <eos>），带缓存和不带缓存各解一次。

    python benchmarks/seq2seq_decode_speed.py        # CPU 上约半分钟；有 GPU 时自动用 GPU

不带缓存时第 t 步要把已写出的 t 个位置整段重算（每层的自注意力、交叉注意力和前馈层）；带缓存时每步只算
新的一个位置，交叉注意力的 k、v 每层只由源序列算一次。两种做法必须写出完全相同的字（脚本会检查）。

计时同 generation_speed.py：GPU 上用墙钟时间，CPU 上用单线程和本进程的 CPU 时间。两种做法交替各测
REPEATS 次，取中位数；最后一行 ``ratio <带缓存/不带缓存 的速度比>``。
"""

import statistics

import torch

from aigc_lib.models import Seq2SeqTransformer
from aigc_lib.core.runtime import device, seed_everything
from timing import clock

BATCH, LENGTH, REPEATS = 64, 20, 5
SRC_VOCAB, TGT_VOCAB = 400, 3500  # 约为第 10 章的音节表和字表大小


def main() -> None:
    dev = device()
    if dev.type == "cpu":
        torch.set_num_threads(1)
    seed_everything(0)
    model = Seq2SeqTransformer(SRC_VOCAB, TGT_VOCAB, d_model=128, num_heads=4, num_encoder_layers=3,
                               num_decoder_layers=1, dim_feedforward=256, dropout=0.0, context_len=64,
                               aligned=True).to(dev).eval()
    src = torch.randint(4, SRC_VOCAB, (BATCH, LENGTH), device=dev)
    lengths = torch.full((BATCH,), LENGTH, device=dev)

    def decode(use_cache):
        return model.greedy_decode(src, lengths, target_lengths=lengths, use_cache=use_cache)

    decode(True), decode(False)  # 热身
    times = {True: [], False: []}
    outputs = {}
    for _ in range(REPEATS):
        for use_cache in (True, False):  # 交替测，机器忙闲的变化对两者影响相同
            start = clock(dev)
            outputs[use_cache] = decode(use_cache)
            times[use_cache].append(clock(dev) - start)
    if outputs[True] != outputs[False]:
        raise SystemExit("带缓存与不带缓存写出的字不同：KV 缓存有错，比速度没有意义。")
    cached, uncached = statistics.median(times[True]), statistics.median(times[False])
    timing = "墙钟时间" if dev.type == "cuda" else "单线程 CPU 时间"
    print(f"设备：{dev}（{timing}）；seq2seq 宽 128、编码器 3 层、解码器 1 层；批 {BATCH} × {LENGTH} 个字，贪心解码")
    print(f"带缓存 {cached * 1000:.1f} ms，不带缓存 {uncached * 1000:.1f} ms（{REPEATS} 次的中位数）")
    print(f"ratio {uncached / cached:.2f}")


if __name__ == "__main__":
    main()
