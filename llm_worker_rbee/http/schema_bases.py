"""The pydantic pieces every API's request schemas share (schemas.py, responses_api_schemas.py,
anthropic_schemas.py): what a model does with fields it does not know, and the
`string | list` union that reports a bad list item at its own path."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, StrictStr, Tag

Item = TypeVar("Item")


class KeepsUnknown(BaseModel):
    """A request body that keeps the fields it does not know (`model_extra`), so its route
    refuses the ones the API has and this worker does not implement, by name, rather than
    dropping them silently; any other is ignored."""

    model_config = ConfigDict(extra="allow")


class DropsUnknown(BaseModel):
    """A part of a request body that drops the fields it does not know."""

    model_config = ConfigDict(extra="ignore")


class DropsUnknownByAlias(BaseModel):
    """DropsUnknown, for a model with a field under an alias (`schema`, which would shadow a
    BaseModel attribute): it is filled by either name."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def str_or_list(value: Any) -> str:
    """Picks the member of a `string | list` union, so a bad list item is reported at its
    own path (`input.0.role`) rather than as "not a valid string"."""
    return "str" if isinstance(value, str) else "list"


# A string, or a list of `Item`: `StrOrList[ContentBlock]`.
StrOrList = Annotated[
    Annotated[StrictStr, Tag("str")] | Annotated[list[Item], Tag("list")],
    Discriminator(str_or_list),
]
