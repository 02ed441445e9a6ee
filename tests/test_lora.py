"""手写的 LoRA（aigc_lib.models.lora）对照 Hugging Face 的 peft：同样的权重，同样的输出。"""

import copy

import pytest
import torch
from torch import nn

from aigc_lib.compress import count_parameters
from aigc_lib.models import GPT_TARGETS, GPTLanguageModel, LoRAGPT, LoRALinear, SplitEmbedding, add_lora, merge_lora

peft = pytest.importorskip("peft")


def small_gpt(seed: int) -> GPTLanguageModel:
    torch.manual_seed(seed)
    model = GPTLanguageModel(vocab_size=40, d_model=16, num_heads=4, num_layers=2, context_len=12, dropout=0.0)
    with torch.no_grad():  # 偏置原本是 0：随机化，免得某条路径碰巧对不上也看不出来
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def randomise_lora(model: nn.Module, seed: int) -> dict:
    """给每个 LoRALinear 的 A、B 随机赋值（B 不再是 0，否则支路不起作用、测不出错），返回 {模块名: (A, B)}。"""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            with torch.no_grad():
                module.lora_A.copy_(torch.randn(module.lora_A.shape, generator=gen))
                module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=gen))
            weights[name] = (module.lora_A.detach().clone(), module.lora_B.detach().clone())
    return weights


def peft_model(base: nn.Module, rank: int, alpha: float, targets, weights: dict):
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
    model = peft.get_peft_model(base, config)
    copied = 0
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict) and "default" in module.lora_A:
            ours = name.removeprefix("base_model.model.")
            A, B = weights[ours]
            with torch.no_grad():
                module.lora_A["default"].weight.copy_(A)
                module.lora_B["default"].weight.copy_(B)
            copied += 1
    assert copied == len(weights)
    return model.eval()


@pytest.mark.parametrize("rank,alpha", [(1, 1.0), (2, 4.0), (4, 8.0), (8, 3.0)])
@pytest.mark.parametrize("targets", [GPT_TARGETS, ("q_proj", "v_proj"), ("mlp.0", "mlp.2")])
def test_lora_matches_peft(rank, alpha, targets):
    for seed in range(3):
        base = small_gpt(seed)
        ours = copy.deepcopy(base)
        replaced = add_lora(ours, rank, alpha, targets=targets)
        assert len(replaced) == 2 * sum(1 for t in targets if t in GPT_TARGETS)  # 两层，每层每个目标一个
        weights = randomise_lora(ours, seed + 100)
        theirs = peft_model(copy.deepcopy(base), rank, alpha, targets, weights)
        tokens = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = theirs(tokens)
            got = ours.eval()(tokens)
            assert (got - base(tokens)).abs().max() > 1e-3  # 支路确实改变了输出
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
        # 两边可训练的参数一样多，且都只有 A、B
        assert count_parameters(ours, trainable_only=True) == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


@pytest.mark.parametrize("rank,alpha", [(1, 2.0), (3, 3.0), (8, 16.0)])
def test_merged_equals_unmerged(rank, alpha):
    for seed in range(4):
        model = small_gpt(seed).double()  # 随机的 A、B 很大：用 float64，差别只剩折回本身的误差
        add_lora(model, rank, alpha)
        randomise_lora(model, seed)
        tokens = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            unmerged = model(tokens)
            merge_lora(model)
            merged = model(tokens)
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        assert set(model.state_dict()) == set(small_gpt(0).state_dict())  # 折回后就是普通的 GPT
        torch.testing.assert_close(merged, unmerged, atol=1e-9, rtol=1e-9)


def test_delta_weight_is_scaled_product_by_hand():
    for seed in range(5):
        torch.manual_seed(seed)
        layer = LoRALinear(nn.Linear(7, 5), rank=3, alpha=6.0)
        nn.init.normal_(layer.lora_B)
        x = torch.randn(4, 7)
        by_hand = x @ layer.base.weight.T + layer.base.bias + 2.0 * (x @ layer.lora_A.T) @ layer.lora_B.T
        torch.testing.assert_close(layer(x), by_hand)
        torch.testing.assert_close(layer.merged()(x), by_hand, atol=1e-5, rtol=1e-5)


def test_only_a_and_b_are_trainable_and_start_as_identity():
    model = small_gpt(0)
    tokens = torch.randint(0, 40, (2, 12))
    before = model(tokens).detach()
    trainable_before, total_before = count_parameters(model, trainable_only=True), count_parameters(model)
    add_lora(model, rank=2, alpha=4)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(("lora_A", "lora_B")) for n in names)
    # 每层 6 个目标：4 个 16×16 投影、16->64、64->16；每个 r·(d_in + d_out)
    per_layer = 4 * 2 * (16 + 16) + 2 * (16 + 64) + 2 * (64 + 16)
    assert count_parameters(model, trainable_only=True) == 2 * per_layer
    assert count_parameters(model) == total_before + 2 * per_layer and trainable_before == total_before
    torch.testing.assert_close(model(tokens), before)  # B = 0：输出不变
    # 反向传播后只有 A、B 有梯度（B = 0 时 A 的梯度为 0，B 的梯度不为 0）
    model(tokens).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == set(names)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.endswith("lora_B"))


def test_add_lora_errors_in_chinese():
    with pytest.raises(ValueError, match="没有名字以"):
        add_lora(small_gpt(0), 2, targets=("nope",))
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(3, 3), rank=0)


# ---------------------------------------------------------------------------
# 扩大词表时：新 token 的词向量也训练（SplitEmbedding），旧行一点不动
# ---------------------------------------------------------------------------

GPT_CONFIG = dict(vocab_size=50, d_model=16, num_heads=2, num_layers=2, dim_feedforward=32, dropout=0.0, context_len=12)


def split_pair(seed: int, n_frozen: int = 40, rank: int = 2):
    """同样权重的普通 GPT 与 LoRAGPT(trainable_rows_from=n_frozen)；LoRA 的 B 是随机值（不是 0）。"""
    torch.manual_seed(seed)
    plain = GPTLanguageModel(**GPT_CONFIG)
    model = LoRAGPT(**GPT_CONFIG, lora_rank=rank, lora_alpha=4.0, trainable_rows_from=n_frozen)
    model.load_base_weights(plain.state_dict())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(0, 0.1)
    return plain, model


@pytest.mark.parametrize("seed", range(4))
def test_split_embedding_model_equals_its_merged_plain_gpt(seed):
    plain, model = split_pair(seed)
    tokens = torch.randint(0, GPT_CONFIG["vocab_size"], (3, 10), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(model.embedding(tokens), plain.embedding(tokens))
        before = model(tokens)
        merged = merge_lora(copy.deepcopy(model))
        torch.testing.assert_close(merged(tokens), before, atol=1e-5, rtol=1e-5)
    assert set(merged.state_dict()) == set(plain.state_dict())
    assert merged.head.weight is merged.embedding.weight  # 折回后输入输出重新共用同一个矩阵
    # 直接装进一个普通 GPT：与折回的模型输出相同
    rebuilt = GPTLanguageModel(**GPT_CONFIG)
    rebuilt.load_state_dict(merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(tokens), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_only_the_new_rows_and_lora_train_and_weight_decay_leaves_old_rows_alone(seed):
    plain, model = split_pair(seed)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"embedding.new"} | {n for n in trainable if n.endswith(("lora_A", "lora_B"))}
    lora = GPT_CONFIG["num_layers"] * 2 * (4 * (16 + 16) + (16 + 32) + (32 + 16))  # 层数 × 秩 × Σ(d_in + d_out)
    assert count_parameters(model, trainable_only=True) == lora + (50 - 40) * 16
    frozen_before = model.embedding.frozen.detach().clone()
    new_before = model.embedding.new.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    tokens = torch.randint(0, 50, (4, 11), generator=torch.Generator().manual_seed(seed))
    for _ in range(3):
        logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(model.embedding.frozen, frozen_before)
    assert not torch.allclose(model.embedding.new, new_before)
    assert len(optimizer.state) == len(trainable)  # AdamW 只给可训练的参数存状态


def test_the_new_rows_get_the_same_gradient_as_in_the_plain_gpt():
    """同样的权重、同样的数据：新行上的梯度 = 普通 GPT 词向量（与输出层共用）在这几行上的梯度。"""
    torch.manual_seed(0)
    plain = GPTLanguageModel(**GPT_CONFIG)
    model = LoRAGPT(**GPT_CONFIG, lora_rank=2, trainable_rows_from=40)
    model.load_base_weights(plain.state_dict())  # B = 0：与普通 GPT 完全相同
    tokens = torch.randint(0, 50, (4, 11), generator=torch.Generator().manual_seed(1))
    for m in (plain, model):
        logits = m(tokens[:, :-1])
        nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    torch.testing.assert_close(model.embedding.new.grad, plain.embedding.weight.grad[40:], atol=1e-6, rtol=1e-5)


def test_split_embedding_errors_in_chinese():
    with pytest.raises(ValueError, match="n_frozen 要在"):
        SplitEmbedding(nn.Embedding(10, 4), 10)
    with pytest.raises(ValueError, match="tie_weights=True"):
        LoRAGPT(**{**GPT_CONFIG, "tie_weights": False}, lora_rank=2, trainable_rows_from=40)
