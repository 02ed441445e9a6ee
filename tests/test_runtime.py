"""runtime：设备、种子、档位、计时器、describe。"""

import os
import subprocess
import sys
import time

import pytest
import torch

import aigc_lib
from aigc_lib import PROFILES, Timer, describe, device, eval_mode, pick, profile, seed_everything


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("AIGC_PROFILE", raising=False)
    return monkeypatch


def test_profile_default_follows_cuda(env):
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert profile() == expected


@pytest.mark.parametrize("value", PROFILES)
def test_profile_reads_env_case_and_space_insensitive(env, value):
    env.setenv("AIGC_PROFILE", f"  {value.upper()} ")
    assert profile() == value


@pytest.mark.parametrize("bad", ["bogus", "GPU2", "fast"])
def test_profile_rejects_unknown_values_naming_allowed_ones(env, bad):
    env.setenv("AIGC_PROFILE", bad)
    with pytest.raises(ValueError) as info:
        profile()
    message = str(info.value)
    assert bad in message
    for allowed in PROFILES:
        assert allowed in message


def test_pick_by_profile_and_gpu_defaults_to_cpu(env):
    env.setenv("AIGC_PROFILE", "smoke")
    assert pick(smoke=1, cpu=2, gpu=3) == 1
    env.setenv("AIGC_PROFILE", "cpu")
    assert pick(smoke=1, cpu=2, gpu=3) == 2
    env.setenv("AIGC_PROFILE", "gpu")
    assert pick(smoke=1, cpu=2, gpu=3) == 3
    assert pick(smoke=1, cpu=2) == 2
    assert pick(smoke=1, cpu=2, gpu=None) is None  # None（"全部"）照样传出来，不退回 cpu 的值
    assert pick(smoke=1, cpu=None) is None


def test_device_auto_and_explicit_choice_wins():
    auto = device()
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif torch.backends.mps.is_available():
        assert auto.type == "mps"
    else:
        assert auto == torch.device("cpu")
    assert device("cpu") == torch.device("cpu")
    assert device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="只在没有 GPU 的机器上检查报错")
def test_device_asking_for_missing_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA"):
        device("cuda")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "", "xla"])
def test_device_names_the_course_does_not_know_are_a_clear_error(name):
    with pytest.raises(ValueError, match="cpu、cuda"):
        device(name)


def test_device_that_this_machine_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # 假装有 1 块 GPU：cuda:1 仍然没有
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="只有 1 块 GPU"):
        device("cuda:1")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="mps"):
        device("mps")


def test_seed_everything_makes_weights_and_draws_identical():
    import random

    import numpy as np

    def draw():
        seed_everything(123)
        layer = torch.nn.Linear(7, 5)
        return layer.weight.clone(), torch.rand(3), np.random.rand(3), random.random()

    first, second = draw(), draw()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert np.array_equal(first[2], second[2]) and first[3] == second[3]
    seed_everything(124)
    assert not torch.equal(torch.nn.Linear(7, 5).weight, first[0])


def test_eval_mode_switches_every_submodule_and_restores_the_callers_mode():
    for start_training in (True, False):
        net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Sequential(torch.nn.Dropout(0.5)))
        net.train(start_training)
        with eval_mode(net) as inside:
            assert inside is net and not any(m.training for m in net.modules())
            x = torch.ones(2, 4)
            assert torch.equal(net(x), net(x))  # dropout 关掉了：两次输出相同
        assert all(m.training == start_training for m in net.modules())
        with pytest.raises(RuntimeError, match="出错"):
            with eval_mode(net):
                raise RuntimeError("出错")
        assert all(m.training == start_training for m in net.modules())


def test_timer_measures_elapsed_and_laps():
    with Timer() as t:
        time.sleep(0.02)
        first = t.lap()
        time.sleep(0.01)
        second = t.lap()
    assert first >= 0.015 and second >= 0.005
    assert t.laps == [first, second]
    frozen = t.elapsed
    time.sleep(0.01)
    assert t.elapsed == frozen >= first + second


def test_describe_reports_what_00_setup_shows(env):
    env.setenv("AIGC_PROFILE", "smoke")
    info = describe()
    assert info["PyTorch"] == torch.__version__
    assert info["运行档位 (AIGC_PROFILE)"] == "smoke"
    assert info["设备"] == str(device())
    assert info["CPU 线程数"] == torch.get_num_threads()
    assert info["中文字体"] == aigc_lib.chinese_font_name() != None  # noqa: E711


def _run_python(code, **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "AIGC_PROFILE"}
    env.update(extra_env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="issue 的验收条件针对没有 GPU 的机器")
def test_command_line_prints_cpu_cpu_and_bogus_is_clear():
    code = "import aigc_lib; print(aigc_lib.profile(), aigc_lib.device())"
    ok = _run_python(code)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "cpu cpu"
    bad = _run_python(code, AIGC_PROFILE="bogus")
    assert bad.returncode != 0
    assert "AIGC_PROFILE" in bad.stderr and "smoke | cpu | gpu" in bad.stderr
