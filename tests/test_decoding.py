"""Jump-forward decoding of tool calls: the call grammar, forward passes per call, parseable calls,
answers identical to token-by-token decoding, and turn 2 on a cache with jumped-over holes."""

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from awares.crops import CROP_NAMES, extract_crops, low_res_view
from awares.data import generate
from awares.models import HFBackend, default_model_dir
from awares.models.decoding import CallGrammar
from awares.protocol import (
    CALL_OR_ANSWER_REGEX,
    CropCall,
    format_call,
    images_of,
    parse_response,
    turn1_messages,
    turn2_messages,
)
from awares.runtime import Engine, Request, RuntimeConfig

from .conftest import Server, from_scratch_logits, scene


@pytest.fixture(scope="module")
def policies():
    """The shipped AwaRes policy, decoding with and without jump-forward."""
    path = default_model_dir("crops")
    return {jump: HFBackend.load(path, device="cpu", jump_forward=jump) for jump in (True, False)}


class Passes:
    """Counts a model's forward passes; ``bias`` adds logit offsets to chosen tokens on chosen passes."""

    def __init__(self, model, bias=None):
        self.count, self.bias = 0, bias or {}
        self.handles = [model.register_forward_pre_hook(self._tick), model.lm_head.register_forward_hook(self._bias)]

    def _tick(self, *_):
        self.count += 1

    def _bias(self, module, args, logits):
        for (row, column, token), value in self.bias.get(self.count - 1, {}).items():
            logits[row, column, token] += value
        return logits

    def remove(self):
        for handle in self.handles:
            handle.remove()


def test_the_call_grammar_spells_every_call_as_the_tokenizer_does(backend):
    grammar = CallGrammar.from_tokenizer(backend.tokenizer)
    assert grammar is not None
    for crops in (["3"], ["all"], ["0", "5"], ["8", "1", "4"]):
        assert grammar.encode(crops) == tuple(backend.tokenizer(format_call(crops), add_special_tokens=False).input_ids)
        assert grammar.length(len(crops)) == len(grammar.encode(crops))
    assert backend.tokenizer.decode(list(grammar.prefix)) == "GET_CROPS: ['"


def test_a_tokenizer_whose_calls_do_not_split_into_pieces_has_no_grammar():
    class Characters:  # one token per character: ``all`` takes three
        def __call__(self, text, add_special_tokens=False):
            return type("Encoding", (), {"input_ids": [ord(c) for c in text]})()

    assert CallGrammar.from_tokenizer(Characters()) is None


def test_jump_forward_gives_the_same_turns_as_token_by_token_decoding(policies):
    samples = list(generate("test", 24))
    requests = [Request(s.image, s.question) for s in samples]
    for batch_size in (1, 8):  # alone, and in batches that mix calls and answers
        config = RuntimeConfig(batch_size=batch_size, max_new_tokens=16)
        jumped, stepped = (Engine(policies[j], config).answer_batch(requests) for j in (True, False))
        assert [r.turns for r in jumped] == [r.turns for r in stepped]
        assert [(r.answer, r.crops, r.rtr) for r in jumped] == [(r.answer, r.crops, r.rtr) for r in stepped]
    assert sum(r.parse_status == "call" for r in jumped) >= 5
    assert policies[True]._prefixes and not policies[False]._prefixes  # the system turn's KV was reused


def test_a_one_crop_call_costs_three_forward_passes_instead_of_one_per_token(policies):
    sample = next(s for s in generate("test", 50) if s.kind == "detail")
    conversation = [turn1_messages(low_res_view(sample.image), sample.question)]
    counts = {}
    for jump, backend in policies.items():
        backend.generate(conversation, max_new_tokens=1)  # the system turn's KV, once, before passes count
        passes = Passes(backend.model)
        turn = backend.generate(conversation, max_new_tokens=16)
        passes.remove()
        call = parse_response(turn.texts[0])
        assert isinstance(call, CropCall) and len(call.crop_ids) == 1
        counts[jump] = passes.count
    assert counts == {True: 3, False: len(turn.ids[0])}


def test_a_committed_call_always_parses_even_where_the_model_would_ramble(backend):
    """The random tiny model, pushed to start a call, would not finish it; jump-forward does."""
    conversations = [turn1_messages(scene(448, 336), "What is written?"), turn1_messages(scene(336, 448, 1), "Colour?")]
    get = backend.grammar.prefix[0]
    backend.generate(conversations, max_new_tokens=1)  # the system turn's KV, once, before passes count
    passes = Passes(backend.model, {0: {(row, -1, get): 100.0 for row in (0, 1)}})
    jumped = backend.generate(conversations, max_new_tokens=16)
    backend.jump_forward = False
    passes.count = 0
    stepped = backend.generate(conversations, max_new_tokens=16)
    backend.jump_forward = True
    passes.remove()
    assert all(isinstance(parse_response(text, strict=True), CropCall) for text in jumped.texts)
    assert not all(isinstance(parse_response(text, strict=True), CropCall) for text in stepped.texts)


def test_a_call_that_would_go_on_ends_within_max_new_tokens_and_parses(backend):
    conversation = [turn1_messages(scene(448, 336), "What is written?")]
    grammar = backend.grammar
    backend.generate(conversation, max_new_tokens=1)  # the system turn's KV, once, before passes count
    go_on = {step: {(0, 0, grammar.separator[0]): 100.0} for step in range(2, 12)}
    first = {0: {(0, -1, grammar.prefix[0]): 100.0}, 1: {(0, -1, grammar.crop_tokens["2"]): 100.0}}
    passes = Passes(backend.model, {**first, **go_on})
    turn = backend.generate(conversation, max_new_tokens=16)
    passes.remove()
    call = parse_response(turn.texts[0], strict=True)
    assert isinstance(call, CropCall) and len(call.crop_ids) == 3  # a fourth would need 17 tokens
    assert len(turn.ids[0]) <= 16


def test_turn_two_on_a_jumped_cache_matches_a_from_scratch_prefill(backend):
    """Row 0 asks for two crops, row 1 for one: row 1's separator, forwarded ahead, becomes a hole."""
    conversations = [turn1_messages(scene(448, 336), "What is written?"), turn1_messages(scene(336, 448, 1), "Colour?")]
    grammar = backend.grammar
    separator, close = grammar.separator[0], grammar.close[0]
    bias = {
        0: {(row, -1, grammar.prefix[0]): 100.0 for row in (0, 1)},
        1: {(0, -1, grammar.crop_tokens["2"]): 100.0, (1, -1, grammar.crop_tokens["5"]): 100.0},
        2: {(0, 0, separator): 100.0, (0, -1, grammar.crop_tokens["7"]): 100.0, (1, 0, close): 100.0},
        3: {(0, 0, close): 100.0},
    }
    backend.generate(conversations, max_new_tokens=1)  # the system turn's KV, once, before passes count
    passes = Passes(backend.model, bias)
    turn1 = backend.generate(conversations, max_new_tokens=16)
    passes.remove()
    assert turn1.texts == [format_call(["2", "7"]), format_call(["5"])]
    assert passes.count == 4
    assert not turn1.session.attention_mask[1].bool().all()  # the hole and the left padding

    follow = [
        turn2_messages(c, t, extract_crops(images_of(c)[0], parse_response(t).crop_ids))
        for c, t in zip(conversations, turn1.texts)
    ]
    cached = turn1.session.cache.get_seq_length()
    turn2 = backend.extend(turn1.session, [0, 1], follow, max_new_tokens=3, output_logits=True)
    prompt_len = turn2.session.sequences.shape[1] - len(turn2.logits)
    ids, mask = turn2.session.sequences[:, :prompt_len], turn2.session.attention_mask[:, :prompt_len]
    assert prompt_len > cached
    for row in (0, 1):
        reference = from_scratch_logits(backend, ids[row : row + 1], mask[row : row + 1], follow[row : row + 1])
        torch.testing.assert_close(turn2.logits[0][row : row + 1], reference, atol=1e-4, rtol=1e-4)


@given(st.lists(st.sampled_from(list(CROP_NAMES)), min_size=1, max_size=9, unique=True))
def test_the_guided_decoding_regex_admits_every_canonical_call(crops):
    assert re.fullmatch(CALL_OR_ANSWER_REGEX, format_call(crops))
    assert re.fullmatch(CALL_OR_ANSWER_REGEX, format_call(["all"]))


@given(st.text(max_size=40))
def test_the_guided_decoding_regex_admits_a_turn_starting_a_call_only_as_a_parseable_call(text):
    for turn in (text, "GET" + text):
        if not re.fullmatch(CALL_OR_ANSWER_REGEX, turn):
            assert turn.startswith("GET")
        elif turn.startswith("GET"):
            assert isinstance(parse_response(turn, strict=True), CropCall)


def test_guided_calls_send_the_regex_as_vllm_structured_outputs(policies):
    from awares.models import OpenAIBackend
    from awares.serve import ServeConfig

    server = Server(Engine(policies[True], RuntimeConfig()), ServeConfig(), raw=True)
    try:  # `awares serve --raw` stands in for vLLM (named: it would be detected as awares, which cannot guide)
        backend = OpenAIBackend(
            f"{server.url}/v1", "awares", policies[True].processor, guided_calls=True, engine="vllm"
        )
        sent = []
        post = backend.client.post
        backend.client.post = lambda body: sent.append(body) or post(body)
        sample = next(generate("test", 1))
        result = Engine(backend, RuntimeConfig(max_new_tokens=16)).answer(sample.image, sample.question)
    finally:
        server.stop()
    assert result.answer and sent
    assert all(body["structured_outputs"] == {"regex": CALL_OR_ANSWER_REGEX} for body in sent)
    assert backend.describe()["guided_calls"] is True
