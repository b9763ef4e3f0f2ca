"""A conversation -> InferenceRequest, for the routes that speak in turns but not in OpenAI
chat's body (the Responses and Anthropic Messages APIs): the same chat template, grammar and
limits as /v1/chat/completions, with errors naming the caller's own parameters."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quart import Response

from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.grammar import GrammarError
from llm_worker_rbee.http.errors import ApiError, bad_request
from llm_worker_rbee.http.request_context import deadline_for, job_id_for, log_prompt
from llm_worker_rbee.http.schemas import ResponseFormat, SamplingFields
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.translate import build_request
from llm_worker_rbee.messages.inference import Thinking
from llm_worker_rbee.messages.session import Ended, InferenceRequest
from llm_worker_rbee.prompts import ChatMessage, ChatPrompt, TemplateError, render_chat
from llm_worker_rbee.tool_calls import (
    NO_TOOLS,
    ContentDelta,
    ToolChoice,
    ToolChoiceError,
    ToolDef,
    ToolEvent,
    ToolPlan,
    ToolsUnsupported,
    plan_tools,
)


def json_response(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), content_type="application/json")


def check_model_name(services: Services, name: str | None) -> None:
    """`model` may be the served model's id, its --model-ref or an --alias (INF-024).

    Raises:
        ApiError: 404 `model_not_found` for any other name.
    """
    if name is not None and name not in services.accepted_model_ids():
        raise ApiError(
            404,
            f"the model {name!r} is not served here; this worker serves {services.model_id!r}",
            param="model",
            code="model_not_found",
        )


def sampling_fields(
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    response_format: ResponseFormat | None = None,
) -> SamplingFields:
    """The chat route's sampling fields from values another API's body already validated
    (constructed, not validated again: Anthropic's stop_sequences are not bound to four)."""
    values: dict[str, Any] = {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": min_p,
        "seed": seed,
        "stop": list(stop) or None,
        "response_format": response_format,
    }
    return SamplingFields.model_construct(**{k: v for k, v in values.items() if v is not None})


def tool_plan(
    model: ModelHandle,
    tools: Sequence[ToolDef],
    choice: ToolChoice | None,
    *,
    parallel: bool,
    fallback: str,
    choice_param: str = "tool_choice",
) -> ToolPlan:
    """What `tools` under `choice` mean for the served model (tools.plan_tools), with its
    grammar checked against the model's vocabulary; `fallback`: --tool-fallback.

    Raises:
        ApiError: 400 naming `tools` when the model's template takes no tools
            (`tools_not_supported`, as on the chat route), two tools share a name, or a
            tool's parameters cannot be enforced; naming `choice_param` for a choice that does
            not fit the tools.
    """
    if not tools and choice is None:
        return NO_TOOLS
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise bad_request("two tools have the same name", param="tools")
    try:
        plan = plan_tools(
            model.info.chat_template,
            tools,
            choice,
            parallel=parallel,
            fallback=fallback == "generic",
        )
        if plan.grammar is not None:
            model.vocab.check_grammar(plan.grammar)
    except ToolsUnsupported as exc:
        raise bad_request(str(exc), param="tools", code="tools_not_supported") from None
    except ToolChoiceError as exc:
        raise bad_request(str(exc), param=choice_param) from None
    except (GrammarError, ValueError) as exc:
        raise bad_request(f"the tools cannot be enforced: {exc}", param="tools") from None
    return plan


class TurnOutput:
    """A choice's text as content and tool calls: the tool parser's events when tools are
    in play, otherwise all of it content."""

    def __init__(self, plan: ToolPlan, new_id: Callable[[], str]) -> None:
        self.parser = plan.parser(new_id)

    def feed(self, text: str) -> list[ToolEvent]:
        if self.parser is None:
            return [ContentDelta(text)] if text else []
        return self.parser.feed(text)

    def finish(self, ended: Ended) -> list[ToolEvent]:
        """What the parser held back (a call's markup, never content: tools.parser)."""
        cut = ended.stop_reason == "max_tokens"
        return [] if self.parser is None else self.parser.finish(cut=cut)


def render(
    model: ModelHandle,
    messages: Sequence[ChatMessage],
    *,
    param: str,
    plan: ToolPlan = NO_TOOLS,
    template_kwargs: Mapping[str, Any] | None = None,
) -> ChatPrompt:
    """The model's chat template (or the plain transcript) over `messages`, with the
    plan's tools (the template's tool list, or the generic format's system message) and
    `template_kwargs` as more of its variables (`enable_thinking`, `reasoning_effort`).

    Raises:
        ApiError: 400 `chat_template_error` naming `param` when the template refuses them.
    """
    info = model.info
    try:
        return render_chat(
            messages,
            info.chat_template,
            bos=info.bos_text,
            eos=info.eos_text,
            tools=plan.tools,
            generic=plan.generic,
            template_kwargs=template_kwargs,
        )
    except TemplateError as exc:
        raise bad_request(str(exc), param=param, code="chat_template_error") from None


def chat_request(
    model: ModelHandle,
    prompt: ChatPrompt,
    fields: SamplingFields,
    *,
    job_id: str,
    max_tokens: int | None,
    deadline: float | None,
    params: dict[str, str],
    grammar: str | None = None,
    thinking: Thinking = "none",
    thinking_budget: int | None = None,
) -> InferenceRequest:
    """build_request over a rendered conversation; `params` renames the chat route's
    parameter names in its errors (`prompt`, `response_format`, ...) to the caller's.
    `grammar` (a tool plan's, already checked) replaces the one `response_format` makes;
    `thinking` and `thinking_budget` as build_request's.

    Raises:
        ApiError: 400 as build_request, naming the caller's parameter.
    """
    try:
        return build_request(
            model,
            fields,
            prompt.text,
            job_id=job_id,
            add_special=prompt.add_special,
            max_tokens=max_tokens,
            deadline=deadline,
            extra_stops=prompt.extra_stops,
            grammar=grammar,
            thinking=thinking,
            thinking_budget=thinking_budget,
        )
    except ApiError as exc:
        if exc.param in params:
            exc.param = params[exc.param]
        raise


def turn_request(
    services: Services,
    model: ModelHandle,
    prompt: ChatPrompt,
    fields: SamplingFields,
    *,
    max_tokens: int | None,
    timeout: float | None,
    params: dict[str, str],
    grammar: str | None,
    thinking: Thinking = "none",
    thinking_budget: int | None = None,
) -> InferenceRequest:
    """chat_request under the request's job id (which then names the handler's log lines)
    and deadline, with the prompt logged as --log-prompts allows.

    Raises:
        ApiError: 400 for a bad X-Request-Id or X-Request-Deadline; as chat_request.
    """
    job_id = job_id_for(services)
    log_prompt(services, prompt.text)
    return chat_request(
        model,
        prompt,
        fields,
        job_id=job_id,
        max_tokens=max_tokens,
        deadline=deadline_for(services, timeout),
        params=params,
        grammar=grammar,
        thinking=thinking,
        thinking_budget=thinking_budget,
    )
