from PIL import Image

from awares.protocol import SYSTEM_PROMPT, images_of, turn1_messages, turn2_messages


def test_turn_messages_follow_the_protocol():
    low, crops = Image.new("RGB", (64, 64)), [Image.new("RGB", (32, 32)), Image.new("RGB", (40, 32))]
    first = turn1_messages(low, "What is written?")
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0]["content"][0]["text"] == SYSTEM_PROMPT
    assert first[1]["content"][0]["image"] is low and first[1]["content"][1]["text"] == "What is written?"
    second = turn2_messages(first, "GET_CROPS: ['0', '5']", crops)
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[3]["content"] == [{"type": "image", "image": crops[0]}, {"type": "image", "image": crops[1]}]
    assert images_of(second) == [low, *crops]
    assert first == second[:2]  # turn 1 is not mutated


def test_baselines_can_drop_the_system_prompt():
    assert [m["role"] for m in turn1_messages(Image.new("RGB", (8, 8)), "q", system_prompt=None)] == ["user"]
