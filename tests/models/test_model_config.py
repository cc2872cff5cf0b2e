import pytest

from megatron_dsm.config import ConfigError
from megatron_dsm.models.config import pad_vocab_size, preset


def test_deepseek_coder_7b_shape():
    c = preset("deepseek-coder-7b")
    assert (c.num_layers, c.hidden_size, c.num_attention_heads, c.ffn_hidden_size) == (30, 4096, 32, 11008)
    assert c.seq_length == 4096 and c.untie_embeddings_and_output_weights
    # 102400 is a multiple of 128*TP for TP in 1,2,4,8: no padding needed
    assert c.padded_vocab_size(1) == c.padded_vocab_size(8) == 102400
    # 30 * (4*4096^2 + 3*4096*11008 + 2*4096) + 2*102400*4096 + 4096 = 6.91e9
    assert c.num_parameters() == 30 * (4 * 4096 ** 2 + 3 * 4096 * 11008 + 2 * 4096) + 2 * 102400 * 4096 + 4096


def test_megatron_vocab_padding_rule():
    assert pad_vocab_size(50280, 128, 1) == 50304
    assert pad_vocab_size(50280, 128, 2) == 50432   # multiple of 256
    assert pad_vocab_size(102400, 128, 3) == 102528  # multiple of 384


def test_parallel_checks():
    c = preset("tiny")
    with pytest.raises(ConfigError, match="not divisible by tensor parallel size 3"):
        c.check_parallel(3, 1)
    with pytest.raises(ConfigError, match="num_layers 4 is not divisible by pipeline"):
        c.check_parallel(1, 3)
    with pytest.raises(ConfigError, match="unknown model preset"):
        preset("gpt-5")


def test_train_flops_per_token_by_hand():
    c = preset("deepseek-coder-7b")
    # matmul parameters: 30 layers x (QKV+O 4*4096^2 = 67,108,864 plus SwiGLU
    # 3*4096*11008 = 135,266,304) = 6,071,255,040, plus the output layer
    # 102400*4096 = 419,430,400: 6,490,685,440 (no input embedding, no norms).
    # 6 x that = 38,944,112,640; attention 12*30*4096*4096 = 6,039,797,760.
    assert c.train_flops_per_token() == 44_983_910_400
    # the attention term is linear in the sequence length
    assert c.train_flops_per_token(2048) == 38_944_112_640 + 6_039_797_760 // 2
