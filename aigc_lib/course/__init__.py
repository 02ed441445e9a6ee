"""整门课的工具：``aigc course run`` 按顺序执行章节（:mod:`.run`），``aigc course build`` 生成离线网站
和幻灯片（:mod:`.site`）。"""
