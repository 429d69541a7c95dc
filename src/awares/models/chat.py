"""A checkpoint's chat template as awares renders conversations: turn by turn, as they are decoded.

A model decodes turn 1 after the generation prompt, and turn 2 continues that very text. Most
templates render a conversation's history as a prefix extension of that; some do not: a thinking
family's generation prompt opens an empty thinking block that the history of earlier assistant
turns leaves out (``Family.template_kwargs`` turns thinking off). ``ChatTemplate.render`` writes a
whole conversation the way the backend decodes it, so that training (``train.collate``) sees
exactly the sequences inference produces.
"""

from __future__ import annotations

from typing import Any

from ..protocol import Message
from .families import Family


def _text_of(message: Message) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


class ChatTemplate:
    """``processor``'s chat template with ``family``'s template arguments."""

    def __init__(self, processor: Any, family: Family):
        self.processor, self.family = processor, family
        user = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
        with_prompt, without = self.prompt(user), self.prompt(user, generation=False)
        if not with_prompt.startswith(without):
            raise ValueError("the chat template's generation prompt does not extend the conversation")
        self.generation_prompt = with_prompt[len(without) :]  # e.g. "<|im_start|>assistant\n"

    def prompt(self, messages: list[Message], generation: bool = True) -> str:
        """The template's own rendering of ``messages``, with the generation prompt if ``generation``."""
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation, **self.family.template_kwargs
        )

    def continuation(self, previous: list[Message], conversation: list[Message]) -> str:
        """The text that follows ``prompt(previous)`` and the assistant turn
        ``conversation[len(previous)]`` as decoded: that turn's closing, then the turns after it
        (and the generation prompt when the conversation does not end on an assistant turn)."""
        head, content = self.prompt(previous), _text_of(conversation[len(previous)])
        closed = self.prompt(conversation[: len(previous) + 1], generation=False)
        if not closed.startswith(head + content):
            raise ValueError("the chat template does not render an assistant turn after its generation prompt")
        closing = closed[len(head) + len(content) :]
        if len(conversation) == len(previous) + 1:
            return closing
        full = self.prompt(conversation, generation=conversation[-1]["role"] != "assistant")
        shared = next((i for i, (a, b) in enumerate(zip(full, head)) if a != b), min(len(full), len(head)))
        # where the history renders that assistant turn (perhaps without the generation prompt's thinking block)
        at = full.find(content + closing, shared)
        if at < 0:
            raise ValueError("the chat template does not render the conversation's history as it was decoded")
        return closing + full[at + len(content) + len(closing) :]

    def render(self, messages: list[Message]) -> str:
        """``messages`` as the backend decodes them: each assistant turn after the generation prompt,
        its closing and the following turns after it (the template's own text where it extends its prefixes)."""
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if not turns:
            return self.prompt(messages, generation=False)
        text = self.prompt(messages[: turns[0]])
        for index, at in enumerate(turns):
            until = turns[index + 1] if index + 1 < len(turns) else len(messages)
            text += _text_of(messages[at]) + self.continuation(messages[:at], messages[:until])
        return text
