"""What a request's tools mean for one model: the prompt's tool list, the grammar, the
parser of the answer. The one entry point the HTTP APIs share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llm_worker_rbee.tool_calls.family import ToolFamily, ToolsUnsupported, detect_family
from llm_worker_rbee.tool_calls.generic import GenericTools, generic_grammar
from llm_worker_rbee.tool_calls.generic_parser import GenericCallParser
from llm_worker_rbee.tool_calls.grammar import tool_grammar
from llm_worker_rbee.tool_calls.parser import ToolCallParser
from llm_worker_rbee.tool_calls.spec import ToolChoice, ToolDef, new_call_id


class ToolChoiceError(ValueError):
    """`tool_choice` does not fit `tools`; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """`family` None: no tools in play (none sent, or `tool_choice: none`): a plain answer."""

    family: ToolFamily | None
    # The tools the prompt shows the model (the template's `tools`).
    tools: tuple[ToolDef, ...]
    # Enforces a call (`required`, a named function); None lets the model choose. The
    # generic format's holds every answer, a reply too.
    grammar: str | None
    parallel: bool
    # `required` or a named function.
    forced: bool = False
    # The generic format (family GENERIC): the tools are in a system message it adds, not
    # in the template's `tools`.
    generic: GenericTools | None = None

    def parser(
        self, new_id: Callable[[], str] = new_call_id
    ) -> ToolCallParser | GenericCallParser | None:
        """A parser for one choice's output; None when no calls can come."""
        if self.family is None:
            return None
        if self.family is ToolFamily.GENERIC:
            return GenericCallParser(parallel=self.parallel, new_id=new_id)
        return ToolCallParser(self.family, parallel=self.parallel, new_id=new_id)


NO_TOOLS = ToolPlan(None, (), None, True)


def plan_tools(
    template: str | None,
    tools: Sequence[ToolDef],
    choice: ToolChoice | None,
    *,
    parallel: bool = True,
    fallback: bool = True,
) -> ToolPlan:
    """The plan for `tools` under `choice` (None: `auto` with tools, as OpenAI's default);
    a template without a tool format of its own gets the generic one unless `fallback` is
    False (--tool-fallback off).

    Raises:
        ToolChoiceError: a required or named choice without tools, or naming an unknown
            function.
        ToolsUnsupported: the template cannot take tools (see `detect_family`) and
            `fallback` is off.
        GrammarError: a tool's parameters cannot be enforced by a grammar.
    """
    choice = choice or ToolChoice("auto")
    if choice.mode == "named" and choice.name not in {t.name for t in tools}:
        raise ToolChoiceError(
            f"tool_choice names the function {choice.name!r}, which is not among the tools"
        )
    if choice.mode == "required" and not tools:
        raise ToolChoiceError('tool_choice "required" needs tools')
    if not tools or choice.mode == "none":
        # The tools are left out of the prompt: the model is not tempted to call them.
        return ToolPlan(None, (), None, parallel)
    forced = choice.mode in ("required", "named")
    try:
        family = detect_family(template)
    except ToolsUnsupported as exc:
        if not fallback:
            raise ToolsUnsupported(
                f"{exc} (the generic JSON tool format is turned off: --tool-fallback off)"
            ) from None
        generic = GenericTools(tuple(tools), choice, parallel)
        answer = generic_grammar(tools, choice, parallel=parallel)
        return ToolPlan(ToolFamily.GENERIC, (), answer, parallel, forced, generic)
    grammar = tool_grammar(family, tools, choice, parallel=parallel)
    return ToolPlan(family, tuple(tools), grammar, parallel, forced)
