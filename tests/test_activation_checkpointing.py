"""激活检查点：打开后损失和每个参数的梯度与不打开时完全相同（含 dropout），几步训练后参数也相同；
评估、生成时不起作用；它不是权重，检查点互相加载；lm 任务的 --checkpoint-activations 传到模型上。"""

import random

import pytest
import torch
import torch.nn.functional as F

from aigc_lib.cli import _parser, _size_overrides
from aigc_lib.models import GPTLanguageModel
from aigc_lib.scale import measure_saved_activations
from aigc_lib.tasks import get_task

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gpt_pair(seed, dropout, device="cpu"):
    """同一份权重的两个 GPT：一个不打开、一个打开激活检查点。"""
    rng = random.Random(seed)
    heads = rng.choice([1, 2, 4])
    cfg = dict(d_model=heads * rng.choice([4, 8]), num_heads=heads, num_layers=rng.randint(1, 3),
               dim_feedforward=rng.choice([None, 24]), dropout=dropout, context_len=16,
               tie_weights=rng.random() < 0.5)
    torch.manual_seed(seed)
    plain = GPTLanguageModel(40, **cfg).to(device).train()
    checkpointed = GPTLanguageModel(40, **cfg, checkpoint_activations=True).to(device).train()
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed


def loss_and_grads(model, x, y, seed):
    torch.manual_seed(seed)  # 两个模型的 dropout 掩码从同一个随机数状态开始
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dropout", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("seed", range(6))
def test_same_loss_and_gradients(seed, dropout, device):
    plain, checkpointed = gpt_pair(seed, dropout, device)
    gen = torch.Generator().manual_seed(seed)
    B, T = 1 + seed % 3, 4 + 2 * seed
    x, y = (torch.randint(0, 40, (B, T), generator=gen).to(device) for _ in range(2))
    loss_a, grads_a = loss_and_grads(plain, x, y, seed)
    loss_b, grads_b = loss_and_grads(checkpointed, x, y, seed)
    assert torch.equal(loss_a, loss_b)
    for name in grads_a:
        if device == "cpu":  # 重算做的是完全相同的运算：CPU 上逐位相同
            assert torch.equal(grads_a[name], grads_b[name]), name
        else:
            assert torch.allclose(grads_a[name], grads_b[name], rtol=0, atol=1e-6), name
    if dropout > 0:
        # dropout 真的起作用：换一个随机数状态，损失就变了（否则上面的比较说明不了随机数状态被恢复）
        assert not torch.equal(loss_and_grads(checkpointed, x, y, seed + 100)[0], loss_b)


def test_training_steps_identical():
    """AdamW 训练 4 步（dropout 0.2）：两个模型的参数逐元素相同。"""
    plain, checkpointed = gpt_pair(3, 0.2)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (plain, checkpointed)]
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        x, y = (torch.randint(0, 40, (4, 12), generator=gen) for _ in range(2))
        for model, optimizer in zip((plain, checkpointed), optimizers):
            loss_and_grads(model, x, y, seed=step)
            optimizer.step()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


def test_only_active_when_training_with_grad():
    """只在 train() 且需要梯度、不带 KV 缓存时重算；评估和生成的结果与存下的激活都与不打开时相同。"""
    plain, checkpointed = gpt_pair(1, 0.1)
    x = torch.randint(0, 40, (2, 10))
    saved_train = [measure_saved_activations(m, lambda: (x,)) for m in (plain, checkpointed)]
    assert saved_train[1] < saved_train[0]
    for model in (plain, checkpointed):
        model.eval()
    saved_eval = [measure_saved_activations(m, lambda: (x,)) for m in (plain, checkpointed)]
    assert saved_eval[0] == saved_eval[1]
    with torch.no_grad():
        assert torch.equal(plain(x), checkpointed(x))
        cache_a, cache_b = plain.new_cache(2), checkpointed.new_cache(2)
        assert torch.equal(plain(x, cache=cache_a), checkpointed(x, cache=cache_b))
    assert torch.equal(cache_a.keys, cache_b.keys)


def test_attribute_and_state_dict():
    """可以训练前改属性；它不是权重：两种设置的 state_dict 键完全相同、能互相严格加载，config 里没有它。"""
    plain, checkpointed = gpt_pair(2, 0.0)
    assert plain.state_dict().keys() == checkpointed.state_dict().keys()
    plain.load_state_dict(checkpointed.state_dict(), strict=True)
    assert "checkpoint_activations" not in checkpointed.config
    x = torch.randint(0, 40, (2, 8))
    before = measure_saved_activations(plain, lambda: (x,))
    plain.checkpoint_activations = True
    assert measure_saved_activations(plain, lambda: (x,)) == measure_saved_activations(checkpointed, lambda: (x,)) < before


def test_lm_task_option():
    """lm 任务的 GPT 尺寸里有 checkpoint_activations（默认 False），命令行 --checkpoint-activations 打开它，
    build_model 把它传给模型；旧的运行目录（尺寸里没有这一项）照样能建模型。"""
    parser, _ = _parser(set())
    argv = ["train", "--task", "lm", "--model", "gpt", "--out", "x"]
    assert _size_overrides(parser.parse_args(argv + ["--checkpoint-activations"])) == {"checkpoint_activations": True}
    assert _size_overrides(parser.parse_args(argv)) == {}
    task = get_task("lm")
    artifacts = {"vocab": [str(i) for i in range(30)]}
    assert task.sizes("gpt")["checkpoint_activations"] is False
    sizes = task.sizes("gpt", {"checkpoint_activations": True})
    assert task.build_model("gpt", sizes, artifacts).checkpoint_activations is True
    old = {k: v for k, v in task.sizes("gpt").items() if k != "checkpoint_activations"}
    assert task.build_model("gpt", old, artifacts).checkpoint_activations is False
