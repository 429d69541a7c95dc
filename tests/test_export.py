"""`awares export gguf`: the config fixes llama.cpp's converter needs, checked on their own."""

import json

import pytest

from awares.errors import ConfigError
from awares.export import _fixed_config, llama_sections


@pytest.mark.parametrize(
    ("hf", "llama"),
    [
        ([16, 24, 24], [16, 24, 24, 0]),  # Qwen2.5-VL-7B's own: one period over every frequency
        ([1] * 16, [1, 1, 1, 0]),  # the tiny models': frequency j on axis j % 3
        ([2, 1, 1, 2, 1, 1], [2, 1, 1, 0]),
        ([3, 1, 1, 1], [3, 1, 1, 0]),  # the last period cut short
    ],
)
def test_hf_rotary_sections_become_llama_cpps_four_with_the_same_layout(hf, llama):
    assert llama_sections(hf) == llama


def test_rotary_sections_with_no_llama_cpp_equivalent_are_refused():
    with pytest.raises(ConfigError, match=r"mrope_section \[1, 2, 1, 2\] has no llama.cpp equivalent"):
        llama_sections([1, 2, 1, 2])


def test_the_fixed_config_keeps_published_checkpoints_as_they_are_and_the_input_unchanged():
    tiny = {
        "model_type": "qwen2_5_vl",
        "text_config": {"rope_parameters": {"mrope_section": [1] * 16}},
        "vision_config": {"depth": 2, "fullatt_block_indexes": []},
    }
    before = json.dumps(tiny)
    fixed = _fixed_config(tiny)
    assert json.dumps(tiny) == before
    assert fixed["text_config"]["rope_parameters"]["mrope_section"] == [1, 1, 1, 0]
    assert fixed["vision_config"]["fullatt_block_indexes"] == [2]  # past the last block: all window attention
    published = {
        "model_type": "qwen2_5_vl",
        "text_config": {"rope_parameters": {"mrope_section": [16, 24, 24]}},
        "vision_config": {"depth": 32, "fullatt_block_indexes": [7, 15, 23, 31]},
    }
    assert _fixed_config(published) == published


def test_export_without_the_converter_or_a_model_exits_2_saying_what_to_do(tmp_path, monkeypatch, capsys):
    from awares.cli import main

    monkeypatch.setenv("AWARES_LLAMA_CPP", str(tmp_path / "no-llama"))
    assert main(["export", "gguf", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "run `bash scripts/llama_server.sh` first" in err and "Traceback" not in err
    assert main(["export", "gguf", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
