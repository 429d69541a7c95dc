import pytest
from hypothesis import given
from hypothesis import strategies as st

from awares.crops import ALL, CROP_IDS, CROP_NAMES
from awares.protocol import SYSTEM_PROMPT, Answer, CropCall, ParseError, format_call, parse_lenient, parse_strict


def test_the_system_prompt_is_the_released_checkpoints_character_for_character():
    reference = (  # VISION_MODEL_SHORT_SYSTEM_PROMPT of NimrodShabtay/AwaRes, lmms_eval/qwen2_5_vl_awares.py
        "You are a vision-language model that analyzes images and answers questions about them. If the image "
        "resolution is too low for accurate analysis, respond with GET_CROPS [<crop_number>] to get a higher "
        "resolution version, the avalible <crop_numbers> and their corresponding area of the high resolution "
        "image are {'0': 'top-left', '1': 'top-right', '2': 'bottom-left', '3': 'bottom-right', '4': 'center', "
        "'5': 'top', '6': 'bottom', '7': 'left', '8': 'right', 'all': 'all'} ,otherwise provide your answer."
    )
    assert SYSTEM_PROMPT == reference and str(CROP_NAMES)[:-1] in SYSTEM_PROMPT


def test_format_call_is_the_documented_form():
    assert format_call(("0", "5")) == "GET_CROPS: ['0', '5']"


@pytest.mark.parametrize(
    "text, crops",
    [
        ("GET_CROPS: ['0', '5']", ("0", "5")),
        ("GET_CROPS:['3']", ("3",)),
        ("GET_CROPS ['3']", ("3",)),  # the form the released checkpoint's prompt shows
        ("GET_CROPS [3]", ("3",)),
        ("GET_CROPS: [0, 5]", ("0", "5")),
        ('GET_CROPS: ["1","2"]', ("1", "2")),
        ("get_crops: ['top-left', 'bottom right']", ("0", "3")),
        ("GET_CROPS: [top left, centre]", ("0", "4")),
        ("I need a closer look. GET_CROPS: ['8'] please", ("8",)),
        ("GET_CROPS: ['0', '0', '5']", ("0", "5")),
        ("GET_CROPS: ['all']", (ALL,)),
        ("GET_CROPS: ['0', 'all']", (ALL,)),
        ("GET_CROPS: 0, 5", ("0", "5")),
        ("GET_CROPS: ['4'", ("4",)),
        ("GET CROPS: ['6']", ("6",)),
        ("GET_CROPS: ['top half']", ("5",)),
    ],
)
def test_lenient_parser_accepts_recognisable_calls(text, crops):
    parsed = parse_lenient(text)
    assert isinstance(parsed, CropCall)
    assert parsed.crop_ids == crops


def test_lenient_parser_drops_unknown_items_but_keeps_known_ones():
    parsed = parse_lenient("GET_CROPS: ['0', '12', 'banana']")
    assert parsed == CropCall(("0",), ("'12'", "'banana'"))


@pytest.mark.parametrize("text", ["GET_CROPS:", "GET_CROPS: []", "GET_CROPS: ['9', 'x']", "get_crops: nothing useful"])
def test_lenient_parser_reports_calls_without_valid_crops(text):
    parsed = parse_lenient(text)
    assert isinstance(parsed, ParseError)
    assert parsed.text == text and parsed.message


@pytest.mark.parametrize("text", ["The answer is 42.", "  red  ", "", "crops of wheat"])
def test_text_without_a_call_is_an_answer(text):
    assert parse_lenient(text) == Answer(text.strip())
    assert parse_strict(text) == Answer(text.strip())


def test_strict_parser_accepts_only_the_documented_form():
    assert parse_strict(" GET_CROPS: ['0', '5']\n") == CropCall(("0", "5"))
    assert parse_strict("GET_CROPS: ['all']") == CropCall((ALL,))
    for text in [
        "GET_CROPS: [0, 5]",
        "GET_CROPS:['0']",
        "see GET_CROPS: ['0']",
        "GET_CROPS: ['0', '0']",
        "GET_CROPS: ['0', 'all']",
        "GET_CROPS: ['top-left']",
    ]:
        assert isinstance(parse_strict(text), ParseError), text


@given(st.text(max_size=200))
def test_parsers_never_raise_on_arbitrary_text(text):
    for parse in (parse_lenient, parse_strict):
        assert isinstance(parse(text), (Answer, CropCall, ParseError))


@given(st.text(alphabet=st.sampled_from(list("GET_CROPS:[]',\" 0123456789allcentertopleft-\n")), max_size=80))
def test_parsers_never_raise_on_call_like_text(text):
    for parse in (parse_lenient, parse_strict):
        parsed = parse(text)
        if isinstance(parsed, CropCall):
            assert parsed.crop_ids and set(parsed.crop_ids) <= set(CROP_IDS)
            assert len(set(parsed.crop_ids)) == len(parsed.crop_ids)


@given(st.lists(st.sampled_from(list(CROP_NAMES)), min_size=1, max_size=9, unique=True))
def test_canonical_calls_round_trip_through_both_parsers(crops):
    text = format_call(crops)
    assert parse_strict(text) == CropCall(tuple(crops))
    assert parse_lenient(text) == CropCall(tuple(crops))
