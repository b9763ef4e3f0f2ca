"""Chat prompts: the model's own template, the transcript without one, a template that
refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from llm_worker_rbee.http.openai import routes as openai_routes
from llm_worker_rbee.messages.inference import TURN_HEADER
from llm_worker_rbee.prompts import (
    FALLBACK_USER_TURN,
    ChatMessage,
    ChatPrompt,
    TemplateError,
    TemplateFileError,
    read_chat_template,
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


@pytest.mark.behavior("CFG-037")
def test_a_template_file_renders_as_the_models_own_would(tmp_path: Path) -> None:
    """--chat-template-file's text, read once at start, renders through the same sandboxed
    environment: HF's raise_exception, and Qwen 2.5's published template with its tools."""
    path = tmp_path / "gemma.jinja"
    path.write_text(TEMPLATE)
    template = read_chat_template(path)
    assert template == TEMPLATE
    assert render_chat(MESSAGES, template, bos="<b>", eos="<e>").text.startswith("<b><start_")
    with pytest.raises(TemplateError, match="roles must be user or assistant"):
        render_chat([ChatMessage("system", "x")], template, bos="<b>", eos="<e>")
    qwen = read_chat_template(Path(__file__).parent / "templates" / "qwen2.5.jinja")
    prompt = render_chat([ChatMessage("user", "Hi")], qwen, bos="", eos="")
    assert prompt.text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert read_chat_template(None) is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read it (No such file or directory)"),
        (b"\xff\xfe{{ x }}", "not UTF-8 text"),
        (b"  \n", "the file is empty"),
        (b"{% for m in messages %}{{ m }}", "line 1: Unexpected end of template"),
        (b"{{ messages | no_such_filter }}", "line 1: No filter named 'no_such_filter'"),
    ],
)
@pytest.mark.behavior("CFG-037")
def test_a_template_file_that_cannot_be_used_is_refused_naming_the_flag(
    tmp_path: Path, content: bytes | None, says: str
) -> None:
    path = tmp_path / "chat.jinja"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TemplateFileError) as refused:
        read_chat_template(path)
    message = str(refused.value)
    assert message.startswith(f"--chat-template-file {path}: ") and says in message, message
    assert "\n" not in message
