"""语言模型：GPT 解码器层对照 nn.TransformerEncoderLayer（因果），KV 缓存 / LSTM 状态与整段前向逐元素一致，
因果性，权重共用与初始化，两种模型都能经 fit 过拟合一个小批，配置重建与错误信息。"""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aigc_lib.models import GPTBlock, GPTLanguageModel, KVCache, LSTMLanguageModel, LSTMState
from aigc_lib.models.transformer import causal_mask
from aigc_lib.core.training import fit

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ATOL = {"cpu": 1e-5, "cuda": 1e-4}


def random_gpt(seed, vocab_size=40, context_len=24, dropout=0.0, **overrides):
    rng = random.Random(seed)
    heads = rng.choice([1, 2, 4])
    cfg = dict(d_model=heads * rng.choice([4, 8]), num_heads=heads, num_layers=rng.randint(1, 3),
               dim_feedforward=rng.choice([None, 24]), dropout=dropout, context_len=context_len,
               tie_weights=rng.random() < 0.5)
    cfg.update(overrides)
    torch.manual_seed(seed)
    return GPTLanguageModel(vocab_size, **cfg)


def random_lstm(seed, vocab_size=40, dropout=0.0):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    return LSTMLanguageModel(vocab_size, embed_dim=rng.choice([8, 12]), hidden_dim=rng.choice([8, 16]),
                             num_layers=rng.randint(1, 2), dropout=dropout, tie_weights=rng.random() < 0.5)


def random_chunks(total, rng):
    """把长度 total 随机切成若干段（每段 >= 1），模拟“提示一次读入、之后一次一个或几个字”。"""
    cuts, position = [], 0
    while position < total:
        step = rng.choice([1, 1, 1, 2, 3, 5])
        cuts.append(min(step, total - position))
        position += cuts[-1]
    return cuts


# ---------------------------------------------------------------------------
# GPT 的一层 = 因果掩码下的 pre-norm 编码器层
# ---------------------------------------------------------------------------


def test_gpt_block_matches_nn_transformer_encoder_layer_with_causal_mask():
    for n in range(12):
        g = torch.Generator().manual_seed(n)
        heads, B, T = [1, 2, 4][n % 3], 1 + n % 3, 1 + n % 7
        d_model, ff = heads * 4, 12
        torch.manual_seed(n)
        block = GPTBlock(d_model, heads, ff).eval()
        reference = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True).eval()
        attn = block.attn
        with torch.no_grad():
            reference.self_attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            reference.self_attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
            reference.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
            reference.linear1.load_state_dict(block.mlp[0].state_dict())
            reference.linear2.load_state_dict(block.mlp[2].state_dict())
            reference.norm1.load_state_dict(block.norm1.state_dict())
            reference.norm2.load_state_dict(block.norm2.state_dict())
        x = torch.randn(B, T, d_model, generator=g)
        expected = reference(x, src_mask=~causal_mask(T, T), is_causal=True)  # nn：True = 不许看
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------
# KV 缓存与 LSTM 状态：分段读入 == 一次读完
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_cached_chunks_give_the_same_logits_as_one_full_forward(family, device):
    for seed in range(25):
        rng = random.Random(seed)
        model = (random_gpt(seed) if family == "gpt" else random_lstm(seed)).to(device).eval()
        B, T = rng.randint(1, 3), rng.randint(1, 24)
        tokens = torch.randint(0, 40, (B, T), generator=torch.Generator().manual_seed(seed)).to(device)
        with torch.no_grad():
            full = model(tokens)  # (B, T, V)
            cache = model.new_cache(B)
            pieces, start = [], 0
            for size in random_chunks(T, rng):
                pieces.append(model(tokens[:, start : start + size], cache=cache))
                start += size
                assert cache.length == start
            chunked = torch.cat(pieces, dim=1)
            last = model(tokens, last_only=True)
        torch.testing.assert_close(chunked, full, atol=ATOL[device], rtol=1e-4)
        torch.testing.assert_close(last, full[:, -1:], atol=ATOL[device], rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_reordered_cache_continues_the_selected_sequences(family):
    for seed in range(10):
        model = (random_gpt(seed) if family == "gpt" else random_lstm(seed)).eval()
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, 40, (3, 10), generator=g)
        index = torch.randint(0, 3, (4,), generator=g)  # 束搜索：复制、丢弃、换顺序
        extra = torch.randint(0, 40, (4, 2), generator=g)
        with torch.no_grad():
            cache = model.new_cache(3)
            model(tokens, cache=cache)
            cache.reorder(index)
            continued = model(extra, cache=cache)
            expected = model(torch.cat([tokens[index], extra], dim=1))[:, -2:]
        torch.testing.assert_close(continued, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_future_tokens_never_change_earlier_logits(family):
    for seed in range(15):
        model = (random_gpt(seed) if family == "gpt" else random_lstm(seed)).eval()
        g = torch.Generator().manual_seed(100 + seed)
        tokens = torch.randint(0, 40, (2, 16), generator=g)
        cut = int(torch.randint(1, 16, (1,), generator=g))
        changed = tokens.clone()
        changed[:, cut:] = torch.randint(0, 40, (2, 16 - cut), generator=g)
        with torch.no_grad():
            torch.testing.assert_close(model(tokens)[:, :cut], model(changed)[:, :cut], atol=1e-6, rtol=1e-5)


def test_kv_cache_stores_exactly_the_projected_keys_and_values():
    model = random_gpt(3, num_layers=2).eval()
    tokens = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(3))
    cache = model.new_cache(2)
    with torch.no_grad():
        model(tokens, cache=cache)
        x = model.positions(model.embedding(tokens))
        for layer, block in enumerate(model.blocks):
            h = block.norm1(x)
            torch.testing.assert_close(cache.keys[layer, :, :, :7], block.attn.split_heads(block.attn.k_proj(h)))
            torch.testing.assert_close(cache.values[layer, :, :, :7], block.attn.split_heads(block.attn.v_proj(h)))
            x = block(x)
    assert isinstance(cache, KVCache) and cache.length == 7 and cache.keys.shape[3] == model.context_len


# ---------------------------------------------------------------------------
# 权重共用、参数量、初始化
# ---------------------------------------------------------------------------


def test_weight_tying_and_parameter_count_match_the_formula():
    for seed in range(8):
        model = random_gpt(seed)
        c, L, V, T = model.config["d_model"], model.config["num_layers"], 40, model.context_len
        ff = model.config["dim_feedforward"]
        per_block = 4 * (c * c + c) + (c * ff + ff) + (ff * c + c) + 2 * 2 * c
        expected = V * c + T * c + L * per_block + 2 * c + (0 if model.config["tie_weights"] else V * c)
        assert sum(p.numel() for p in model.parameters()) == expected
        assert (model.head.weight is model.embedding.weight) == model.config["tie_weights"]

        lstm = random_lstm(seed)
        cfg = lstm.config
        E, H, layers = cfg["embed_dim"], cfg["hidden_dim"], cfg["num_layers"]
        recurrent = sum(4 * H * ((E if i == 0 else H) + H) + 8 * H for i in range(layers))
        if cfg["tie_weights"]:
            expected = V * E + recurrent + (H * E + E if H != E else 0) + V
        else:
            expected = V * E + recurrent + H * V + V
        assert sum(p.numel() for p in lstm.parameters()) == expected
        assert (lstm.head.weight is lstm.embedding.weight) == cfg["tie_weights"]


def test_gpt_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    model = GPTLanguageModel(2000, d_model=128, num_heads=4, num_layers=8, tie_weights=False)
    residual = 0.02 / math.sqrt(2 * 8)
    for block in model.blocks:
        assert block.attn.out_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.mlp[2].weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.mlp[0].bias.abs().max().item() == 0.0
    assert model.head.weight.std().item() == pytest.approx(0.02, rel=0.05)
    # 初始时模型几乎不偏向任何字：损失接近均匀分布的 log V
    tokens = torch.randint(0, 2000, (4, 64))
    loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
    assert abs(loss.item() - math.log(2000)) < 0.1


# ---------------------------------------------------------------------------
# 经 fit 过拟合一个小批
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_language_models_overfit_a_tiny_batch_through_fit(family):
    torch.manual_seed(0)
    sequences = torch.randint(2, 30, (8, 17))
    x, y = sequences[:, :-1], sequences[:, 1:]  # 下一个字
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    if family == "gpt":
        model = GPTLanguageModel(30, d_model=32, num_heads=4, num_layers=2, dropout=0.0, context_len=16)
    else:
        model = LSTMLanguageModel(30, embed_dim=32, hidden_dim=64, num_layers=1, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = fit(model, loader, epochs=150, optimizer=optimizer, progress=False)
    assert history.records[-1]["train_loss"] < 0.05
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(-1) == y).all()


# ---------------------------------------------------------------------------
# 配置重建与错误信息
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_config_rebuilds_the_same_model(family):
    model = (random_gpt(5) if family == "gpt" else random_lstm(5)).eval()
    rebuilt = type(model)(**model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(tokens), model(tokens))


def test_errors_are_clear():
    model = GPTLanguageModel(40, d_model=8, num_heads=2, num_layers=1, context_len=8)
    with pytest.raises(ValueError, match="context_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="缓存里已有 6 个位置"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="new_cache\\(2\\)"):
        model(torch.zeros(2, 1, dtype=torch.long), cache=model.new_cache(1))
    with pytest.raises(ValueError, match="vocab_size=40"):
        model(torch.tensor([[40]]))
    lstm = LSTMLanguageModel(40, embed_dim=8, hidden_dim=8)
    with pytest.raises(ValueError, match="new_cache\\(3\\)"):
        lstm(torch.zeros(3, 2, dtype=torch.long), cache=LSTMState(1))
    assert lstm.context_len is None  # LSTM 没有上下文长度的限制
    assert lstm(torch.zeros(1, 300, dtype=torch.long)).shape == (1, 300, 40)
