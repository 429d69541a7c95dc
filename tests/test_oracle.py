import pytest
from PIL import Image, ImageDraw, ImageFont

from awares.crops import Box
from awares.curate import GroundTruthOracle, OCROracle, OracleError, VLMOracle, parse_box
from awares.data import Record
from awares.models.endpoint import ChatEndpoint

from .fake_openai import FakeChatServer

W, H = 800, 600


def record(evidence=()):
    return Record("r1", "x.png", "What is the total?", ["57.30"], list(evidence), "detail")


def document():
    """A rendered page: a heading top-left and a small total bottom-right; returns the text boxes too."""
    image = Image.new("RGB", (W, H), (245, 245, 240))
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=24)
    boxes = {}
    for text, xy in [("Invoice 4821", (40, 40)), ("TOTAL 57.30", (560, 520))]:
        draw.text(xy, text, fill=(0, 0, 0), font=font)
        boxes[text] = Box(*draw.textbbox(xy, text, font=font))
    return image, boxes


@pytest.fixture(scope="module")
def ocr():
    return OCROracle()


def test_ocr_oracle_boxes_the_answer_word(ocr):
    image, boxes = document()
    (box,) = ocr(record(), image, "57.30")
    line = boxes["TOTAL 57.30"]
    grown = Box(line.x0 - 8, line.y0 - 8, line.x1 + 8, line.y1 + 8)
    assert box.intersection(grown) == box.area  # on the rendered line
    assert box.x0 > (line.x0 + line.x1) / 2 - 10  # the word, not the whole line
    (fuzzy,) = ocr(record(), image, "invoice 4B21")  # one misread character still matches
    assert fuzzy.iou(boxes["Invoice 4821"]) > 0.5


def test_ocr_oracle_fails_clearly_when_the_answer_is_not_written(ocr):
    image, _ = document()
    with pytest.raises(OracleError, match="no text like 'purple'"):
        ocr(record(), image, "purple")
    with pytest.raises(OracleError):
        ocr(record(), Image.new("RGB", (200, 100), "white"), "57.30")


def test_ground_truth_oracle():
    assert GroundTruthOracle()(record([(1, 2, 30, 40)]), None, "x") == [Box(1, 2, 30, 40)]
    with pytest.raises(OracleError, match="no evidence"):
        GroundTruthOracle()(record(), None, "x")


@pytest.mark.parametrize(
    "reply, coords, expected",
    [
        ('{"bbox_2d": [100, 200, 300, 400]}', "norm1000", [Box(80, 120, 240, 240)]),
        ('```json\n[{"bbox_2d": [100, 200, 300, 400], "label": "total"}]\n```', "norm1000", [Box(80, 120, 240, 240)]),
        ('{"question": [0, 0, 10, 10], "answer": [500, 500, 1000, 1000]}', "norm1000", [Box(400, 300, 800, 600)]),
        ("The box is (0.5, 0.5) to (0.75, 1.0).", "unit", [Box(400, 300, 600, 600)]),
        ("[[10, 20, 30, 40], [50, 60, 70, 80]]", "pixels", [Box(10, 20, 30, 40), Box(50, 60, 70, 80)]),
        ("[300, 400, 100, 200]", "pixels", [Box(100, 200, 300, 400)]),  # corners in either order
        ("[700, 500, 900, 700]", "pixels", [Box(700, 500, 800, 600)]),  # clipped to the image
    ],
)
def test_grounding_replies_are_parsed_robustly(reply, coords, expected):
    assert parse_box(reply, (W, H), coords) == expected


@pytest.mark.parametrize(
    "reply", ["", "I cannot see it.", '{"bbox_2d": [1, 2]}', "[5, 5, 5, 9]", "[900, 900, 950, 990]"]
)
def test_replies_without_a_valid_box_are_errors(reply):
    with pytest.raises(OracleError, match="no box"):
        parse_box(reply, (W, H), "pixels")


def test_vlm_oracle_over_an_openai_compatible_endpoint():
    image, _ = document()
    with FakeChatServer([(200, '{"bbox_2d": [700, 866, 875, 916]}')]) as server:
        endpoint = ChatEndpoint(server.url, "grounder")
        oracle = VLMOracle(lambda im, prompt: endpoint.complete(prompt, [im]))
        assert oracle(record(), image, "57.30") == [Box(560, 519, 700, 550)]
    content = server.requests[0]["messages"][0]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "57.30" in content[1]["text"] and "What is the total?" in content[1]["text"]
    with pytest.raises(OracleError, match="r1: no box"):
        VLMOracle(lambda im, prompt: "nowhere")(record(), image, "57.30")
