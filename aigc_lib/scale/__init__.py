"""规模：训练大模型时的内存账单（``memory``）、缩放定律与外推（``laws``）。"""

from .memory import (
    MemoryBill,
    gpt_activation_bytes,
    measure_cuda_peak,
    measure_saved_activations,
    measure_training_state,
    memory_bill,
)
from .laws import PowerLaw, fit_power_law
from .budget import chinchilla_tokens, extrapolation_table, training_days, training_flops
