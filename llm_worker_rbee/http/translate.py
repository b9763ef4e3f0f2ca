"""Request bodies -> InferenceRequest: sampling, prompt tokens, limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.engine.base import Vocabulary
from llm_worker_rbee.engine.cells import completion_limit
from llm_worker_rbee.grammar import (
    MAX_GRAMMAR_CHARS,
    GrammarError,
    json_object_grammar,
    schema_grammar,
)
from llm_worker_rbee.http.errors import ContextOverflow, bad_request
from llm_worker_rbee.http.schemas import ResponseFormat, SamplingFields
from llm_worker_rbee.messages.inference import SamplingParams, Thinking, ThinkingRule
from llm_worker_rbee.messages.session import InferenceRequest

DEFAULTS = SamplingParams()


def sampling_from(
    body: SamplingFields, n_vocab: int, *, grammar: str | None = None, logprobs: int | None = None
) -> SamplingParams:
    bias: list[tuple[int, float]] = []
    for key, value in (body.logit_bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise bad_request(
                f"logit_bias key {key!r} is not a token id", param="logit_bias"
            ) from None
        if not 0 <= token < n_vocab:
            raise bad_request(
                f"logit_bias token {token} is outside the vocabulary", param="logit_bias"
            )
        bias.append((token, float(value)))
    return SamplingParams(
        temperature=_or(body.temperature, DEFAULTS.temperature),
        top_k=body.top_k if body.top_k is not None else DEFAULTS.top_k,
        top_p=_or(body.top_p, DEFAULTS.top_p),
        min_p=_or(body.min_p, DEFAULTS.min_p),
        repeat_penalty=_or(body.repeat_penalty, DEFAULTS.repeat_penalty),
        presence_penalty=_or(body.presence_penalty, DEFAULTS.presence_penalty),
        frequency_penalty=_or(body.frequency_penalty, DEFAULTS.frequency_penalty),
        seed=body.seed,
        logit_bias=tuple(bias),
        ignore_eos=bool(body.ignore_eos),
        grammar=grammar,
        min_tokens=body.min_tokens or 0,
        logprobs=logprobs,
        draft_max=body.speculative_n_max,
    )


def grammar_for(response_format: ResponseFormat | None, vocab: Vocabulary) -> str | None:
    """The grammar enforcing `response_format`, checked with the vocabulary; None for text.

    Raises:
        ApiError: 400 naming response_format for a schema that cannot be enforced.
    """
    if response_format is None or response_format.type == "text":
        return None
    try:
        if response_format.type == "json_schema":
            assert response_format.json_schema is not None  # the body's validator saw to it
            grammar = schema_grammar(response_format.json_schema.json_schema or {})
        elif response_format.object_schema is not None:
            grammar = schema_grammar(response_format.object_schema)
        else:
            grammar = json_object_grammar()
        vocab.check_grammar(grammar)
    except (GrammarError, ValueError) as exc:
        raise bad_request(str(exc), param="response_format") from None
    return grammar


def body_grammar(body: SamplingFields, vocab: Vocabulary) -> str | None:
    """The grammar constraining the output: `response_format`, or llama-server's `grammar`
    (GBNF) or top-level `json_schema`; at most one of them.

    Raises:
        ApiError: 400 naming the field for a second constraint, a grammar llama.cpp cannot
            parse, or a schema that cannot be enforced.
    """
    given = [
        name
        for name, present in (
            (
                "response_format",
                body.response_format is not None and body.response_format.type != "text",
            ),
            ("grammar", body.grammar is not None),
            ("json_schema", body.json_schema is not None),
        )
        if present
    ]
    if len(given) > 1:
        raise bad_request(
            f"{given[0]} and {given[1]} both constrain the output; send one of them",
            param=given[1],
        )
    if body.grammar is not None:
        if len(body.grammar) > MAX_GRAMMAR_CHARS:
            raise bad_request(
                f"the grammar has {len(body.grammar)} characters; at most "
                f"{MAX_GRAMMAR_CHARS} are allowed",
                param="grammar",
            )
        try:
            vocab.check_grammar(body.grammar)
        except ValueError as exc:
            raise bad_request(
                f"the grammar cannot be used: {exc} (GBNF with a `root` rule is expected)",
                param="grammar",
            ) from None
        return body.grammar
    if body.json_schema is not None:
        try:
            grammar = schema_grammar(body.json_schema)
            vocab.check_grammar(grammar)
        except (GrammarError, ValueError) as exc:
            raise bad_request(str(exc), param="json_schema") from None
        return grammar
    return grammar_for(body.response_format, vocab)


def prompt_tokens(
    model: ModelHandle, prompt: str | Sequence[int], *, add_special: bool, param: str
) -> list[int]:
    """A text prompt tokenized, or token ids (OpenAI's token-array prompts) taken as they are.

    Raises:
        ApiError: 400 naming `param` for a token id outside the vocabulary.
    """
    if isinstance(prompt, str):
        return model.tokenize(prompt, add_special=add_special)
    n_vocab = model.info.n_vocab
    for token in prompt:
        if not 0 <= token < n_vocab:
            raise bad_request(
                f"token {token} is outside the vocabulary (0..{n_vocab - 1})", param=param
            )
    return list(prompt)


def _or(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def stops_of(body: SamplingFields) -> tuple[str, ...]:
    if body.stop is None:
        return ()
    return (body.stop,) if isinstance(body.stop, str) else tuple(body.stop)


def build_request(
    model: ModelHandle,
    body: SamplingFields,
    prompt: str | Sequence[int],
    *,
    job_id: str,
    add_special: bool,
    max_tokens: int | None,
    deadline: float | None = None,
    prompt_param: str = "prompt",
    extra_stops: tuple[str, ...] = (),
    logprobs: int | None = None,
    grammar: str | None = None,
    thinking: Thinking = "none",
    thinking_budget: int | None = None,
) -> InferenceRequest:
    """Tokenizes (or, for token ids, checks) and checks the prompt against the context one
    request may use (the whole pool in fast mode, a slot's stream with --batch-invariant);
    builds the grammar `response_format`, `grammar` or `json_schema` asks for. `logprobs`:
    None, or how many alternatives per token to report. `grammar`: one the caller built and
    checked (e.g. forcing a tool call), which wins over the body's. `thinking`: where the
    stops are not looked for and the grammar does not apply (a chat reply's thinking, see
    thinking_rule); `thinking_budget`: the most tokens it may take.

    Raises:
        ApiError: 400 for an empty prompt, one that does not fit the context, a schema that
            cannot be enforced, or min_tokens above max_tokens.
    """
    if body.min_tokens and max_tokens is not None and body.min_tokens > max_tokens:
        raise bad_request(
            f"min_tokens ({body.min_tokens}) is more than max_tokens ({max_tokens})",
            param="min_tokens",
        )
    if grammar is None:  # a grammar given (forcing a tool call) wins over the body's
        grammar = body_grammar(body, model.vocab)
    tokens = prompt_tokens(model, prompt, add_special=add_special, param=prompt_param)
    if not tokens:
        raise bad_request("the prompt is empty", param=prompt_param, code="empty_prompt")
    capacity = model.info.seq_capacity
    if len(tokens) >= capacity:
        raise ContextOverflow(capacity, len(tokens), param=prompt_param)
    sampling = sampling_from(body, model.info.n_vocab, grammar=grammar, logprobs=logprobs)
    rule = thinking_rule(thinking, grammar, thinking_budget)
    return InferenceRequest(
        job_id=job_id,
        prompt_tokens=tuple(tokens),
        sampling=sampling if rule is None else dataclasses.replace(sampling, thinking=rule),
        max_tokens=completion_limit(model.info, len(tokens), max_tokens),
        stop=stops_of(body) + extra_stops,
        thinking=thinking,
        deadline=deadline,
        limit_asked=max_tokens is not None,
    )


def thinking_rule(
    thinking: Thinking, grammar: str | None, budget: int | None
) -> ThinkingRule | None:
    """The engine's part in a reply's thinking. After a prompt that opened the block, a
    grammar (the client's `grammar`, a schema's, a forced tool call's) is the answer's: it
    starts after `</think>`, so the model thinks freely first (llama.cpp's chat code does
    the same for templates that open the block). A reply that may open a block itself is
    held to its grammar from the first token, as before: it answers without thinking."""
    if thinking == "none":
        return None
    after = thinking == "inside" and grammar is not None
    if not after and budget is None:
        return None
    return ThinkingRule(inside=thinking == "inside", budget=budget, grammar_after=after)
