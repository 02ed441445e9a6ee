"""训练的核心：与任务、模型无关，任何 ``nn.Module`` 都能用。

- :mod:`.runtime`     设备、运行档位（smoke / cpu / gpu）、随机种子、计时
- :mod:`.training`    唯一的训练循环 :func:`~.training.fit` 和 :func:`~.training.evaluate`
- :mod:`.history`     每轮记录（损失、指标、学习率、用时）
- :mod:`.schedules`   学习率预热 + 余弦 / 线性衰减
- :mod:`.optim`       手写的优化器（对照 ``torch.optim``）、学习率范围测试、权重衰减分组
- :mod:`.checkpoint`  检查点的保存与安全读取（``weights_only=True``）
- :mod:`.distributed` torchrun 多进程（DDP）的启动与收尾
- :mod:`.fsdp`        分片数据并行（``fit(..., strategy="fsdp")``）：切分、收齐、每进程的字节数
"""
