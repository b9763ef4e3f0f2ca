"""OpenAI's Responses API: POST /v1/responses (whole or streamed as typed events), and the
bounded store behind `previous_response_id`, GET and DELETE /v1/responses/{id}."""

from __future__ import annotations

from typing import Any

from quart import Response
from quart_trio import QuartTrio

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
from llm_worker_rbee.http.errors import ApiError, bad_request
from llm_worker_rbee.http.responses.input import function_tools, input_messages, tool_choice
from llm_worker_rbee.http.responses.output import ResponseReply
from llm_worker_rbee.http.responses.schemas import ResponsesBody, TextFormat
from llm_worker_rbee.http.responses.store import ResponseStore, StoredResponse
from llm_worker_rbee.http.schemas import REFUSED as CHAT_REFUSED
from llm_worker_rbee.http.schemas import JsonSchemaFormat, ResponseFormat
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sessions import answer
from llm_worker_rbee.prompts import ChatMessage

# Responses API fields this worker does not implement: 400 naming the field when given a
# value other than null, false or empty.
REFUSED: dict[str, str] = {
    "background": "background responses are not supported",
    "conversation": "conversation objects are not supported; use previous_response_id",
    "include": "include (extra output data) is not supported",
    "prompt": "prompt templates are not supported",
    "top_logprobs": "logprobs are not supported on /v1/responses",
    "stream_options": "stream_options are not supported on /v1/responses",
}
# `include` values that ask for nothing this worker makes: its reasoning items carry their
# text, never encrypted content (clients behind litellm's proxy send it).
NOTHING_TO_INCLUDE = frozenset({"reasoning.encrypted_content"})
# Parameter names build_request's errors use -> this API's.
PARAMS = {"prompt": "input", "messages": "input", "response_format": "text.format"}


def register(app: QuartTrio, services: Services) -> None:
    store = ResponseStore()

    @app.post("/v1/responses")
    async def create_response() -> Response:
        body = await parse_body(ResponsesBody)
        model, _ = services.serving()
        _check(services, body)
        history: tuple[ChatMessage, ...] = ()
        if body.previous_response_id is not None:
            previous = store.get(body.previous_response_id)
            if previous is None:
                raise bad_request(
                    f"no response {body.previous_response_id!r} is stored here (this worker "
                    f"keeps the last {store.limit}, in memory)",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = previous.history
        turns = history + input_messages(body.input)
        system = () if body.instructions is None else (ChatMessage("system", body.instructions),)
        plan = tool_plan(
            model,
            function_tools(body.tools or []),
            tool_choice(body.tool_choice),
            parallel=body.parallel_tool_calls is not False,
            fallback=services.settings.tool_fallback,
        )
        text_format = body.text.format if body.text else None
        # A forced call's grammar wins over text.format, as over chat's response_format
        # (instructor's RESPONSES_TOOLS sends both); under `auto` the two cannot both hold.
        forced = plan.forced
        if plan.family is not None and not forced and _json_format(text_format):
            raise bad_request(
                "text.format with tools is not supported: a reply is either JSON text or "
                'tool calls; send tool_choice "none" for JSON text, or force the call',
                param="text.format",
                code="unsupported_parameter",
            )
        effort = body.reasoning.effort if body.reasoning else None
        kwargs = None if effort is None else {"reasoning_effort": effort}
        prompt = render(model, system + turns, param="input", plan=plan, template_kwargs=kwargs)
        fields = sampling_fields(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            seed=body.seed,
            response_format=_response_format(text_format),
        )
        thinking = thinking_of(services.settings.reasoning_format, prompt.text)
        inference = turn_request(
            services,
            model,
            prompt,
            fields,
            max_tokens=body.max_output_tokens,
            timeout=body.timeout,
            params=PARAMS,
            grammar=plan.grammar,
            thinking=thinking,
            thinking_budget=body.thinking_token_budget,
        )
        reply = ResponseReply(services, body, turns, store, plan, thinking)
        return await answer(services, inference, reply, stream=body.stream)

    @app.get("/v1/responses/<response_id>")
    async def get_response(response_id: str) -> Response:
        return json_response(_stored(store, response_id).response)

    @app.delete("/v1/responses/<response_id>")
    async def delete_response(response_id: str) -> Response:
        _stored(store, response_id)
        store.delete(response_id)
        return json_response({"id": response_id, "object": "response.deleted", "deleted": True})


def _stored(store: ResponseStore, response_id: str) -> StoredResponse:
    entry = store.get(response_id)
    if entry is None:
        raise ApiError(
            404,
            f"no response {response_id!r} is stored here (this worker keeps the last "
            f"{store.limit} responses made with store, in memory)",
            code="response_not_found",
        )
    return entry


def _check(services: Services, body: ResponsesBody) -> None:
    """Refused fields, the model's name, tools and truncation.

    Raises:
        ApiError: 400 `unsupported_parameter` naming a field this worker does not implement;
            404 `model_not_found`.
    """
    for name, value in (body.model_extra or {}).items():
        if name == "include" and isinstance(value, list) and set(value) <= NOTHING_TO_INCLUDE:
            continue
        if name in REFUSED and _given(value):
            raise bad_request(REFUSED[name], param=name, code="unsupported_parameter")
    check_model_name(services, body.model)
    if body.text is not None and body.text.verbosity not in (None, "medium"):
        message = CHAT_REFUSED["verbosity"]
        raise bad_request(message, param="text.verbosity", code="unsupported_parameter")
    if body.truncation == "auto":
        raise bad_request(
            "truncation 'auto' is not supported: a conversation longer than the context is "
            "refused, never cut",
            param="truncation",
            code="unsupported_parameter",
        )


def _given(value: Any) -> bool:
    """A value other than null, false, 0 or empty (dicts: with a non-null entry)."""
    if isinstance(value, dict):
        return any(_given(v) for v in value.values())
    return value not in (None, False, 0, "", [])


def _json_format(text_format: TextFormat | None) -> bool:
    return text_format is not None and text_format.type != "text"


def _response_format(text_format: TextFormat | None) -> ResponseFormat | None:
    """`text.format` as chat's response_format, enforced by the same grammar."""
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return ResponseFormat(type="json_object")
    assert text_format.name is not None  # the body's validator saw to it
    schema = JsonSchemaFormat(
        name=text_format.name,
        description=text_format.description,
        schema=text_format.json_schema,
        strict=text_format.strict,
    )
    return ResponseFormat(type="json_schema", json_schema=schema)
