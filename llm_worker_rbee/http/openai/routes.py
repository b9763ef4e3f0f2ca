"""/v1/completions and /v1/chat/completions in OpenAI's shapes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from llm_worker_rbee import __version__
from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.http.body import parse_body
from llm_worker_rbee.http.chat_output import (
    PLAIN_CHAT,
    ChatOutput,
    ChoiceText,
    template_kwargs,
    thinking_of,
)
from llm_worker_rbee.http.chat_tools import chat_message, tool_plan
from llm_worker_rbee.http.errors import ApiError, bad_request, ended_error, error_fields
from llm_worker_rbee.http.openai.logprobs import CompletionLogprobs, chat_logprobs
from llm_worker_rbee.http.request_context import deadline_for, job_id_for, log_prompt
from llm_worker_rbee.http.schemas import (
    ChatCompletionBody,
    CompletionBody,
    SamplingFields,
    refused_param,
)
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sessions import open_choices
from llm_worker_rbee.http.sse import (
    DONE,
    NOTHING,
    PING,
    SSE_HEADERS,
    SessionBody,
    next_choice,
    sse_data,
)
from llm_worker_rbee.http.translate import build_request
from llm_worker_rbee.messages.inference import TokenLogprobs
from llm_worker_rbee.messages.session import Ended, InferenceRequest, TextDelta
from llm_worker_rbee.prompts import TemplateError, render_chat

FINGERPRINT = f"llm-worker-rbee-{__version__}"
# OpenAI's legacy completions default to 16 new tokens; chat defaults to what fits.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
# Choices (n times the prompts) per request; those beyond the free slots share one queue place.
MAX_CHOICES = 128


def finish_reason(ended: Ended) -> str:
    return "length" if ended.stop_reason == "max_tokens" else "stop"


def usage(ended: Sequence[Ended], prompt_of: Sequence[int]) -> dict[str, Any]:
    """Token counts over all choices; a prompt shared by `n` choices counts once."""
    firsts = {prompt: e for prompt, e in reversed(list(zip(prompt_of, ended, strict=True)))}
    prompt_tokens = sum(e.tokens_in for e in firsts.values())
    completion_tokens = sum(e.tokens_out for e in ended)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        # Prompt tokens served from the slot's prompt cache instead of being decoded again.
        "prompt_tokens_details": {"cached_tokens": sum(e.cached_tokens for e in firsts.values())},
    }


def register(app: QuartTrio, services: Services) -> None:
    def check_common(body: SamplingFields, prompts: int) -> int:
        """Refused parameters, the model name and `n`; returns the number of choices."""
        refused = refused_param(body.model_extra)
        if refused is not None:
            raise bad_request(refused[1], param=refused[0], code="unsupported_parameter")
        services.require_model(body.model)
        choices = (body.n or 1) * prompts
        settings = services.settings
        if choices > MAX_CHOICES:
            raise bad_request(
                f"{choices} choices (n times the prompts) are more than the {MAX_CHOICES} "
                "one request may ask for",
                param="n" if prompts == 1 else "prompt",
            )
        if choices > settings.slots and settings.max_queue == 0:  # nowhere to wait
            raise bad_request(
                f"{choices} choices need {choices} slots and this worker has "
                f"{settings.slots} and no queue (--max-queue 0)",
                param="n" if prompts == 1 else "prompt",
            )
        return body.n or 1

    @app.post("/v1/completions")
    async def completions() -> Response:
        body = await parse_body(CompletionBody)
        model, _ = services.serving()
        prompts = body.prompts()
        n = check_common(body, len(prompts))
        if body.logprobs is not None and body.echo:
            raise bad_request(
                "logprobs with echo (the prompt's logprobs) is not supported",
                param="logprobs",
                code="unsupported_parameter",
            )
        job_id = job_id_for(services)
        for prompt in prompts:
            log_prompt(services, prompt if isinstance(prompt, str) else f"<{len(prompt)} tokens>")
        deadline = deadline_for(services, body.timeout)
        requests = [
            build_request(
                model,
                body,
                prompt,
                job_id=_choice_job_id(job_id, p * n + i),
                add_special=True,
                max_tokens=body.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS,
                deadline=deadline,
                logprobs=body.logprobs,
            )
            for p, prompt in enumerate(prompts)
            for i in range(n)
        ]
        texts = [p if isinstance(p, str) else _detokenize(model, p) for p in prompts]
        echo = [text for text in texts for _ in range(n)] if body.echo else None
        reply = _Reply(
            "cmpl",
            "text_completion",
            services,
            job_id,
            chat=False,
            echo=echo,
            logprobs=body.logprobs is not None,
        )
        prompt_of = [p for p in range(len(prompts)) for _ in range(n)]
        return await reply.respond(services, requests, body, prompt_of)

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        body = await parse_body(ChatCompletionBody)
        model, _ = services.serving()
        n = check_common(body, 1)
        if body.top_logprobs and not body.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        info = model.info
        tools = tool_plan(body, model, services.settings.tool_fallback)
        messages = [chat_message(m) for m in body.messages]
        try:
            prompt = render_chat(
                messages,
                info.chat_template,
                bos=info.bos_text,
                eos=info.eos_text,
                tools=tools.tools,
                generic=tools.generic,
                template_kwargs=template_kwargs(body),
            )
        except TemplateError as exc:
            raise bad_request(str(exc), param="messages", code="chat_template_error") from None
        thinking = thinking_of(services.settings.reasoning_format, prompt.text)
        job_id = job_id_for(services)
        log_prompt(services, prompt.text)
        deadline = deadline_for(services, body.timeout)
        requests = [
            build_request(
                model,
                body,
                prompt.text,
                job_id=_choice_job_id(job_id, i),
                add_special=prompt.add_special,
                max_tokens=body.max_completion_tokens or body.max_tokens,
                deadline=deadline,
                prompt_param="messages",
                extra_stops=prompt.extra_stops,
                logprobs=logprobs,
                grammar=tools.grammar,
                thinking=thinking,
                thinking_budget=body.thinking_token_budget,
            )
            for i in range(n)
        ]
        reply = _Reply(
            "chatcmpl",
            "chat.completion",
            services,
            job_id,
            chat=True,
            logprobs=bool(body.logprobs),
            output=ChatOutput(tools, thinking),
        )
        return await reply.respond(services, requests, body, [0] * n)


def _detokenize(model: ModelHandle, tokens: Sequence[int]) -> str:
    """A token-array prompt's text, for `echo` (its ids were checked by build_request)."""
    return b"".join(model.vocab.token_piece(t) for t in tokens).decode("utf-8", "replace")


def _choice_job_id(job_id: str, index: int) -> str:
    """Choice 0 carries the request's job id, so cancelling the job stops it; the others
    get `<job>.<index>`, and cancelling the job cancels them too (see _Reply.respond)."""
    return job_id if index == 0 else f"{job_id}.{index}"


class _Reply:
    """Renders the sessions of one request as an OpenAI completion or chat completion."""

    def __init__(
        self,
        prefix: str,
        obj: str,
        services: Services,
        job_id: str,
        *,
        chat: bool,
        echo: list[str] | None = None,
        logprobs: bool = False,
        output: ChatOutput = PLAIN_CHAT,
    ) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.output = output
        self.logprobs = logprobs
        # Completions' text offsets run on across a choice's chunks: one renderer per choice.
        self._completion_logprobs: dict[int, CompletionLogprobs] = {}
        self.object = obj
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"
        self.model_id = services.model_id
        self.keepalive = services.settings.sse_keepalive
        self.job_id = job_id
        self.chat = chat
        self.echo = echo
        self.created = int(services.wall_clock())

    async def respond(
        self,
        services: Services,
        requests: list[InferenceRequest],
        body: SamplingFields,
        prompt_of: list[int],
    ) -> Response:
        stream = await open_choices(services, requests)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            frames = self._frames(stream, include_usage, prompt_of)
            response = Response(SessionBody(stream, frames), headers=SSE_HEADERS)
            response.timeout = None
        else:
            response = await self._whole(stream, prompt_of)
        response.headers["X-Request-Id"] = self.job_id
        return response

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model_id,
            "system_fingerprint": FINGERPRINT,
        }

    def _logprobs(self, index: int, entries: tuple[TokenLogprobs, ...]) -> dict[str, Any] | None:
        """`choices[].logprobs` for the tokens `entries` (the next ones of choice `index`)."""
        if not self.logprobs:
            return None
        if self.chat:
            return chat_logprobs(entries)
        renderer = self._completion_logprobs.get(index)
        if renderer is None:
            start = len(self.echo[index]) if self.echo else 0
            renderer = self._completion_logprobs[index] = CompletionLogprobs(start)
        return renderer.render(entries)

    async def _whole(self, stream: ChoiceStream, prompt_of: list[int]) -> Response:
        count = len(stream.sessions)
        parts: list[list[str]] = [[] for _ in range(count)]
        entries: list[list[TokenLogprobs]] = [[] for _ in range(count)]
        ended: list[Ended | None] = [None] * count
        try:
            async for index, event in stream:
                if isinstance(event, TextDelta):
                    parts[index].append(event.text)
                    entries[index].extend(event.logprobs)
                elif isinstance(event, Ended):
                    ended[index] = event
                    error = ended_error(event)
                    if error is not None:
                        raise ApiError.from_info(error)
        finally:
            stream.close()
        done = [e for e in ended if e is not None]
        if len(done) != count:
            raise ApiError(500, "generation ended without a result", type="server_error")
        choices = []
        for index, (texts, end) in enumerate(zip(parts, done, strict=True)):
            text = (self.echo[index] if self.echo else "") + "".join(texts)
            choice: dict[str, Any] = {
                "index": index,
                "logprobs": self._logprobs(index, tuple(entries[index])),
                "finish_reason": finish_reason(end),
            }
            if self.chat:
                choice["message"] = self._message(text, choice)
            else:
                choice["text"] = text
            choices.append(choice)
        body = self._envelope(self.object)
        body["choices"] = choices
        body["usage"] = usage(done, prompt_of)
        return Response(json.dumps(body, ensure_ascii=False), content_type="application/json")

    def _message(self, text: str, choice: dict[str, Any]) -> dict[str, Any]:
        """The assistant message: thinking split off, calls parsed out of the answer."""
        output = self.output.choice()
        output.feed(text)
        output.finish(cut=choice["finish_reason"] == "length")
        if output.tool_calls() and choice["finish_reason"] == "stop":
            choice["finish_reason"] = "tool_calls"
        return output.message()

    def _chunk(
        self,
        index: int,
        delta: dict[str, Any] | str,
        finish: str | None,
        logprobs: dict[str, Any] | None = None,
    ) -> bytes:
        chunk = self._envelope(self.chunk_object)
        choice: dict[str, Any] = {"index": index, "logprobs": logprobs, "finish_reason": finish}
        choice["delta" if self.chat else "text"] = delta
        chunk["choices"] = [choice]
        return sse_data(chunk)

    def _delta_frames(
        self, index: int, deltas: list[dict[str, Any]], logprobs: tuple[TokenLogprobs, ...]
    ) -> list[bytes]:
        """Chunks for what the choice's output let through: reasoning, content, a call's
        start, its arguments. The tokens' logprobs go with the first chunk (an empty delta
        when everything was held back)."""
        entries = self._logprobs(index, logprobs) if logprobs else None
        frames = []
        for delta in deltas:
            frames.append(self._chunk(index, delta, None, entries))
            entries = None
        if entries is not None:
            frames.append(self._chunk(index, {}, None, entries))
        return frames

    async def _frames(
        self, stream: ChoiceStream, include_usage: bool, prompt_of: list[int]
    ) -> AsyncIterator[bytes]:
        count = len(stream.sessions)
        for index in range(count):
            if self.chat:
                yield self._chunk(index, {"role": "assistant", "content": ""}, None)
            elif self.echo:
                yield self._chunk(index, self.echo[index], None)
        ended: dict[int, Ended] = {}
        outputs: dict[int, ChoiceText] = {i: self.output.choice() for i in range(count)}
        while len(ended) < count:
            item = await next_choice(stream, self.keepalive)
            if item is None:
                yield PING
                continue
            index, event = item
            if isinstance(event, TextDelta) and self.chat:
                deltas = outputs[index].feed(event.text)
                for frame in self._delta_frames(index, deltas, event.logprobs) or [NOTHING]:
                    yield frame  # NOTHING: see SessionBody
            elif isinstance(event, TextDelta):
                yield self._chunk(index, event.text, None, self._logprobs(index, event.logprobs))
            elif isinstance(event, Ended):
                error = ended_error(event)
                if error is not None:
                    yield sse_data({"error": error_fields(error)})
                    break
                ended[index] = event
                finish = finish_reason(event)
                if self.chat:
                    deltas = outputs[index].finish(cut=event.stop_reason == "max_tokens")
                    for frame in self._delta_frames(index, deltas, ()):
                        yield frame
                    if outputs[index].tool_calls() and finish == "stop":
                        finish = "tool_calls"
                yield self._chunk(index, {} if self.chat else "", finish)
            else:
                yield NOTHING  # Accepted, Started: no frame (see SessionBody)
        else:
            if include_usage:
                chunk = self._envelope(self.chunk_object)
                chunk["choices"] = []
                chunk["usage"] = usage([ended[i] for i in range(count)], prompt_of)
                yield sse_data(chunk)
        yield DONE
