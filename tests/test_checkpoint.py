"""aigc_lib.core.checkpoint：坏文件（空、截断、某一位翻转、根本不是检查点）说清楚是什么问题；
模型对不上时先列出不同的键和形状，不把整个 config（词表）打印出来。"""

import json
import random

import pytest
import torch
from torch import nn

from aigc_lib.core.checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint, save_checkpoint


def _saved(tmp_path, config=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 16), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.tensor([1, 2]))[0].sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "m.pt", model, opt, epoch=3, config=config or {"hidden": 16},
                           history={"records": [{"epoch": 1, "train_loss": 0.5}]})
    return path, model


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("cut", ["empty", 10, 0.5, -10])
def test_an_empty_or_truncated_checkpoint_says_it_is_damaged(cut, tmp_path):
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(b"" if cut == "empty" else data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(CheckpointError, match=f"检查点文件损坏或不完整：{path}"):
        load_checkpoint(path)


def test_a_flipped_bit_anywhere_is_caught_or_changes_nothing(tmp_path):
    """torch.load 读出大多数翻了一位的文件也不报错（权重悄悄变了）；校验和把它们都拦下。"""
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    original = load_checkpoint(path)
    rng = random.Random(0)
    caught = 0
    for _ in range(150):
        flipped = bytearray(data)
        flipped[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as error:
            assert f"检查点文件损坏或不完整：{path}" in str(error)
            caught += 1
        else:  # 翻在 zip 的填充字节之类无关紧要的地方：读出来的必须和原来一模一样
            assert _same(ckpt, original)
    assert caught > 100


def test_a_json_file_is_not_called_a_checkpoint_with_python_objects(tmp_path):
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"records": [{"epoch": 1}]}), "utf-8")
    with pytest.raises(CheckpointError, match="是一个 JSON 文件，不是检查点") as info:
        load_checkpoint(path)
    assert "Python 对象" not in str(info.value)
    (tmp_path / "notes.txt").write_text("随便写的", "utf-8")
    with pytest.raises(CheckpointError, match="不是 PyTorch 检查点"):
        load_checkpoint(tmp_path / "notes.txt")


def test_a_pickle_with_other_python_objects_is_still_refused_safely(tmp_path):
    torch.save({"model": {}, "bad": random.Random(0)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="Python 对象（random.Random）"):
        load_checkpoint(tmp_path / "bad.pt")


def test_mismatch_lists_keys_and_shapes_first_and_leaves_out_the_vocabulary(tmp_path):
    vocab = [f"词{i}" for i in range(3000)]
    config = {"task": "sentiment", "model_config": {"vocab_size": 50, "hidden": 16, "names": vocab},
              "artifacts": {"vocab": vocab}}
    path, _ = _saved(tmp_path, config)
    other = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 32), nn.Linear(32, 2))
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path, other)
    lines = str(info.value).splitlines()
    assert lines[1] == "  形状不同的键（3 个）：1.weight 检查点 [16, 8] ≠ 模型 [32, 8], 1.bias 检查点 [16] ≠ 模型 [32], " \
                       "2.weight 检查点 [2, 16] ≠ 模型 [2, 32]"
    assert "vocab_size=50, hidden=16" in lines[-1]
    assert "词1" not in str(info.value) and len(str(info.value)) < 600
