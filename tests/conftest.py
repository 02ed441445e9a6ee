"""pytest 公共设置：单元测试在无界面的后端上画图。"""

import matplotlib

matplotlib.use("Agg")
