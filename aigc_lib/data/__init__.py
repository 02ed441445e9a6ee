"""数据：从文本到张量。模型只接收张量，这里的函数负责把文字变成张量。

- :mod:`.text`        清洗、切分（jieba / 按字）、词表 ``Vocab``
- :mod:`.bpe`         手写的字节级 BPE 子词切分（``train_bpe``、``BPETokenizer``），与 HF tokenizers 对照
- :mod:`.corpora`     课程的语料（评论、《人民日报》）与读者自己的文件：读取、编码识别、固定划分
- :mod:`.batching`    补齐、按长度分桶、``DataLoader``
- :mod:`.augment`     文本数据增强
- :mod:`.wordvectors` 词向量的数据准备、快速训练（skip-gram）、``WordVectors`` 与 word2vec 文件读写
"""
