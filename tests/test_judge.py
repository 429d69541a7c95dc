import socket

import pytest

from awares.curate import JudgeError, LLMJudge, RuleJudge, label, parse_verdict
from awares.models.endpoint import EndpointError

from .fake_openai import FakeChatServer


def test_rule_judge_exact_anls_and_numeric():
    judge = RuleJudge()
    assert judge("q", " The Red.", ["red"]) and not judge("q", "redd", ["red"])
    assert RuleJudge(anls_threshold=0.7)("q", "invoice 4821", ["invoice 4828"])
    assert not RuleJudge(anls_threshold=0.95)("q", "invoice 4821", ["invoice 4828"])
    assert RuleJudge(numeric_tolerance=0.01)("q", "1,000", ["1005"])
    assert not RuleJudge(numeric_tolerance=0.01)("q", "1,100", ["1005"])
    assert not RuleJudge(numeric_tolerance=0.5)("q", "many", ["3"])


def test_labels_from_the_two_answers():
    judge = RuleJudge()
    assert label(judge, "q", ["red"], low="red", full="red") == "direct"
    assert label(judge, "q", ["red"], low="red", full="blue") == "direct"  # low-res suffices
    assert label(judge, "q", ["red"], low="blue", full="red") == "crop"
    assert label(judge, "q", ["red"], low="blue", full="green") == "unsolvable"


@pytest.mark.parametrize("reply, verdict", [("correct", True), (" Incorrect.\n", False), ("CORRECT", True)])
def test_verdicts_are_parsed_strictly(reply, verdict):
    assert parse_verdict(reply) is verdict


@pytest.mark.parametrize("reply", ["", "yes", "correct, because", "not correct", "incorrect correct"])
def test_anything_but_a_verdict_is_an_error(reply):
    with pytest.raises(JudgeError, match="not a verdict"):
        parse_verdict(reply)


def test_llm_judge_fills_the_template_and_retries_server_errors(tmp_path):
    template = tmp_path / "judge.txt"
    template.write_text('Q={question} GT={answers} A={prediction} JSON {"keep": "braces"}')
    with FakeChatServer([(500, "overloaded"), (200, "correct"), (200, "incorrect")]) as server:
        judge = LLMJudge.from_args(server.url, "judge-model", template, max_retries=2)
        assert judge("What colour?", "red", ["red", "crimson"]) is True  # after one retried 500
        assert judge("What colour?", "blue", ["red"]) is False
    assert len(server.requests) == 3
    prompt = server.requests[0]["messages"][0]["content"][-1]["text"]
    assert prompt == 'Q=What colour? GT=red | crimson A=red JSON {"keep": "braces"}'
    assert server.requests[0]["model"] == "judge-model" and server.requests[0]["temperature"] == 0


def test_llm_judge_errors_are_clear(tmp_path):
    with FakeChatServer([(200, "maybe")]) as server:
        with pytest.raises(JudgeError, match="not a verdict"):
            LLMJudge.from_args(server.url, "m")("q", "a", ["a"])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = LLMJudge.from_args(f"http://127.0.0.1:{port}/v1", "m", max_retries=0, timeout=2)
    with pytest.raises(EndpointError, match="Connection"):
        judge("q", "a", ["a"])
    (tmp_path / "bad.txt").write_text("no placeholders")
    with pytest.raises(JudgeError, match="lacks"):
        LLMJudge.from_args("http://127.0.0.1:1/v1", "m", tmp_path / "bad.txt")
