"""/v1/tokenize and /v1/detokenize with the served model's own vocabulary."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from quart_trio import QuartTrio

from llm_worker_rbee.http.body import parse_body
from llm_worker_rbee.http.errors import bad_request
from llm_worker_rbee.http.services import Services

MAX_TOKENS_PER_CALL = 1 << 20


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: StrictStr
    add_special: StrictBool = True
    with_pieces: StrictBool = False


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tokens: Annotated[list[StrictInt], Field(max_length=MAX_TOKENS_PER_CALL)]


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/tokenize")
    async def tokenize() -> dict[str, Any]:
        body = await parse_body(TokenizeBody)
        model, _ = services.serving()
        tokens = model.tokenize(body.content, add_special=body.add_special)
        result: dict[str, Any] = {"tokens": tokens, "count": len(tokens)}
        if body.with_pieces:
            pieces = [model.vocab.token_piece(t).decode("utf-8", "replace") for t in tokens]
            result["pieces"] = pieces
        return result

    @app.post("/v1/detokenize")
    async def detokenize() -> dict[str, Any]:
        body = await parse_body(DetokenizeBody)
        model, _ = services.serving()
        n_vocab = model.info.n_vocab
        for token in body.tokens:
            if not 0 <= token < n_vocab:
                raise bad_request(f"token {token} is outside 0..{n_vocab - 1}", param="tokens")
        raw = b"".join(model.vocab.token_piece(t) for t in body.tokens)
        return {"content": raw.decode("utf-8", "replace")}
