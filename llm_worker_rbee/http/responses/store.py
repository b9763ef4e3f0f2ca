"""The Responses API's store: the last responses, in memory, so `previous_response_id`
continues a conversation and `GET /v1/responses/{id}` answers. Bounded: the oldest is
forgotten first; nothing survives a restart."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llm_worker_rbee.prompts import ChatMessage

# Each entry holds its whole conversation, which fits one slot's context: at 4,096 tokens of
# text that is some 16 KB, so the store stays in the tens of megabytes.
STORE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]  # the response object, as returned
    # The conversation up to and including this response's output, without `instructions`
    # (OpenAI does not carry them over to a response that continues this one).
    history: tuple[ChatMessage, ...]


class ResponseStore:
    def __init__(self, limit: int = STORE_LIMIT) -> None:
        self.limit = limit
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def put(self, response_id: str, entry: StoredResponse) -> None:
        self._entries[response_id] = entry
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        return self._entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        return self._entries.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._entries)
