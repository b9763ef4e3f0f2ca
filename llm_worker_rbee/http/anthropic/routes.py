"""Anthropic's Messages API: POST /v1/messages (whole or streamed as Anthropic's events) and
POST /v1/messages/count_tokens, with every error on these routes in Anthropic's shape."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.http.anthropic.input import conversation
from llm_worker_rbee.http.anthropic.output import MessageReply, anthropic_error
from llm_worker_rbee.http.anthropic.schemas import (
    AnthropicTool,
    CountTokensBody,
    MessagesBody,
    OutputConfig,
    ThinkingConfig,
)
from llm_worker_rbee.http.body import parse_body
from llm_worker_rbee.http.chat_output import thinking_of
from llm_worker_rbee.http.chat_turns import (
    check_model_name,
    json_response,
    render,
    sampling_fields,
    tool_plan,
    turn_request,
)
from llm_worker_rbee.http.errors import ApiError, ContextOverflow, bad_request
from llm_worker_rbee.http.schemas import JsonSchemaFormat, ResponseFormat
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sessions import answer
from llm_worker_rbee.messages.inference import Thinking
from llm_worker_rbee.tool_calls import ToolChoice, ToolDef, ToolPlan

PATH = "/v1/messages"
# Messages API fields this worker does not implement: 400 naming the field.
REFUSED: dict[str, str] = {
    "mcp_servers": "MCP servers are not supported",
    "container": "containers (code execution) are not supported",
    "thread": "threads (a conversation the server keeps between turns) are not supported: "
    "send the whole conversation in messages, without thread",
}
# What Anthropic answers when a request cannot be threaded: the anthropic client's tool
# runner then sends the whole conversation again without `thread` (and so do its threads
# made with unsupported_request_behavior "continue_unthreaded").
THREAD_UNSUPPORTED = {"error_code": "thread_unsupported_request"}
PARAMS = {
    "prompt": "messages",
    "messages": "messages",
    "stop": "stop_sequences",
    "response_format": "output_config.format",
}


# Anthropic's error type for each status; any other status below 500 is
# invalid_request_error, and from 500 api_error.
def register(app: QuartTrio, services: Services) -> None:
    @app.post(PATH)
    async def create_message() -> Response:
        body = await parse_body(MessagesBody)
        model, _ = services.serving()
        _check(services, body)
        messages = conversation(body.system, body.messages)
        plan = _plan(services, model, body.tools, body.tool_choice)
        if plan.family is not None and _response_format(body) is not None:
            raise bad_request(
                "output_config.format with tools is not supported: a reply is either JSON "
                'text or tool calls; send tool_choice {"type": "none"} for JSON text',
                param="output_config.format",
                code="unsupported_parameter",
            )
        kwargs = _template_kwargs(body.thinking, body.output_config)
        prompt = render(model, messages, param="messages", plan=plan, template_kwargs=kwargs)
        thinking = thinking_of(services.settings.reasoning_format, prompt.text)
        fields = sampling_fields(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            seed=body.seed,
            stop=body.stop_sequences or (),
            response_format=_response_format(body),
        )
        try:
            inference = turn_request(
                services,
                model,
                prompt,
                fields,
                max_tokens=body.max_tokens,
                timeout=body.timeout,
                params=PARAMS,
                grammar=plan.grammar,
                thinking=thinking,
                thinking_budget=_budget(body.thinking, thinking),
            )
        except ContextOverflow as overflow:
            raise overflow.in_anthropics_words() from None
        reply = MessageReply(services, body, inference, plan, thinking)
        return await answer(services, inference, reply, stream=body.stream)

    @app.post(f"{PATH}/count_tokens")
    async def count_tokens() -> Response:
        body = await parse_body(CountTokensBody)
        model, _ = services.serving()
        check_model_name(services, body.model)
        plan = _plan(services, model, body.tools, None)
        messages = conversation(body.system, body.messages)
        kwargs = _template_kwargs(body.thinking, None)
        prompt = render(model, messages, param="messages", plan=plan, template_kwargs=kwargs)
        tokens = model.tokenize(prompt.text, add_special=prompt.add_special)
        return json_response({"input_tokens": len(tokens)})

    @app.after_request
    async def anthropic_errors(response: Response) -> Response:
        """Errors on these routes, whoever raised them (validation, auth, 404, 413, 503),
        leave in Anthropic's shape, so its SDK reads their message."""
        if not (request.path == PATH or request.path.startswith(f"{PATH}/")):
            return response
        if response.status_code < 400 or response.mimetype != "application/json":
            return response
        data = json.loads(await response.get_data())
        if isinstance(data, dict) and isinstance(data.get("error"), dict) and "type" not in data:
            response.set_data(json.dumps(anthropic_error(response.status_code, data["error"])))
        return response


def _check(services: Services, body: MessagesBody) -> None:
    """Refused fields, the model's name and the thinking's budget.

    Raises:
        ApiError: 400 `unsupported_parameter` naming a field this worker does not implement,
            naming `thinking.budget_tokens` when it is missing or not below max_tokens;
            404 `model_not_found`.
    """
    for name, value in (body.model_extra or {}).items():
        if name not in REFUSED or value in (None, False, {}, []):
            continue
        details = THREAD_UNSUPPORTED if name == "thread" else None
        raise ApiError(
            400, REFUSED[name], param=name, code="unsupported_parameter", details=details
        )
    check_model_name(services, body.model)
    thinking = body.thinking
    if thinking is None or thinking.type != "enabled":
        return
    if thinking.budget_tokens is None:
        raise bad_request(
            "thinking.budget_tokens is required with thinking.type 'enabled'",
            param="thinking.budget_tokens",
            code="missing_required_parameter",
        )
    if thinking.budget_tokens >= body.max_tokens:
        raise bad_request(
            f"thinking.budget_tokens ({thinking.budget_tokens}) must be less than "
            f"max_tokens ({body.max_tokens})",
            param="thinking.budget_tokens",
        )


def _template_kwargs(
    thinking: ThinkingConfig | None, output: OutputConfig | None
) -> dict[str, Any]:
    """The template's `enable_thinking` (Qwen3's switch: on only when `thinking` asks, as
    Anthropic thinks only then) and `reasoning_effort` (`output_config.effort`)."""
    kwargs: dict[str, Any] = {"enable_thinking": _asks(thinking)}
    if output is not None and output.effort is not None:
        kwargs["reasoning_effort"] = output.effort
    return kwargs


def _asks(thinking: ThinkingConfig | None) -> bool:
    return thinking is not None and thinking.type != "disabled"


def _budget(thinking: ThinkingConfig | None, where: Thinking) -> int | None:
    """The thinking's budget: `budget_tokens`; none for `adaptive`. Not asked for, after a
    prompt that opened the block anyway (DeepSeek-R1's template), 0: the block is closed
    at once and the model answers without thinking."""
    if _asks(thinking):
        assert thinking is not None
        return thinking.budget_tokens
    return 0 if where == "inside" else None


def _response_format(body: MessagesBody) -> ResponseFormat | None:
    """`output_config.format` as chat's response_format, enforced by the same grammar."""
    if body.output_config is None or body.output_config.format is None:
        return None
    schema = JsonSchemaFormat(name="output", schema=body.output_config.format.json_schema)
    return ResponseFormat(type="json_schema", json_schema=schema)


def _plan(
    services: Services,
    model: ModelHandle,
    tools: list[AnthropicTool] | None,
    choice: dict[str, Any] | None,
) -> ToolPlan:
    """The tool plan for Anthropic's `tools` and `tool_choice`.

    Raises:
        ApiError: 400 naming `tools.N.type` for a server tool, `tool_choice` for a choice
            that is not auto, any, tool or none.
    """
    defs: list[ToolDef] = []
    for i, tool in enumerate(tools or []):
        if tool.type not in (None, "custom"):
            raise bad_request(
                f"tools.{i}: {tool.type!r} tools are not supported; only client tools "
                "(name, description, input_schema) are",
                param=f"tools.{i}.type",
                code="unsupported_parameter",
            )
        defs.append(ToolDef(tool.name, tool.description, tool.input_schema))
    parallel = not (choice or {}).get("disable_parallel_tool_use", False)
    fallback = services.settings.tool_fallback
    return tool_plan(model, defs, _tool_choice(choice), parallel=parallel, fallback=fallback)


def _tool_choice(choice: dict[str, Any] | None) -> ToolChoice | None:
    if choice is None:
        return None
    kind = choice.get("type")
    modes = {"auto": "auto", "any": "required", "none": "none"}
    if isinstance(kind, str) and kind in modes:
        return ToolChoice(modes[kind])  # type: ignore[arg-type]
    if kind == "tool" and isinstance(choice.get("name"), str):
        return ToolChoice("named", choice["name"])
    raise bad_request(
        'tool_choice must be {"type": "auto" | "any" | "none"} or {"type": "tool", "name"}',
        param="tool_choice",
        code="unsupported_parameter",
    )
