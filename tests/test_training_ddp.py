"""torchrun 启动的 2 进程（gloo，CPU）训练与“全局批大小相同”的单进程训练得到相同的权重。"""

import importlib.util
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from aigc_lib.core import distributed
from aigc_lib.core.training import steps_per_epoch

WORKER = Path(__file__).with_name("_ddp_worker.py")


def load_worker(path=WORKER):
    """把 torchrun 用的 worker 脚本当模块读进本进程（单进程参照用同一份代码）。"""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(out_dir, nproc=2, timeout=240, worker=WORKER):
    """用 torchrun 启动 nproc 个 worker 进程（gloo），worker 把结果写进 out_dir。"""
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    env.pop("CI", None)
    if sys.platform == "win32":
        env["USE_LIBUV"] = "0"  # Windows 版 PyTorch 的 TCPStore 没有编译 libuv
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", str(worker), str(out_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=sys.platform != "win32")
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if sys.platform != "win32":
            os.killpg(proc.pid, 9)  # 连同 torchrun 启动的工作进程一起结束
        proc.kill()
        try:  # torchrun 的工作进程可能在自己的会话里、还开着输出管道：最多再等 10 秒，不能让测试永远挂住
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            output = "（超时后读不到输出：工作进程还占着管道）"
        pytest.fail(f"torchrun 超过 {timeout} 秒没有结束：\n{output[-3000:]}")
    assert proc.returncode == 0, output[-5000:]


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory):
    """用 torchrun 跑一次 2 进程的 worker（所有场景），返回它写下结果的目录。"""
    out = tmp_path_factory.mktemp("ddp")
    torchrun(out)
    return out


@pytest.mark.parametrize("scenario", load_worker().SCENARIOS)
def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(ddp_out, scenario):
    """custom_step：自定义的 step 拿到原模型（调用 DDP 包装上没有的方法），梯度仍在进程间同步。"""
    worker = load_worker()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ranks = [torch.load(ddp_out / f"{scenario}_rank{r}.pt", weights_only=True) for r in range(2)]
        for key in ranks[0]["weights"]:  # DDP 让两个进程的权重保持一致
            torch.testing.assert_close(ranks[0]["weights"][key], ranks[1]["weights"][key], atol=0, rtol=0)

        model, history = worker.run(scenario, worker.GLOBAL_BATCH, world_size=1)
        reference = model.state_dict()
        assert ranks[0]["weights"].keys() == reference.keys()
        for key, value in ranks[0]["weights"].items():
            torch.testing.assert_close(value, reference[key], atol=2e-5, rtol=0, msg=f"{scenario}: {key}")
        ddp_history = ranks[0]["history"]["records"]
        for ours, ref in zip(ddp_history, history.records, strict=True):
            for key in ("train_loss", "val_loss", "val_acc"):
                assert ours[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (scenario, key)
        # 只有 rank 0 写检查点，检查点里就是最终权重，键名是原模型的（没有 "module."、"model." 前缀）
        saved = torch.load(ddp_out / scenario / "last.pt", weights_only=True)
        assert saved["epoch"] == 3 and saved["model"].keys() == reference.keys()
        for key, value in saved["model"].items():
            torch.testing.assert_close(value, ranks[0]["weights"][key], atol=0, rtol=0)

        # 反证：每个进程的批大小用单进程跑，结果应明显不同——上面的一致不是巧合
        model, _ = worker.run(scenario, worker.GLOBAL_BATCH // 2, world_size=2)
        differs = any((model.state_dict()[k] - reference[k]).abs().max() > 1e-3 for k in reference)
        assert differs, scenario
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- 切分逻辑（不用启动进程）


class FakeContext(distributed.DistContext):
    """假装有 world_size 个进程：广播就是原样返回（所有进程本来就看到同一个顺序）。"""

    def broadcast(self, obj):
        return obj


def indices_seen(loader):
    return [int(i) for batch in loader for i in batch[0]]


@pytest.mark.parametrize("seed", range(12))
def test_sharded_loaders_are_disjoint_equal_sized_and_match_batches_per_rank(seed, monkeypatch):
    rng = random.Random(seed)
    n, batch, world = rng.randint(5, 60), rng.randint(1, 7), rng.choice([2, 3, 4])
    drop_last = rng.random() < 0.5
    data = TensorDataset(torch.arange(n), torch.zeros(n))
    if rng.random() < 0.5:
        loader = DataLoader(data, batch_size=batch, drop_last=drop_last)
    else:  # 自定义 batch_sampler：不同大小的批
        cuts = sorted(rng.sample(range(1, n), rng.randint(1, min(8, n - 1))))
        batches = [list(range(a, b)) for a, b in zip([0] + cuts, cuts + [n])]
        loader = DataLoader(data, batch_sampler=batches)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", str(world))
    expected_steps = steps_per_epoch(loader)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    order = indices_seen(loader)  # 单进程时看到的顺序

    train_seen, val_seen = [], []
    for rank in range(world):
        ctx = FakeContext(rank=rank, world_size=world)
        train = distributed.shard_loader(loader, ctx, train=True)
        assert len(train) == len(list(train)) == distributed.batches_per_rank(loader, world) == expected_steps
        train_seen.append(indices_seen(train))
        val_seen.append(indices_seen(distributed.shard_loader(loader, ctx, train=False)))
    # 训练：各进程批数相同、样本不重叠；验证：每个样本恰好一次（验证不丢最后一批）
    flat = [i for seen in train_seen for i in seen]
    assert len(flat) == len(set(flat)) and set(flat) <= set(order)
    assert sorted(i for seen in val_seen for i in seen) == list(range(n))


def test_loaders_already_split_by_rank_are_left_alone():
    from aigc_lib.data.batching import BucketBatchSampler

    data = TensorDataset(torch.arange(20), torch.zeros(20))
    ctx = FakeContext(rank=1, world_size=2)
    split = DataLoader(data, batch_sampler=BucketBatchSampler([1] * 20, 3, num_replicas=2, rank=1))
    assert distributed.shard_loader(split, ctx, train=True) is split
    dist_sampler = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, num_replicas=2, rank=1))
    assert distributed.shard_loader(dist_sampler, ctx, train=True) is dist_sampler
    assert distributed.batches_per_rank(dist_sampler, 2) == len(dist_sampler)
    assert distributed.shard_loader(split, distributed.DistContext(), train=True) is split  # 单进程：原样
    with pytest.raises(TypeError, match="DataLoader"):
        distributed.shard_loader([(torch.zeros(1), torch.zeros(1))], ctx, train=True)
