"""Chat prompts: the model's own template, the transcript without one, a template that
refuses."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.text import TURN_HEADER
from llm_worker_rbee.http import openai_routes
from llm_worker_rbee.prompts import (
    FALLBACK_USER_TURN,
    ChatMessage,
    ChatPrompt,
    TemplateError,
    render_chat,
)
from llm_worker_rbee.testing.inprocess import inprocess_worker

# The shape of Gemma's template: its own BOS, turns, and an exception for a bad role.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] not in ('user', 'assistant') %}"
    "{{ raise_exception('roles must be user or assistant') }}{% endif %}"
    "<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
MESSAGES = [ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"), ChatMessage("user", "?")]


@pytest.mark.behavior("INF-001")
def test_the_models_template_renders_the_messages() -> None:
    prompt = render_chat(MESSAGES, TEMPLATE.replace("{{ bos_token }}", ""), bos="<b>", eos="<e>")
    assert prompt == ChatPrompt(
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>assistant\nHello<end_of_turn>\n"
        "<start_of_turn>user\n?<end_of_turn>\n<start_of_turn>model\n",
        extra_stops=(),
        add_special=True,  # the template wrote no BOS: the tokenizer adds it
    )


@pytest.mark.behavior("INF-001")
def test_a_template_that_writes_the_bos_gets_no_second_one() -> None:
    prompt = render_chat(MESSAGES, TEMPLATE, bos="<b>", eos="<e>")
    assert prompt.text.startswith("<b><start_of_turn>user\n")
    assert prompt.add_special is False


@pytest.mark.behavior("INF-002")
def test_without_a_template_a_transcript_with_a_stop_string() -> None:
    messages = [ChatMessage("system", "Be brief."), *MESSAGES, ChatMessage("developer", "x")]
    prompt = render_chat(messages, None, bos="<b>", eos="<e>")
    assert prompt.text == (
        "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: ?\nSystem: x\nAssistant:"
    )
    assert prompt.extra_stops == (FALLBACK_USER_TURN, TURN_HEADER)
    assert FALLBACK_USER_TURN == "\nUser:"
    assert prompt.add_special


@pytest.mark.behavior("INF-036")
def test_a_final_assistant_message_is_continued() -> None:
    messages = [*MESSAGES, ChatMessage("assistant", "Well, the")]
    transcript = render_chat(messages, None, bos="<b>", eos="<e>")
    assert transcript.text == "User: Hi\nAssistant: Hello\nUser: ?\nAssistant: Well, the"
    templated = render_chat(messages, TEMPLATE, bos="<b>", eos="<e>")
    # No end of turn after the prefill and no second model turn: the reply carries on.
    assert templated.text.endswith(
        "<start_of_turn>user\n?<end_of_turn>\n<start_of_turn>model\nWell, the"
    )
    assert templated.text.count("<start_of_turn>model") == 1
    assert templated.add_special is False
    # An assistant message earlier in the conversation is an ordinary turn.
    assert render_chat(MESSAGES, None, bos="", eos="").text.endswith("User: ?\nAssistant:")


@pytest.mark.behavior("ERR-004")
def test_a_template_that_raises_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="roles must be user or assistant"):
        render_chat([ChatMessage("system", "x")], TEMPLATE, bos="<b>", eos="<e>")
    with pytest.raises(TemplateError, match="the model's chat template failed"):
        render_chat(MESSAGES, "{% for %}", bos="<b>", eos="<e>")


@pytest.mark.behavior("ERR-004")
async def test_a_template_that_refuses_is_400_chat_template_error(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> ChatPrompt:
        raise TemplateError("roles must be user or assistant")

    monkeypatch.setattr(openai_routes, "render_chat", refuse)
    async with inprocess_worker() as worker:
        body = {"messages": [{"role": "system", "content": "x"}]}
        response = await worker.request("POST", "/v1/chat/completions", body)
        await trio.testing.wait_all_tasks_blocked()
    assert response.status == 400
    assert response.json()["error"] == {
        "message": "roles must be user or assistant",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "chat_template_error",
    }
