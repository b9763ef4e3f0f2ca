"""What a request's tools mean for one model: the prompt's tool list, the grammar, the
parser of the answer. The one entry point the HTTP APIs share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llm_worker_rbee.tools.family import ToolFamily, detect_family
from llm_worker_rbee.tools.grammar import tool_grammar
from llm_worker_rbee.tools.parser import ToolCallParser
from llm_worker_rbee.tools.spec import ToolChoice, ToolDef


class ToolChoiceError(ValueError):
    """`tool_choice` does not fit `tools`; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """`family` None: no tools in play (none sent, or `tool_choice: none`): a plain answer."""

    family: ToolFamily | None
    # The tools the prompt shows the model (the template's `tools`).
    tools: tuple[ToolDef, ...]
    # Enforces a call (`required`, a named function); None lets the model choose.
    grammar: str | None
    parallel: bool

    def parser(self) -> ToolCallParser | None:
        """A parser for one choice's output; None when no calls can come."""
        if self.family is None:
            return None
        return ToolCallParser(self.family, parallel=self.parallel)


NO_TOOLS = ToolPlan(None, (), None, True)


def plan_tools(
    template: str | None,
    tools: Sequence[ToolDef],
    choice: ToolChoice | None,
    *,
    parallel: bool = True,
) -> ToolPlan:
    """The plan for `tools` under `choice` (None: `auto` with tools, as OpenAI's default).

    Raises:
        ToolChoiceError: a required or named choice without tools, or naming an unknown
            function.
        ToolsUnsupported: the template cannot take tools (see `detect_family`).
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
    family = detect_family(template)
    return ToolPlan(
        family, tuple(tools), tool_grammar(family, tools, choice, parallel=parallel), parallel
    )
