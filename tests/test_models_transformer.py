"""aigc_lib.models.transformer：手写注意力对照 F.scaled_dot_product_attention 与 nn.MultiheadAttention，
编码器层对照 nn.TransformerEncoderLayer，位置编码对照公式，分类器的补齐不变性与过拟合。"""

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aigc_lib.data.batching import pad_batch
from aigc_lib.models.transformer import (
    LearnedPositions,
    MultiHeadAttention,
    SinusoidalPositions,
    TransformerClassifier,
    TransformerEncoderLayer,
    causal_mask,
    scaled_dot_product_attention_explicit,
    sinusoidal_positions,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ATOL = {"cpu": 1e-5, "cuda": 1e-4}



def random_shapes(n, seed=0):
    g = random.Random(seed)
    for _ in range(n):
        yield dict(B=g.randint(1, 4), H=g.randint(1, 4), Tq=g.randint(1, 9), Tk=g.randint(1, 9), d=g.randint(1, 16))


def key_padding(B, Tk, generator):
    """随机长度 (1..Tk) 的补齐掩码，True = 补齐。"""
    lengths = torch.randint(1, Tk + 1, (B,), generator=generator)
    return torch.arange(Tk)[None, :] >= lengths[:, None]  # (B, Tk)


# ---------------------------------------------------------------------------
# 缩放点积注意力
# ---------------------------------------------------------------------------


def test_causal_mask_matches_brute_force():
    for q_len, k_len in itertools.product(range(1, 7), range(1, 7)):
        expected = [[j <= i + (k_len - q_len) for j in range(k_len)] for i in range(q_len)]
        assert causal_mask(q_len, k_len).tolist() == expected


def test_explicit_attention_matches_a_python_loop():
    # 最朴素的参照：逐个查询用 math 算 softmax 再加权求和
    for shape in random_shapes(10, seed=1):
        Tq, Tk, d = shape["Tq"], shape["Tk"], shape["d"]
        g = torch.Generator().manual_seed(Tq * 100 + Tk * 10 + d)
        q, k, v = torch.randn(Tq, d, generator=g), torch.randn(Tk, d, generator=g), torch.randn(Tk, 3, generator=g)
        out, weights = scaled_dot_product_attention_explicit(q, k, v)
        for i in range(Tq):
            scores = [sum(q[i, c].item() * k[j, c].item() for c in range(d)) / math.sqrt(d) for j in range(Tk)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            probs = [e / sum(exps) for e in exps]
            assert weights[i].tolist() == pytest.approx(probs, abs=1e-5)
            expected = [sum(probs[j] * v[j, c].item() for j in range(Tk)) for c in range(3)]
            assert out[i].tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_explicit_and_fused_attention_agree_with_masks(device):
    for n, shape in enumerate(random_shapes(150, seed=2)):
        B, H, Tq, Tk, d = shape.values()
        g = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(B, H, T, d, generator=g).to(device) for T in (Tq, Tk, Tk))
        mask_kind = n % 4
        if mask_kind == 0:
            mask = None
        elif mask_kind == 1:  # 补齐掩码，对所有头和查询广播
            mask = ~key_padding(B, Tk, g)[:, None, None, :]
        elif mask_kind == 2:  # 任意掩码，允许出现整行都不许看的情况
            mask = torch.rand(B, H, Tq, Tk, generator=g) > 0.4
        else:
            mask = torch.rand(B, 1, Tq, Tk, generator=g) > 0.7
        mask = None if mask is None else mask.to(device)
        causal = n % 3 == 0

        out, weights = scaled_dot_product_attention_explicit(q, k, v, mask=mask, causal=causal)
        allowed = torch.ones(B, H, Tq, Tk, dtype=torch.bool, device=device)
        if mask is not None:
            allowed = allowed & mask
        if causal:
            allowed = allowed & causal_mask(Tq, Tk, device=device)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        has_any = allowed.any(-1)  # (B, H, Tq)：这一行至少能看一个键
        # 整行都不许看时各实现的约定可能不同（CPU 上融合实现也给 0），只比较有定义的行
        torch.testing.assert_close(out[has_any], expected[has_any], atol=ATOL[device], rtol=1e-4)
        assert (out[~has_any] == 0).all()

        # 权重：可看的键上每行和为 1，不许看的键上恰好为 0；整行都不许看时全为 0
        assert (weights[~allowed] == 0).all()
        row_sums = weights.sum(-1)
        torch.testing.assert_close(row_sums[has_any], torch.ones_like(row_sums[has_any]))
        assert (row_sums[~has_any] == 0).all()


def test_explicit_causal_matches_fused_is_causal_for_square_inputs():
    for n, shape in enumerate(random_shapes(40, seed=3)):
        B, H, T, _, d = shape.values()
        g = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(B, H, T, d, generator=g) for _ in range(3))
        out, _ = scaled_dot_product_attention_explicit(q, k, v, causal=True)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=1e-4)


def test_explicit_attention_rejects_non_boolean_masks():
    q = torch.randn(1, 2, 4)
    with pytest.raises(TypeError, match="torch.bool"):
        scaled_dot_product_attention_explicit(q, q, q, mask=torch.ones(2, 2))


# ---------------------------------------------------------------------------
# 多头注意力与编码器层
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_multi_head_attention_paths_agree_and_match_nn_multihead_attention(device):
    for n in range(30):
        g = torch.Generator().manual_seed(n)
        num_heads = [1, 2, 4][n % 3]
        d_model = num_heads * (2 + n % 5)
        B, Tq = 1 + n % 3, 1 + n % 7
        Tk = Tq if n % 2 else 1 + (n * 5) % 8  # 自注意力和交叉注意力都测
        torch.manual_seed(n)
        mha = MultiHeadAttention(d_model, num_heads).to(device).eval()
        query = torch.randn(B, Tq, d_model, generator=g).to(device)
        memory = query if Tq == Tk else torch.randn(B, Tk, d_model, generator=g).to(device)
        padding = key_padding(B, Tk, g).to(device)
        causal = Tq == Tk and n % 4 == 1

        fused, none = mha(query, memory, memory, key_padding_mask=padding, causal=causal)
        explicit, weights = mha(query, memory, memory, key_padding_mask=padding, causal=causal, need_weights=True)
        assert none is None and weights.shape == (B, num_heads, Tq, Tk)
        torch.testing.assert_close(fused, explicit, atol=ATOL[device], rtol=1e-4)

        # 参照：把同样的权重装进 PyTorch 自带的 nn.MultiheadAttention
        reference = nn.MultiheadAttention(d_model, num_heads, batch_first=True).to(device).eval()
        with torch.no_grad():
            reference.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
            reference.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
            reference.out_proj.load_state_dict(mha.out_proj.state_dict())
        attn_mask = ~causal_mask(Tq, Tk, device=device) if causal else None  # nn.MultiheadAttention：True = 不许看
        expected, expected_weights = reference(
            query, memory, memory, key_padding_mask=padding, attn_mask=attn_mask, average_attn_weights=False
        )
        torch.testing.assert_close(explicit, expected, atol=ATOL[device], rtol=1e-4)
        torch.testing.assert_close(weights, expected_weights, atol=ATOL[device], rtol=1e-4)
        assert (weights.masked_select(padding[:, None, None, :]) == 0).all()


def test_causal_attention_with_a_shorter_query_is_what_a_kv_cache_needs():
    # 只算最后 Tq 个位置（带 KV 缓存生成时的情形）= 算全部位置后取最后 Tq 行
    for n in range(20):
        torch.manual_seed(n)
        mha = MultiHeadAttention(8, 2).eval()
        T, Tq = 2 + n % 6, 1 + n % 2
        x = torch.randn(2, T, 8)
        q, k, v = mha.split_heads(mha.q_proj(x)), mha.split_heads(mha.k_proj(x)), mha.split_heads(mha.v_proj(x))
        full, _ = mha.attend(q, k, v, causal=True)
        for need_weights in (False, True):
            last, _ = mha.attend(q[:, :, -Tq:], k, v, causal=True, need_weights=need_weights)
            torch.testing.assert_close(last, full[:, :, -Tq:], atol=1e-6, rtol=1e-5)


def test_encoder_layer_matches_nn_transformer_encoder_layer():
    for n in range(12):
        g = torch.Generator().manual_seed(n)
        num_heads, B, T = [1, 2, 4][n % 3], 1 + n % 3, 2 + n % 6
        d_model, ff = num_heads * 4, 8 + n
        torch.manual_seed(n)
        layer = TransformerEncoderLayer(d_model, num_heads, dim_feedforward=ff, dropout=0.0)
        reference = nn.TransformerEncoderLayer(
            d_model, num_heads, ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        with torch.no_grad():
            attn = layer.attn
            reference.self_attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            reference.self_attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
            reference.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
            reference.linear1.load_state_dict(layer.ff[0].state_dict())
            reference.linear2.load_state_dict(layer.ff[3].state_dict())
            reference.norm1.load_state_dict(layer.norm1.state_dict())
            reference.norm2.load_state_dict(layer.norm2.state_dict())
        x = torch.randn(B, T, d_model, generator=g)
        padding = key_padding(B, T, g)
        out, _ = layer(x, key_padding_mask=padding)
        expected = reference(x, src_key_padding_mask=padding)
        real = ~padding
        torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-4)


def test_multi_head_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="整除"):
        MultiHeadAttention(10, 3)


# ---------------------------------------------------------------------------
# 位置编码
# ---------------------------------------------------------------------------


def test_sinusoidal_positions_match_the_formula():
    for context_len, d_model in [(1, 2), (7, 5), (20, 16), (50, 33)]:
        table = sinusoidal_positions(context_len, d_model)
        assert table.shape == (context_len, d_model)
        for pos in range(context_len):
            for i in range(d_model):
                angle = pos / 10000 ** ((i - i % 2) / d_model)
                expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
                assert table[pos, i].item() == pytest.approx(expected, abs=1e-4)


def test_position_modules_add_the_right_rows():
    for start, T in [(0, 5), (3, 4), (10, 1)]:
        x = torch.randn(2, T, 6)
        sinus = SinusoidalPositions(6, context_len=16)
        torch.testing.assert_close(sinus(x, start=start), x + sinusoidal_positions(16, 6)[start : start + T])
        learned = LearnedPositions(6, context_len=16)
        torch.testing.assert_close(learned(x, start=start), x + learned.table.weight[start : start + T])
    assert "table" not in SinusoidalPositions(6).state_dict()  # 由公式决定，不进检查点
    with pytest.raises(ValueError, match="context_len=4"):
        SinusoidalPositions(6, context_len=4)(torch.randn(1, 5, 6))


# ---------------------------------------------------------------------------
# 分类器
# ---------------------------------------------------------------------------

CLASSIFIERS = [
    dict(positions=p, pooling=pool) for p, pool in itertools.product(("sinusoidal", "learned"), ("mean", "cls"))
]


def small_transformer(seed=0, **cfg):
    torch.manual_seed(seed)
    return TransformerClassifier(50, num_classes=3, d_model=16, num_heads=4, num_layers=2, dim_feedforward=32, context_len=32, **cfg)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", CLASSIFIERS, ids=lambda c: f"{c['positions']}-{c['pooling']}")
def test_padding_does_not_change_the_output(cfg, device):
    rng = random.Random(0)
    model = small_transformer(**cfg).to(device).eval()
    with torch.no_grad():
        for _ in range(5):
            seqs = [[rng.randrange(1, 50) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(2, 6))]
            tokens, lengths = pad_batch(seqs)
            batched = model(tokens.to(device), lengths.to(device))
            extra = torch.cat([tokens, torch.zeros(len(seqs), rng.randint(1, 5), dtype=torch.long)], dim=1)
            more_padding = model(extra.to(device), lengths.to(device))
            alone = torch.cat([model(torch.tensor([s], device=device), torch.tensor([len(s)], device=device)) for s in seqs])
            for got in (batched, more_padding):
                torch.testing.assert_close(got, alone, atol=ATOL[device], rtol=1e-4)


@pytest.mark.parametrize("cfg", CLASSIFIERS, ids=lambda c: f"{c['positions']}-{c['pooling']}")
def test_attention_weights(cfg):
    model = small_transformer(**cfg).eval()
    tokens, lengths = pad_batch([[5, 6, 7, 8], [9, 10], [11]])
    with torch.no_grad():
        attentions = model.attention_weights(tokens, lengths)
    extra = 1 if cfg["pooling"] == "cls" else 0
    T = tokens.shape[1] + extra
    real = torch.arange(T)[None, :] < (lengths + extra)[:, None]  # (B, T)
    assert len(attentions) == 2
    for weights in attentions:
        assert weights.shape == (3, 4, T, T)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, T))
        assert (weights.masked_select(~real[:, None, None, :]) == 0).all()


@pytest.mark.parametrize("cfg", CLASSIFIERS, ids=lambda c: f"{c['positions']}-{c['pooling']}")
def test_transformer_overfits_a_tiny_batch(cfg):
    rng = random.Random(0)
    torch.manual_seed(0)
    tokens, lengths = pad_batch([[rng.randrange(1, 50) for _ in range(rng.randint(3, 10))] for _ in range(12)])
    labels = torch.tensor([i % 2 for i in range(12)])
    model = TransformerClassifier(50, d_model=32, num_heads=4, num_layers=2, dim_feedforward=64, dropout=0.1, **cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(tokens, lengths), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(tokens, lengths)
    assert F.cross_entropy(logits, labels).item() < 0.05
    assert (logits.argmax(-1) == labels).all()


def test_config_rebuilds_the_model_and_errors_are_clear():
    torch.manual_seed(0)
    vectors = torch.randn(50, 16)
    model = small_transformer(positions="learned", pooling="cls", pretrained_embeddings=vectors).eval()
    torch.testing.assert_close(model.embedding.weight.detach()[1:], vectors[1:])
    assert model.embedding.weight[0].eq(0).all()  # 补齐符的向量置 0
    assert model.config["pretrained_embeddings"] is None
    rebuilt = TransformerClassifier(**model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    tokens, lengths = pad_batch([[1, 2, 3], [4]])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(tokens, lengths), model(tokens, lengths))
    with pytest.raises(ValueError, match="context_len=32"):
        model(torch.ones(1, 33, dtype=torch.long), torch.tensor([33]))
    with pytest.raises(ValueError, match="vocab_size=50"):
        model(torch.tensor([[60]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="d_model"):
        TransformerClassifier(50, d_model=32, pretrained_embeddings=vectors)
    with pytest.raises(ValueError, match="positions"):
        TransformerClassifier(50, positions="rotary")
