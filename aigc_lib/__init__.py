"""aigc_lib：中文文本生成课程的小型 PyTorch 库。

每个 notebook 都从这里导入；每个函数都有测试，可以单独复制到自己的项目里。
"""

__version__ = "0.1.0"

from .runtime import PROFILES, Timer, describe, device, pick, profile, seed_everything
from .metrics import segmentation_prf
from .plotting import (
    chinese_font_name,
    plot_confusion_matrix,
    plot_embedding_map,
    plot_heatmap,
    progress,
    use_chinese_font,
)
