"""The one error shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from typing import Any

from llm_worker_rbee.messages.session import Ended, ErrorInfo


class ApiError(Exception):
    """An error a client may see. Raised anywhere in a route, rendered by the app."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        # Machine-readable detail beside the shape's fields (Anthropic's `error.details`).
        self.details = details

    @classmethod
    def from_info(cls, info: ErrorInfo, headers: dict[str, str] | None = None) -> ApiError:
        if headers is None and info.retry_after is not None:
            headers = {"Retry-After": str(info.retry_after)}
        return cls(
            info.status,
            info.message,
            type=info.type,
            code=info.code,
            param=info.param,
            headers=headers,
        )

    def body(self) -> dict[str, Any]:
        body = error_body(self.message, self.type, self.code, self.param)
        if self.details is not None:
            body["error"]["details"] = self.details
        return body

    def answer_headers(self) -> dict[str, str]:
        """Its own headers, and `x-should-retry: false` where a retry cannot help."""
        if self.status in NO_RETRY_STATUSES or self.code in NO_RETRY_CODES:
            return {**self.headers, "x-should-retry": "false"}
        return self.headers


# The official openai and anthropic clients retry 408, 409, 429 and every 5xx unless the
# answer says `x-should-retry: false` (both read it before the status). A retry cannot help
# when the request ran past the client's own deadline (408: a retry only runs past it
# again), its job id is taken (409), or someone cancelled it (503 `cancelled`).
NO_RETRY_STATUSES = frozenset({408, 409})
NO_RETRY_CODES = frozenset({"cancelled"})


def error_body(message: str, type: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def info_body(info: ErrorInfo) -> dict[str, Any]:
    return error_body(info.message, info.type, info.code, info.param)


def error_fields(info: ErrorInfo) -> dict[str, Any]:
    """The inside of the error shape, for an error sent as a stream event."""
    fields: dict[str, Any] = info_body(info)["error"]
    return fields


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


class ContextOverflow(ApiError):
    """The 400 for a prompt that does not fit, in OpenAI's wording: client libraries
    (litellm, LangChain) recognise a context overflow by this message, not by the code.
    `in_anthropics_words` gives the Messages API's."""

    def __init__(self, limit: int, tokens: int, *, param: str) -> None:
        """
        Args:
            limit: the tokens a sequence may hold, prompt and completion together.
            tokens: the prompt's tokens.
            param: `messages` (chat) or `prompt`.
        """
        what = "messages" if param == "messages" else param
        super().__init__(
            400,
            f"This model's maximum context length is {limit} tokens. However, your {what} "
            f"resulted in {tokens} tokens. Please reduce the length of the {what}. (This "
            "worker gives each sequence that many tokens, prompt and completion together.)",
            param=param,
            code="context_length_exceeded",
        )
        self.limit = limit
        self.tokens = tokens

    def in_anthropics_words(self) -> ApiError:
        """Anthropic's message, which its clients (langchain-anthropic, litellm, Claude
        Code) match: the most a prompt may have is one token less than the sequence holds,
        which leaves room for the first generated one."""
        return ApiError(
            400,
            f"prompt is too long: {self.tokens} tokens > {self.limit - 1} maximum",
            param=self.param,
            code=self.code,
        )


CANCELLED = ErrorInfo(503, "unavailable", "cancelled", "the request was cancelled")


def ended_error(ended: Ended) -> ErrorInfo | None:
    """The error a request that ended this way reports, if it did not end normally."""
    if ended.error is not None:
        return ended.error
    return CANCELLED if ended.stop_reason == "cancelled" else None
