"""What a tool-call request and answer are made of, independent of any HTTP API."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal

ChoiceMode = Literal["none", "auto", "required", "named"]
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class ToolDef:
    """One function the model may call: OpenAI's `tools[].function`."""

    name: str
    description: str | None = None
    # A JSON schema of the arguments object; None: the function takes no arguments.
    parameters: dict[str, Any] | None = None

    def template_value(self) -> dict[str, Any]:
        """The tool as chat templates expect it in their `tools` list (OpenAI's shape)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = self.parameters or {"type": "object", "properties": {}}
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`none`: answer in text; `auto`: the model decides; `required`: at least one call;
    `named`: exactly one call of `name`."""

    mode: ChoiceMode = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made (or made earlier, in a conversation's history)."""

    id: str
    name: str
    # The arguments as a JSON text, as OpenAI's `function.arguments` carries them.
    arguments: str

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def new_call_id() -> str:
    """A fresh id in OpenAI's style: `call_` and 24 letters or digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))
