"""fit(strategy="fsdp")：torchrun 2 进程（gloo，CPU）的 FSDP 与单进程、DDP 的损失轨迹相同，
每个进程的参数 + 优化器状态约为 DDP 的一半，检查点在单进程里加载后给出同样的评估。"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from aigc_lib.core import fsdp
from aigc_lib.core.checkpoint import load_checkpoint
from aigc_lib.core.training import FitOptions
from aigc_lib.models.transformer import GPTLanguageModel
from _cli import cli_env
from test_training_ddp import load_worker, torchrun

WORKER = Path(__file__).with_name("_fsdp_worker.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """torchrun 跑一次 worker（DDP、FSDP、FSDP 续训），再在本进程跑同样全局批大小的单进程参照。"""
    out = tmp_path_factory.mktemp("fsdp")
    torchrun(out, worker=WORKER)
    worker = load_worker(WORKER)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _, history = worker.run(worker.GLOBAL_BATCH)
    finally:
        torch.set_num_threads(before)
    params = list(model.parameters())  # 共享的词向量只算一次
    param_bytes = (sum(p.numel() * p.element_size() for p in params), len(params))
    ranks = {s: [torch.load(out / f"{s}_rank{r}.pt", weights_only=True) for r in range(2)] for s in ("ddp", "fsdp")}
    return out, worker, model.state_dict(), history.records, ranks, param_bytes


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_loss_trajectory_and_weights_match_one_process(runs, strategy):
    _, worker, reference, records, ranks, _ = runs
    ours = ranks[strategy][0]
    assert ours["dtensor"] == (strategy == "fsdp")  # FSDP 真的把参数换成了分片的 DTensor
    assert len(ours["history"]["records"]) == len(records) == worker.EPOCHS
    # 容差：同样的数学，只差浮点加法的顺序（实测最大差 1.2e-7）
    for mine, ref in zip(ours["history"]["records"], records):
        for key in ("train_loss", "val_loss"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (strategy, key)
    for key, value in reference.items():  # 实测最大差 4.2e-6
        torch.testing.assert_close(ours["weights"][key], value, atol=2e-5, rtol=0, msg=f"{strategy}: {key}")
    for key in reference:  # 两个进程收齐后的权重逐位相同
        torch.testing.assert_close(ranks[strategy][1]["weights"][key], ours["weights"][key], atol=0, rtol=0)


def test_fsdp_holds_about_half_the_parameter_and_optimizer_bytes_of_ddp(runs):
    full, n_params = runs[-1]
    ranks = runs[-2]
    for rank in range(2):
        ddp_bytes, fsdp_bytes = ranks["ddp"][rank]["bytes"], ranks["fsdp"][rank]["bytes"]
        # DDP：参数 + AdamW 的两个矩（各一份完整的）+ 每个参数一个 step 标量
        assert ddp_bytes == 3 * full + n_params * 4
        assert 0.45 <= fsdp_bytes / ddp_bytes <= 0.6, (rank, fsdp_bytes, ddp_bytes)  # 实测 0.5002


def test_fsdp_checkpoint_loads_in_one_process_and_gives_the_same_evaluation(runs):
    out, worker, _, _, ranks, _ = runs
    fsdp_ckpt = torch.load(out / "fsdp" / "last.pt", weights_only=True)
    ddp_ckpt = torch.load(out / "ddp" / "last.pt", weights_only=True)
    # 与 DDP 的检查点结构完全一样：同样的键、同样形状的完整张量、同样编号的优化器状态
    assert fsdp_ckpt["model"].keys() == ddp_ckpt["model"].keys()
    for key, value in ddp_ckpt["model"].items():
        assert fsdp_ckpt["model"][key].shape == value.shape and type(fsdp_ckpt["model"][key]) is torch.Tensor
    assert fsdp_ckpt["optimizer"]["param_groups"] == ddp_ckpt["optimizer"]["param_groups"]
    for index, state in ddp_ckpt["optimizer"]["state"].items():
        for name, value in state.items():
            assert fsdp_ckpt["optimizer"]["state"][index][name].shape == value.shape

    model, train, val, opt, sched = worker.build(worker.GLOBAL_BATCH)
    load_checkpoint(out / "fsdp" / "last.pt", model, opt, sched)  # 单进程的模型、优化器、调度器
    model.eval()
    x = torch.cat([b[0] for b in val])
    y = torch.cat([b[1] for b in val])
    with torch.no_grad():
        loss = F.cross_entropy(model(x).reshape(-1, model.config["vocab_size"]), y.reshape(-1)).item()
    recorded = ranks["fsdp"][0]["history"]["records"][-1]["val_loss"]
    assert loss == pytest.approx(recorded, rel=1e-5)


def test_fsdp_resume_from_last_checkpoint_matches_training_straight_through(runs):
    out, _, _, _, ranks, _ = runs
    resumed = torch.load(out / "resumed_rank0.pt", weights_only=True)
    assert [r["epoch"] for r in resumed["history"]["records"]] == [1, 2, 3]
    for key, value in ranks["fsdp"][0]["weights"].items():
        torch.testing.assert_close(resumed["weights"][key], value, atol=1e-6, rtol=0, msg=key)


# ---------------------------------------------------------------- 不用启动进程的部分


def test_sharding_units_are_the_outermost_repeated_layers():
    model = GPTLanguageModel(32, d_model=16, num_heads=2, num_layers=3, context_len=8)
    wrapper = torch.nn.ModuleDict({"model": model})
    assert fsdp.repeated_layers(wrapper) == list(model.blocks)  # 块里面的 Sequential 不单独成单元
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    assert fsdp.repeated_layers(mlp) == [mlp[0], mlp[2]]  # 没有参数的层不算


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="strategy 只能是 'ddp' 或 'fsdp'"):
        FitOptions(epochs=1, optimizer=None, strategy="zero3")


def test_importing_the_library_does_not_load_fsdp():
    """torch.distributed.fsdp / tensor 约一秒的导入只在真正分片时付：`import aigc_lib`（每条 aigc 命令、
    每个 notebook）不该带进它们。新进程里检查（与 aigc 命令的测试同样的环境，读仓库里的代码），因为本进程早已导入过。"""
    code = ("import sys, aigc_lib, aigc_lib.cli; "
            "print(sorted(m for m in ('torch.distributed.fsdp', 'torch.distributed.tensor', 'sympy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", check=True, env=cli_env(),
                            timeout=120)
    assert result.stdout.strip() == "[]"
