"""aigc_lib.models.rnn：手写 RNN 单元对照 nn.RNN；分类器的补齐不变性、pack 与不 pack 一致、能过拟合小批。"""

import itertools
import random

import pytest
import torch
from torch import nn

from aigc_lib.data.batching import pad_batch
from aigc_lib.models.rnn import KerasStyleLSTM, RNNCell, RNNClassifier, unroll

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ATOL = {"cpu": 1e-5, "cuda": 1e-4}


# 每个家族 × 每种池化；双向和两层各挑几种组合，控制测试时间
FAMILIES = [
    dict(kind=kind, pooling=pooling, bidirectional=bi, num_layers=layers)
    for kind, pooling, (bi, layers) in itertools.product(
        ("rnn", "lstm", "gru"), ("last", "mean", "max"), ((False, 1), (True, 1), (True, 2))
    )
]


def family_id(cfg):
    return f"{cfg['kind']}-{cfg['pooling']}-{'bi' if cfg['bidirectional'] else 'uni'}{cfg['num_layers']}"


def small_classifier(seed=0, vocab_size=50, **cfg):
    torch.manual_seed(seed)
    return RNNClassifier(vocab_size, num_classes=3, embed_dim=12, hidden_dim=10, **cfg)


def random_batch(rng, n, vocab_size=50, min_len=1, max_len=12):
    seqs = [[rng.randrange(1, vocab_size) for _ in range(rng.randint(min_len, max_len))] for _ in range(n)]
    return seqs, *pad_batch(seqs)


# ---------------------------------------------------------------------------
# 手写 RNNCell
# ---------------------------------------------------------------------------


def test_rnn_cell_matches_nn_rnn_values_and_gradients():
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        B, T, I, H = (int(torch.randint(1, 9, (1,), generator=g)) for _ in range(4))
        torch.manual_seed(seed)
        reference = nn.RNN(I, H, batch_first=True)
        cell = RNNCell(I, H).load_from(reference)
        x = torch.randn(B, T, I, generator=g)
        h0 = torch.randn(B, H, generator=g) if seed % 2 else None

        expected_out, expected_h = reference(x, None if h0 is None else h0.unsqueeze(0))
        out, h = unroll(cell, x, h0)
        torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(h, expected_h[0], atol=1e-6, rtol=1e-5)

        # 反向传播也一致：手写的时间展开就是 nn.RNN 的计算
        (out.square().sum() + h.sum()).backward()
        (expected_out.square().sum() + expected_h.sum()).backward()
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            torch.testing.assert_close(getattr(cell, name).grad, getattr(reference, f"{name}_l0").grad, atol=1e-5, rtol=1e-4)


def test_rnn_cell_loads_deeper_layers_and_initialises_like_nn_rnn():
    torch.manual_seed(0)
    reference = nn.RNN(5, 7, num_layers=2, batch_first=True)
    x = torch.randn(3, 4, 5)
    first, _ = unroll(RNNCell(5, 7).load_from(reference, layer=0), x)
    second, _ = unroll(RNNCell(7, 7).load_from(reference, layer=1), first)
    torch.testing.assert_close(second, reference(x)[0])
    cell = RNNCell(5, 64)
    assert all(p.abs().max() <= 64**-0.5 for p in cell.parameters())
    with pytest.raises(ValueError, match="hidden_size"):
        RNNCell(5, 8).load_from(reference)
    with pytest.raises(ValueError, match="tanh"):
        RNNCell(5, 7).load_from(nn.RNN(5, 7, nonlinearity="relu"))


# ---------------------------------------------------------------------------
# 分类器：补齐不变性、pack 一致性
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", FAMILIES, ids=family_id)
def test_padding_does_not_change_the_output(cfg, device):
    rng = random.Random(FAMILIES.index(cfg))
    model = small_classifier(**cfg).to(device).eval()
    with torch.no_grad():
        for _ in range(3):
            seqs, tokens, lengths = random_batch(rng, rng.randint(2, 6))
            batched = model(tokens.to(device), lengths.to(device))  # 和更长的句子放在一批
            extra = torch.cat([tokens, torch.zeros(len(seqs), rng.randint(1, 5), dtype=torch.long)], dim=1)
            more_padding = model(extra.to(device), lengths.to(device))  # 再多补几个 0
            alone = torch.cat([model(torch.tensor([s], device=device), torch.tensor([len(s)], device=device)) for s in seqs])
            torch.testing.assert_close(batched, alone, atol=ATOL[device], rtol=1e-4)
            torch.testing.assert_close(more_padding, alone, atol=ATOL[device], rtol=1e-4)


@pytest.mark.parametrize("cfg", FAMILIES, ids=family_id)
def test_packed_and_unpacked_paths_agree_on_unpadded_input(cfg):
    packed = small_classifier(**cfg).eval()
    unpacked = RNNClassifier(**{**packed.config, "packed": False}).eval()
    unpacked.load_state_dict(packed.state_dict())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(5):
            B, T = (int(v) for v in torch.randint(1, 8, (2,), generator=g))
            tokens = torch.randint(1, 50, (B, T), generator=g)
            lengths = torch.full((B,), T)
            torch.testing.assert_close(packed(tokens, lengths), unpacked(tokens, lengths), atol=1e-5, rtol=1e-4)
        if cfg["pooling"] == "last":
            # 有补齐时不 pack 的路径会把 0 读进状态，结果就变了：这正是 pack 的意义
            tokens = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])
            lengths = torch.tensor([3])
            assert not torch.allclose(packed(tokens, lengths), unpacked(tokens, lengths), atol=1e-4)


def test_classifier_matches_hand_pooling_of_nn_rnn_outputs():
    # 参照：对每句单独（不补齐）跑 model.rnn，自己按定义做池化
    rng = random.Random(3)
    for cfg in FAMILIES:
        model = small_classifier(**cfg).eval()
        seqs, tokens, lengths = random_batch(rng, 4)
        with torch.no_grad():
            logits = model(tokens, lengths)
            for i, seq in enumerate(seqs):
                out, state = model.rnn(model.embedding(torch.tensor([seq])))  # (1, L, D*H)
                h_n = state[0] if cfg["kind"] == "lstm" else state
                if cfg["pooling"] == "last":
                    d = 2 if cfg["bidirectional"] else 1
                    feature = torch.cat(list(h_n[-d:, 0]))  # 最后一层的各个方向
                elif cfg["pooling"] == "mean":
                    feature = out[0].mean(0)
                else:
                    feature = out[0].max(0).values
                torch.testing.assert_close(logits[i], model.head(feature), atol=1e-5, rtol=1e-4)


def test_bad_token_ids_and_arguments_give_clear_errors():
    model = small_classifier(kind="lstm")
    with pytest.raises(ValueError, match="vocab_size=50"):
        model(torch.tensor([[3, 50]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="kind"):
        RNNClassifier(10, kind="transformer")
    with pytest.raises(ValueError, match="pooling"):
        RNNClassifier(10, pooling="first")


def test_config_rebuilds_the_model_and_pretrained_embeddings_are_used():
    torch.manual_seed(0)
    vectors = torch.randn(30, 6)
    model = RNNClassifier(30, kind="gru", bidirectional=True, pooling="max", pretrained_embeddings=vectors, freeze_embeddings=True)
    assert model.config["embed_dim"] == 6 and model.config["pretrained_embeddings"] is None
    torch.testing.assert_close(model.embedding.weight.detach()[1:], vectors[1:])
    assert model.embedding.weight[0].eq(0).all()  # 补齐符（padding_idx=0）的向量置 0，与 nn.Embedding 一致
    assert not model.embedding.weight.requires_grad
    rebuilt = RNNClassifier(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    tokens, lengths = pad_batch([[1, 2, 3], [4]])
    torch.testing.assert_close(rebuilt.eval()(tokens, lengths), model.eval()(tokens, lengths))
    keras = KerasStyleLSTM(vocab_size=40)
    assert type(keras)(**keras.config).config == keras.config
    with pytest.raises(ValueError, match="pretrained_embeddings"):
        RNNClassifier(31, pretrained_embeddings=vectors)


# ---------------------------------------------------------------------------
# 每个家族都能把一个小批背下来
# ---------------------------------------------------------------------------


def overfit(model, tokens, lengths, labels, loss_fn, steps=80, lr=0.01):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(tokens, lengths), labels)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return loss_fn(model(tokens, lengths), labels).item(), model(tokens, lengths)


@pytest.mark.parametrize(
    "cfg",
    [dict(kind="rnn"), dict(kind="lstm"), dict(kind="gru"), dict(kind="gru", bidirectional=True, pooling="mean"),
     dict(kind="lstm", bidirectional=True, num_layers=2, pooling="max", dropout=0.1)],
    ids=["rnn", "lstm", "gru", "bigru-mean", "bilstm2-max"],
)
def test_each_family_overfits_a_tiny_batch(cfg):
    rng = random.Random(0)
    torch.manual_seed(0)
    _, tokens, lengths = random_batch(rng, 12, min_len=3, max_len=10)
    labels = torch.tensor([i % 2 for i in range(12)])  # 随机的句子、任意的标签：只能靠记住
    model = RNNClassifier(50, embed_dim=32, hidden_dim=32, **cfg)
    loss, logits = overfit(model, tokens, lengths, labels, nn.CrossEntropyLoss())
    assert loss < 0.05
    assert (logits.argmax(-1) == labels).all()


def test_keras_style_lstm_overfits_with_bce_with_logits():
    rng = random.Random(1)
    torch.manual_seed(1)
    _, tokens, lengths = random_batch(rng, 12, vocab_size=10000, min_len=3, max_len=10)
    labels = torch.tensor([float(i % 2) for i in range(12)])
    model = KerasStyleLSTM()
    assert model.embedding.weight.shape == (10000, 64) and model.lstm.hidden_size == 64
    assert model.dense.out_features == 64 and model.out.out_features == 1
    bce = nn.BCEWithLogitsLoss()
    loss, logits = overfit(model, tokens, lengths, labels, lambda logits, y: bce(logits[:, 0], y))
    assert logits.shape == (12, 1)  # (B, num_classes)，与 Keras 的 Dense(1) 同形
    assert loss < 0.05
    assert ((logits[:, 0] > 0).float() == labels).all()
