"""aigc_lib.models.layers 与所有家族共同的接口：长度掩码对照暴力循环，分类器的输出形状，
注意力权重对照 nn.MultiheadAttention，空句子在每个家族里报同一个错，越界词编号与调试开关。"""

import random

import pytest
import torch
from torch import nn

from aigc_lib.data.batching import pad_batch
from aigc_lib.models import layers
from aigc_lib.models.layers import check_lengths, check_token_ids, length_mask
from aigc_lib.models.rnn import KerasStyleLSTM, RNNClassifier
from aigc_lib.models.tagger import BiLSTMTagger
from aigc_lib.models.transformer import TransformerClassifier

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
V = 40


def test_length_mask_matches_a_loop():
    rng = random.Random(0)
    for _ in range(200):
        B, T = rng.randint(1, 6), rng.randint(0, 9)
        lengths = torch.tensor([rng.randint(0, T) for _ in range(B)])
        expected = [[t < int(lengths[b]) for t in range(T)] for b in range(B)]
        mask = length_mask(lengths, T)
        assert mask.dtype == torch.bool and mask.shape == (B, T)
        assert mask.tolist() == expected


# 每个家族的几种构造；KerasStyleLSTM 只有 1 个类别 logit（Keras 的 Dense(1)）
CLASSIFIERS = {
    "rnn-last": lambda: RNNClassifier(V, num_classes=3, kind="rnn", embed_dim=8, hidden_dim=8),
    "bilstm-mean": lambda: RNNClassifier(V, num_classes=4, kind="lstm", embed_dim=8, hidden_dim=8, bidirectional=True, pooling="mean"),
    "gru2-max": lambda: RNNClassifier(V, num_classes=2, kind="gru", embed_dim=8, hidden_dim=8, num_layers=2, pooling="max"),
    "gru-unpacked": lambda: RNNClassifier(V, num_classes=2, kind="gru", embed_dim=8, hidden_dim=8, packed=False),
    "keras": lambda: KerasStyleLSTM(V, embed_dim=8, hidden_dim=8, dense_dim=8),
    "transformer-mean": lambda: TransformerClassifier(V, num_classes=3, d_model=8, num_heads=2, dim_feedforward=16, context_len=16),
    "transformer-cls": lambda: TransformerClassifier(V, num_classes=5, d_model=8, num_heads=2, dim_feedforward=16, context_len=16,
                                                     pooling="cls", positions="learned"),
}
NUM_CLASSES = {"rnn-last": 3, "bilstm-mean": 4, "gru2-max": 2, "gru-unpacked": 2, "keras": 1,
               "transformer-mean": 3, "transformer-cls": 5}
FAMILIES = {**CLASSIFIERS, "tagger": lambda: BiLSTMTagger(V, num_tags=5, embed_dim=8, hidden_dim=8),
            "tagger-softmax": lambda: BiLSTMTagger(V, num_tags=5, embed_dim=8, hidden_dim=8, use_crf=False)}


def random_batch(rng, min_len=1):
    seqs = [[rng.randrange(1, V) for _ in range(rng.randint(min_len, 12))] for _ in range(rng.randint(1, 6))]
    return pad_batch(seqs)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_returns_batch_by_classes_logits(name):
    rng = random.Random(0)
    torch.manual_seed(0)
    model = CLASSIFIERS[name]().eval()
    with torch.no_grad():
        for _ in range(10):
            tokens, lengths = random_batch(rng)
            logits = model(tokens, lengths)
            assert isinstance(logits, torch.Tensor) and logits.shape == (len(lengths), NUM_CLASSES[name])


@pytest.mark.parametrize("name", ["tagger", "tagger-softmax"])
def test_tagger_forward_returns_emissions(name):
    rng = random.Random(1)
    model = FAMILIES[name]().eval()
    with torch.no_grad():
        for _ in range(5):
            tokens, lengths = random_batch(rng)
            assert model(tokens, lengths).shape == (*tokens.shape, 5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_attention_weights_match_torch_multihead_attention(pooling):
    """每层的权重 = nn.MultiheadAttention（同样的投影权重）对该层 LayerNorm 后输入的逐头权重。"""
    rng = random.Random(2)
    torch.manual_seed(2)
    model = TransformerClassifier(V, d_model=12, num_heads=3, num_layers=3, dim_feedforward=16, context_len=16,
                                  pooling=pooling).eval()
    for _ in range(5):
        tokens, lengths = random_batch(rng)
        B, T = tokens.shape
        with torch.no_grad():
            got = model.attention_weights(tokens, lengths)
            x = model.positions(model.embedding(tokens))  # (B, T, C)
            real = length_mask(lengths, T)
            if pooling == "cls":
                x = torch.cat([model.cls.expand(B, -1, -1), x], dim=1)
                real = torch.cat([real.new_ones(B, 1), real], dim=1)
            assert len(got) == 3
            for layer, weights in zip(model.layers, got):
                attn = layer.attn
                reference = nn.MultiheadAttention(12, 3, batch_first=True)
                reference.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
                reference.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
                h = layer.norm1(x)
                _, expected = reference(h, h, h, key_padding_mask=~real, need_weights=True, average_attn_weights=False)
                torch.testing.assert_close(weights, expected, atol=1e-5, rtol=1e-4)
                x, _ = layer(x, key_padding_mask=~real)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FAMILIES)
def test_empty_sequences_raise_the_same_error_in_every_family(name, device, monkeypatch):
    monkeypatch.setenv("AIGC_DEBUG", "1")  # GPU 上的 Transformer 只在调试开关下检查
    model = FAMILIES[name]().to(device).eval()
    rng = random.Random(3)
    for _ in range(5):
        seqs = [[rng.randrange(1, V) for _ in range(rng.randint(1, 6))] for _ in range(6)]
        empty = sorted(rng.sample(range(6), rng.randint(1, 3)))
        for i in empty:
            seqs[i] = []
        tokens, lengths = pad_batch(seqs)
        positions = "、".join(map(str, empty))
        with pytest.raises(ValueError, match=f"这批第 {positions} 条（从 0 数）是空句子"):
            model(tokens.to(device), lengths.to(device))


@pytest.mark.parametrize("name", FAMILIES)
def test_out_of_range_ids_give_the_clear_error_in_every_family(name):
    model = FAMILIES[name]().eval()
    for bad in (V, V + 7, -1):
        with pytest.raises(ValueError, match=f"vocab_size={V}"):
            model(torch.tensor([[1, bad, 2]]), torch.tensor([3]))
    with pytest.raises(TypeError, match="torch.long"):
        model(torch.tensor([[1.0, 2.0]]), torch.tensor([2]))


def test_value_checks_run_on_cpu_and_on_accelerators_only_with_the_debug_switch(monkeypatch):
    monkeypatch.delenv("AIGC_DEBUG", raising=False)
    monkeypatch.setattr(layers, "DEBUG", False)
    meta = torch.empty(2, 3, dtype=torch.long, device="meta")  # 代替 GPU 张量：看数值就会出错
    check_token_ids(meta, 10)  # 不看数值，所以不报错（GPU 上也就不同步）
    check_lengths(torch.empty(2, dtype=torch.long, device="meta"), 3)
    with pytest.raises(ValueError, match="空句子"):
        check_lengths(torch.tensor([2, 0]), 3)  # CPU 上总是检查
    with pytest.raises(ValueError, match="只有 3 个位置"):
        check_lengths(torch.tensor([4, 1]), 3)
    for switch_on in (lambda: monkeypatch.setenv("AIGC_DEBUG", "1"), lambda: monkeypatch.setattr(layers, "DEBUG", True)):
        monkeypatch.delenv("AIGC_DEBUG", raising=False)
        monkeypatch.setattr(layers, "DEBUG", False)
        assert not layers.debug_checks_enabled()
        switch_on()
        assert layers.debug_checks_enabled()
        with pytest.raises(RuntimeError, match="meta"):  # 打开开关后连 meta 张量也要看数值
            check_token_ids(meta, 10)
    monkeypatch.setenv("AIGC_DEBUG", "0")
    monkeypatch.setattr(layers, "DEBUG", False)
    assert not layers.debug_checks_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="需要 CUDA")
def test_out_of_range_ids_on_cuda_give_the_clear_error_with_the_debug_switch(monkeypatch):
    monkeypatch.setenv("AIGC_DEBUG", "1")
    for name, build in FAMILIES.items():
        model = build().cuda().eval()
        with pytest.raises(ValueError, match=f"vocab_size={V}"):
            model(torch.tensor([[1, V, 2]], device="cuda"), torch.tensor([3], device="cuda"))
