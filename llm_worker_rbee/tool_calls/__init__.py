"""Tool calls through the model's own chat template, for any HTTP API.

- `plan_tools(template, tools, choice, parallel=...)` -> `ToolPlan`: the tools to render
  (`prompts.render_chat(..., tools=plan.tools)`), the grammar enforcing `required` or a
  named choice (`plan.grammar`, GBNF for `SamplingParams.grammar`), and `plan.parser()`,
  a `ToolCallParser` per choice. Raises `ToolsUnsupported` (the template takes no tools)
  and `ToolChoiceError`.
- `ToolCallParser.feed(text)` / `.finish(cut=...)` -> `ContentDelta`, `CallStarted`,
  `ArgumentsDelta` events (a call's markup never content; `cut`: max_tokens ended the
  output); `.content` and `.tool_calls()` once finished.
- `parse_tool_calls(family, text, cut=...)` -> (content, calls) for a whole output.
- History: `prompts.ChatMessage(tool_calls=..., tool_call_id=...)` renders past calls and
  results through the template.
- A template with no family of its own (or none) gets the generic JSON format
  (`plan_tools(..., fallback=True)`, the default; family GENERIC): `plan.generic` for
  `prompts.render_chat(..., generic=...)` (a system message, past calls as JSON), a
  grammar under every `tool_choice` but `none`, and a `GenericCallParser` from
  `plan.parser()`, with the same events (tools.generic, tools.generic_parser).
"""

from llm_worker_rbee.tool_calls.family import (
    ToolFamily,
    ToolsUnsupported,
    detect_family,
    template_call,
    template_call_id,
)
from llm_worker_rbee.tool_calls.grammar import call_schema, tool_grammar
from llm_worker_rbee.tool_calls.parser import (
    ArgumentsDelta,
    CallStarted,
    ContentDelta,
    ToolCallParser,
    ToolEvent,
    parse_tool_calls,
)
from llm_worker_rbee.tool_calls.plan import NO_TOOLS, ToolChoiceError, ToolPlan, plan_tools
from llm_worker_rbee.tool_calls.spec import ToolCall, ToolChoice, ToolDef, new_call_id

__all__ = [
    "NO_TOOLS",
    "ArgumentsDelta",
    "CallStarted",
    "ContentDelta",
    "ToolCall",
    "ToolCallParser",
    "ToolChoice",
    "ToolChoiceError",
    "ToolDef",
    "ToolEvent",
    "ToolFamily",
    "ToolPlan",
    "ToolsUnsupported",
    "call_schema",
    "detect_family",
    "new_call_id",
    "parse_tool_calls",
    "plan_tools",
    "template_call",
    "template_call_id",
    "tool_grammar",
]
