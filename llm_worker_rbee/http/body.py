"""A route's JSON body: read, depth-checked before parsing, validated into its pydantic model;
every fault is a 400 naming the param."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import request

from llm_worker_rbee.http.errors import ApiError, bad_request

BodyT = TypeVar("BodyT", bound=BaseModel)

MAX_JSON_DEPTH = 32


async def parse_body(model: type[BodyT]) -> BodyT:
    """Parses and validates a JSON body.

    Raises:
        ApiError: 400 for malformed JSON, a wrong type or a missing field, naming the param.
    """
    data = await request.get_data(as_text=False)
    raw = data.encode() if isinstance(data, str) else data
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise bad_request(
            f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="json_too_deep"
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object", code="invalid_json")
    return validate_body(model, data)


def validate_body(model: type[BodyT], data: dict[str, Any]) -> BodyT:
    """Validates parsed JSON against a body model.

    Raises:
        ApiError: 400 for a wrong type or a missing field, naming the param.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: ValidationError) -> ApiError:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    # Union members show up in loc as type names ("str", "list[str]"); drop them.
    param_parts = [p for p in loc if not (p[:1].islower() and ("[" in p or p in _TYPE_NAMES))]
    param = ".".join(param_parts) or None
    if error["type"] == "missing":
        return bad_request(f"'{param}' is required", param=param, code="missing_required_parameter")
    # A validator's own refusal names what is not supported; pydantic prefixes it.
    message = str(error["msg"]).removeprefix("Value error, ")
    return bad_request(f"invalid '{param}': {message}", param=param)


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "function-after", "constrained-str"}


def json_depth(raw: bytes) -> int:
    """How deeply arrays/objects nest, found without parsing (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest
