"""PieceDecoder and StopMatcher: what text a client may see, token by token."""

from __future__ import annotations

import pytest

from llm_worker_rbee.messages.inference import TURN_HEADER
from llm_worker_rbee.pipeline.text import PieceDecoder, StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    out = "".join(matcher.feed(p) for p in pieces)
    return out + matcher.flush()


@pytest.mark.parametrize(
    ("pieces", "stops", "released", "matched"),
    [
        (["Hello", " world"], [], "Hello world", None),
        (["Hel", "lo wo", "rld"], ["o w"], "Hell", "o w"),
        (["ab", "c"], ["abc"], "", "abc"),
        (["a", "b", "x"], ["abc"], "abx", None),  # a partial match that fails is released
        (["xx", "STO"], ["STOP"], "xxSTO", None),  # held text is released at the end
        (["one END two"], ["END", "one"], "", "one"),  # the earliest stop wins
        (["a", "END", "b"], ["END"], "a", "END"),
    ],
)
@pytest.mark.behavior("INF-016")
def test_stop_matcher(
    pieces: list[str], stops: list[str], released: str, matched: str | None
) -> None:
    matcher = StopMatcher(stops)
    assert feed_all(matcher, pieces) == released
    assert matcher.matched == matched


@pytest.mark.behavior("INF-016")
def test_stop_matcher_holds_back_possible_prefix() -> None:
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("abc</") == "abc"
    assert matcher.feed("x") == "</x"


@pytest.mark.parametrize(
    ("pieces", "released", "matched"),
    [
        (["Sure.", "\nStud", "ent:", " and"], "Sure.", "\nStudent:"),
        (["Hi\nAssistant: again"], "Hi", "\nAssistant:"),
        (["a\nA", ": b"], "a", "\nA:"),
        (["two\nlines, no speaker"], "two\nlines, no speaker", None),
        (["\nThe end: ", "of it"], "\nThe end: of it", None),  # a space: not a header
        (["x\nBob"], "x\nBob", None),  # held, then released at the end
        (['said: "hi"'], 'said: "hi"', None),  # not at the start of a line
    ],
)
@pytest.mark.behavior("INF-037")
def test_a_turn_header_ends_the_reply(
    pieces: list[str], released: str, matched: str | None
) -> None:
    matcher = StopMatcher(["\nUser:", TURN_HEADER])
    assert feed_all(matcher, pieces) == released
    assert matcher.matched == matched


@pytest.mark.behavior("INF-037")
def test_a_possible_turn_header_is_held_back_until_it_cannot_be_one() -> None:
    matcher = StopMatcher([TURN_HEADER])
    assert matcher.feed("Yes.\nTea") == "Yes."
    assert matcher.feed("cher says") == "\nTeacher says"
    assert matcher.feed("\n\n") == "\n"
    assert matcher.feed("Q") == ""
    assert matcher.feed(":") == ""
    assert matcher.matched == "\nQ:"


@pytest.mark.behavior("INF-017")
def test_piece_decoder_never_emits_half_a_character() -> None:
    decoder = PieceDecoder()
    pieces = [b"\xc3", b"\xa9t\xc3", b"\xa9", b"\xf0\x9f", b"\x98", b"\x80"]
    outputs = [decoder.feed(p) for p in pieces]
    assert outputs == ["", "ét", "é", "", "", "😀"]
    assert decoder.flush() == ""


@pytest.mark.behavior("INF-017")
def test_piece_decoder_flushes_a_dangling_byte_as_replacement() -> None:
    decoder = PieceDecoder()
    assert decoder.feed(b"a\xe2\x82") == "a"
    assert decoder.flush() == "\ufffd"
