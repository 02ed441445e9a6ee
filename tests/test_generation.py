"""aigc_lib.generation：每步的 logits 处理对照手写公式与穷举；top-k / top-p 从不采到集合以外；
带缓存与不带缓存一致；束宽 1 等于贪心、足够宽的束等于穷举；种子可复现；空提示与超长提示。"""

import itertools
import math
import random

import pytest
import torch
from torch import nn

from aigc_lib.generation import (
    LanguageModelDecoder,
    apply_repetition_penalty,
    beam_search,
    beam_search_batch,
    generate,
    next_token_probs,
    top_k_filter,
    top_p_filter,
)
from aigc_lib.models import GPTLanguageModel, LSTMLanguageModel
from aigc_lib.data.text import Vocab


class MarkovModel(nn.Module):
    """下一个字的 logits 只取决于上一个字：logits = table[上一个字]。每一步的候选集合因此可以直接算出来。"""

    context_len = None

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def new_cache(self, batch_size=1):
        return _NoCache(batch_size)

    def forward(self, tokens, cache=None, last_only=False):
        logits = self.table[tokens]  # (B, T, V)
        if cache is not None:
            cache.length += tokens.size(1)
        return logits[:, -1:] if last_only else logits


class _NoCache:
    def __init__(self, batch_size):
        self.batch_size, self.length = batch_size, 0

    def reorder(self, index):
        self.batch_size = len(index)


def markov(seed, V=12):
    return MarkovModel(torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * 2)


def tiny_models(seed, V=30, context_len=64):
    torch.manual_seed(seed)
    gpt = GPTLanguageModel(V, d_model=16, num_heads=2, num_layers=2, dropout=0.0, context_len=context_len).eval()
    lstm = LSTMLanguageModel(V, embed_dim=12, hidden_dim=16, dropout=0.0).eval()
    return {"gpt": gpt, "lstm": lstm}


# ---------------------------------------------------------------------------
# 每一步的 logits 处理
# ---------------------------------------------------------------------------


def test_repetition_penalty_matches_the_hand_formula():
    rng = random.Random(0)
    for _ in range(200):
        V = rng.randint(1, 20)
        logits = [rng.uniform(-5, 5) for _ in range(V)]
        previous = [rng.randrange(V) for _ in range(rng.randint(0, 8))]
        penalty = rng.choice([0.5, 1.0, 1.2, 2.0, 3.7])
        expected = [
            (z / penalty if z > 0 else z * penalty) if i in previous else z for i, z in enumerate(logits)
        ]
        got = apply_repetition_penalty(torch.tensor(logits), previous, penalty)
        assert got.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_top_k_and_top_p_keep_exactly_the_brute_force_sets():
    rng = random.Random(1)
    for _ in range(300):
        V = rng.randint(1, 15)
        logits = torch.randn(V, generator=torch.Generator().manual_seed(rng.randrange(10**6))) * rng.uniform(0.1, 4)
        k = rng.randint(1, V + 2)
        order = sorted(range(V), key=lambda i: -logits[i].item())
        kept = set(torch.nonzero(top_k_filter(logits, k).isfinite()).flatten().tolist())
        assert kept == set(order[:k])

        p = rng.uniform(0.01, 1.0)
        probs = torch.softmax(logits.double(), -1).tolist()
        expected, mass = set(), 0.0
        for i in order:  # 按概率从大到小取，累计达到 p 为止
            expected.add(i)
            mass += probs[i]
            if mass >= p:
                break
        kept = set(torch.nonzero(top_p_filter(logits, p).isfinite()).flatten().tolist())
        # 累计概率恰好落在 p 附近时，float32 与 float64 的求和可能差一个词；其余情况必须完全相同
        if not any(abs(sum(probs[j] for j in order[: n + 1]) - p) < 1e-5 for n in range(V)):
            assert kept == expected


def test_next_token_probs_is_the_renormalised_tempered_softmax():
    rng = random.Random(2)
    for _ in range(100):
        V = rng.randint(2, 12)
        logits = torch.randn(V, generator=torch.Generator().manual_seed(rng.randrange(10**6)))
        T, k, p = rng.choice([0.3, 1.0, 1.7]), rng.choice([None, 1, 3, V]), rng.choice([None, 0.5, 0.9])
        probs = next_token_probs(logits, temperature=T, top_k=k, top_p=p)
        tempered = [math.exp(z / T) for z in logits.tolist()]
        keep = top_p_filter(top_k_filter(logits / T, k), p).isfinite().tolist()
        total = sum(e for e, kept in zip(tempered, keep) if kept)
        expected = [e / total if kept else 0.0 for e, kept in zip(tempered, keep)]
        assert probs.tolist() == pytest.approx(expected, abs=1e-6)
    # 温度越低，分布越尖：最大概率随温度单调下降
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    peaks = [next_token_probs(logits, temperature=t).max().item() for t in (0.2, 0.5, 1.0, 2.0, 5.0)]
    assert peaks == sorted(peaks, reverse=True)


def test_bad_settings_are_clear():
    logits = torch.zeros(5)
    with pytest.raises(ValueError, match="temperature"):
        next_token_probs(logits, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(logits, 0)
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(logits, 0.0)
    with pytest.raises(ValueError, match="repetition_penalty"):
        apply_repetition_penalty(logits, [1], 0)
    model = markov(0)
    with pytest.raises(ValueError, match="beam_search"):
        generate(model, [1], 5, strategy="beam")
    with pytest.raises(ValueError, match="vocab"):
        generate(model, "你好", 5)


# ---------------------------------------------------------------------------
# 采样从不越出 top-k / top-p 的集合
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("setting", [dict(top_k=1), dict(top_k=3), dict(top_p=0.5), dict(top_p=0.8),
                                     dict(top_k=4, top_p=0.6, temperature=1.5)])
def test_sampling_never_leaves_the_allowed_set(setting):
    model = markov(3)
    seen = set()
    for seed in range(40):
        out = generate(model, [seed % 12], 25, seed=seed, **setting)
        previous = seed % 12
        for token in out:
            allowed = next_token_probs(model.table[previous].detach(), temperature=setting.get("temperature", 1.0),
                                       top_k=setting.get("top_k"), top_p=setting.get("top_p")) > 0
            assert allowed[token], (previous, token)
            seen.add((previous, token))
            previous = token
    if setting.get("top_k", 0) != 1:
        # 集合里不止一个词时，确实采到了不同的词（不是悄悄退化成贪心）
        assert len(seen) > len({prev for prev, _ in seen})


def test_sample_frequencies_follow_the_distribution():
    model = MarkovModel(torch.log(torch.tensor([[0.6, 0.3, 0.1]] * 3)))
    counts = [0, 0, 0]
    for token in generate(model, [0], 3000, seed=0):
        counts[token] += 1
    for observed, p in zip(counts, [0.6, 0.3, 0.1]):
        assert abs(observed / 3000 - p) < 4 * math.sqrt(p * (1 - p) / 3000)  # 4 个标准差


# ---------------------------------------------------------------------------
# 带缓存 == 不带缓存；贪心 == 手写的 argmax 链；束宽 1 == 贪心；宽束 == 穷举
# ---------------------------------------------------------------------------


def brute_force_greedy(model, prompt, n):
    tokens = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            window = tokens[-model.context_len :] if model.context_len else tokens
            tokens.append(int(model(torch.tensor([window]))[0, -1].argmax()))
    return tokens[len(prompt) :]


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_greedy_cached_uncached_and_beam_one_agree(family):
    for seed in range(6):
        model = tiny_models(seed, context_len=24)[family]
        rng = random.Random(seed)
        prompt = [rng.randrange(30) for _ in range(rng.randint(1, 10))]
        n = 40  # GPT 超过 context_len=24：也检查了滑动窗口
        cached = generate(model, prompt, n, strategy="greedy")
        assert cached == generate(model, prompt, n, strategy="greedy", use_cache=False)
        assert cached == brute_force_greedy(model, prompt, n)
        assert cached == beam_search(model, prompt, 1, n)
        assert cached == beam_search(model, prompt, 1, n, use_cache=False)
        stop = cached[len(cached) // 2]  # 有停止符时也相同（两者都在第一次出现时停下）
        stopped = generate(model, prompt, n, strategy="greedy", stop_tokens=[stop])
        assert stopped == cached[: cached.index(stop) + 1]
        assert stopped == beam_search(model, prompt, 1, n, stop_tokens=[stop])


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_sampling_with_cache_equals_sampling_without(family):
    for seed in range(4):
        model = tiny_models(seed, context_len=24)[family]
        options = dict(seed=seed, temperature=0.8, top_k=10, top_p=0.9, repetition_penalty=1.3)
        assert generate(model, [1, 2, 3], 35, **options) == generate(model, [1, 2, 3], 35, use_cache=False, **options)


def test_wide_beam_finds_the_exhaustive_best_sequence():
    for seed in range(10):
        V, n = 4, 3
        model = tiny_models(seed, V=V)["gpt"]
        prompt = [seed % V]
        best, best_score = None, -math.inf
        for seq in itertools.product(range(V), repeat=n):  # 穷举全部 V^n 种续写
            with torch.no_grad():
                log_probs = torch.log_softmax(model(torch.tensor([prompt + list(seq)])), -1)[0]
            score = sum(log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(seq))
            if score > best_score:
                best, best_score = list(seq), score
        # 束宽 V^(n-1) 时每一步都保留了全部前缀，束搜索就是精确搜索
        found, score = beam_search(model, prompt, V ** (n - 1), n, return_scores=True)
        assert found == best
        assert score == pytest.approx(best_score / n, abs=1e-5)  # 长度归一化：除以 n^1


def model_prompts_and_stop(seed: int, family: str, count: int, length: int):
    """一个小模型，``count`` 个长 ``length`` 的随机提示，一个随机的停止符（都由 seed 决定）。"""
    model = tiny_models(seed, context_len=24)[family]
    g = random.Random(seed)
    prompts = [[g.randrange(30) for _ in range(length)] for _ in range(count)]
    return model, prompts, g.randrange(30)


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_one_search_serves_a_batch_of_prompts_and_a_single_prompt(family):
    # beam_search(model, prompt) 就是 B = 1 的 beam_search_batch；整批一起搜时每个提示的结果不变
    for seed in range(4):
        model, prompts, stop = model_prompts_and_stop(seed, family, count=4, length=5)
        for k, alpha in ((1, 1.0), (3, 0.0), (4, 1.0)):
            decoder = LanguageModelDecoder(model, torch.tensor(prompts))
            batch = beam_search_batch(decoder, k, 30, stop_ids=[stop], length_penalty=alpha)
            for prompt, (ids, score) in zip(prompts, batch):
                alone, alone_score = beam_search(model, prompt, k, 30, stop_tokens=[stop], length_penalty=alpha,
                                                 return_scores=True)
                assert ids == alone and score == pytest.approx(alone_score, abs=1e-5)


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_nbest_returns_the_whole_final_beam_best_first(family):
    # nbest=True：第一个就是 nbest=False 的结果；其余按得分从高到低；每个候选的得分就是它自己的归一化对数概率
    for seed in range(3):
        model, prompts, stop = model_prompts_and_stop(seed, family, count=3, length=4)
        best = beam_search_batch(LanguageModelDecoder(model, torch.tensor(prompts)), 4, 6, stop_ids=[stop])
        lists = beam_search_batch(LanguageModelDecoder(model, torch.tensor(prompts)), 4, 6, stop_ids=[stop],
                                  nbest=True)
        for prompt, (ids, score), found in zip(prompts, best, lists):
            assert found[0] == (ids, score) and len(found) >= 4
            assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
            for seq, s in found:
                with torch.no_grad():
                    log_probs = torch.log_softmax(model(torch.tensor([prompt + seq])).float(), -1)[0]
                total = sum(log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(seq))
                assert s == pytest.approx(total / len(seq), abs=1e-4)


def test_length_penalty_decides_between_short_and_long_finished_beams():
    # 提示 2 之后：0 的概率 0.6，接着必然停（3 是停止符）；1 的概率 0.4，接着必然是 5、6、停
    table = torch.full((7, 7), -30.0)
    table[2, 0], table[2, 1] = math.log(0.6), math.log(0.4)
    table[0, 3] = table[1, 5] = table[5, 6] = table[6, 3] = 0.0
    model = MarkovModel(table)
    # 不归一化（α=0）：总对数概率 log 0.6 > log 0.4，短句胜出
    out, score = beam_search(model, [2], 3, 6, stop_tokens=[3], length_penalty=0.0, return_scores=True)
    assert out == [0, 3] and score == pytest.approx(math.log(0.6), abs=1e-4)
    # 按字平均（α=1）：log(0.4)/4 > log(0.6)/2，长句胜出
    out, score = beam_search(model, [2], 3, 6, stop_tokens=[3], length_penalty=1.0, return_scores=True)
    assert out == [1, 5, 6, 3] and score == pytest.approx(math.log(0.4) / 4, abs=1e-4)


# ---------------------------------------------------------------------------
# 种子、提示、停止符、词表
# ---------------------------------------------------------------------------


def test_seed_makes_sampling_reproducible_and_leaves_global_rng_alone():
    model = tiny_models(0)["gpt"]
    state = torch.get_rng_state()
    first = generate(model, [1, 2], 30, seed=123)
    assert torch.equal(torch.get_rng_state(), state)  # 自己的 Generator：不动全局随机数
    assert first == generate(model, [1, 2], 30, seed=123)
    assert len({tuple(generate(model, [1, 2], 30, seed=s)) for s in range(5)}) > 1
    torch.manual_seed(7)
    a = generate(model, [1, 2], 30)
    torch.manual_seed(7)
    assert a == generate(model, [1, 2], 30)  # 不给种子时跟着全局随机数走


def test_empty_and_over_long_prompts():
    models = tiny_models(1, context_len=16)
    for model in models.values():
        with pytest.raises(ValueError, match="提示是空的"):
            generate(model, [], 5)
        with pytest.raises(ValueError, match="提示是空的"):
            beam_search(model, "", 2, 5, vocab=Vocab([["a"]]))
        assert generate(model, [], 8, strategy="greedy", bos_id=4) == generate(model, [4], 8, strategy="greedy")
        assert beam_search(model, [], 3, 8, bos_id=4) == beam_search(model, [4], 3, 8)
    gpt = models["gpt"]
    long_prompt = [i % 30 for i in range(50)]  # 比 context_len=16 长得多：只看最后 16 个
    expected = generate(gpt, long_prompt[-16:], 10, strategy="greedy")
    assert generate(gpt, long_prompt, 10, strategy="greedy") == expected
    assert generate(gpt, long_prompt, 10, strategy="greedy", use_cache=False) == expected
    assert generate(gpt, long_prompt, 0) == []


def test_text_prompts_stop_characters_and_special_tokens():
    vocab = Vocab([list("今天天气很好。我们去公园玩吧！")])
    table = torch.randn(len(vocab), len(vocab), generator=torch.Generator().manual_seed(0))
    table[:, [vocab.pad_id, vocab.unk_id]] += 10.0  # <pad>、<unk> 的 logit 远远最大：给了 vocab 也不能生成它们
    markov = MarkovModel(table)
    # 对照：不给 vocab（编号进、编号出）时什么都不禁止，贪心解码只会写 <pad>/<unk>——下面的检查因此能失败
    assert set(generate(markov, vocab.encode(list("今天")), 5, strategy="greedy")) <= {vocab.pad_id, vocab.unk_id}
    for seed in range(20):
        text = generate(markov, "今天", 12, vocab=vocab, seed=seed, stop_tokens=["。！"])
        assert isinstance(text, str) and "<" not in text
        assert all(ch in vocab for ch in text)
        assert all(ch not in "。！" for ch in text[:-1])  # 停止符只可能出现在最后
        if len(text) < 12:
            assert text[-1] in "。！"
    beam_text = beam_search(markov, "今天", 3, 8, vocab=vocab)
    assert isinstance(beam_text, str) and beam_text and "<" not in beam_text
    torch.manual_seed(0)
    model = GPTLanguageModel(len(vocab), d_model=16, num_heads=2, num_layers=1, context_len=32)
    ids = generate(model, vocab.encode(list("今天")), 12, seed=0)  # 没给 vocab：编号进，编号出
    assert isinstance(ids, list) and len(ids) == 12 and all(isinstance(i, int) for i in ids)
    model.train()
    generate(model, "今天", 3, vocab=vocab)
    assert model.training  # 生成完恢复原来的模式
    with pytest.raises(ValueError, match="vocab"):
        generate(model, [1], 3, stop_tokens=["。"])
    with pytest.raises(ValueError, match="不在词表里"):
        generate(model, "今天", 3, vocab=vocab, stop_tokens=["。？"])  # “？”不在词表里：永远停不下来
