"""The thinking splitter: the same split however the text is cut into pieces, no markup in
either part, a reply that starts inside the block, one without it, one cut inside it."""

from __future__ import annotations

import pytest

from llm_worker_rbee.engine.sampling import Wake
from llm_worker_rbee.pipeline.output import SequenceText
from llm_worker_rbee.reasoning import (
    ReasoningSplitter,
    ThinkingBudget,
    ThinkingGate,
    starts_in_reasoning,
)

pytestmark = pytest.mark.behavior("INF-066")


def split(pieces: list[str], *, in_reasoning: bool = False) -> tuple[str, str]:
    """The whole reasoning and content of `pieces`, checking each delta on the way."""
    splitter = ReasoningSplitter(in_reasoning=in_reasoning)
    reasoning = content = ""
    for piece in [*pieces, None]:
        r, c = splitter.finish() if piece is None else splitter.feed(piece)
        reasoning += r
        content += c
    return reasoning, content


def cuts(text: str) -> list[list[str]]:
    """`text` whole, one character a piece, and cut in two and in three at every place."""
    ways = [[text], list(text)]
    for i in range(len(text) + 1):
        ways.append([text[:i], text[i:]])
        ways += [[text[:i], text[i:j], text[j:]] for j in range(i, len(text) + 1)]
    return ways


@pytest.mark.parametrize(
    ("text", "reasoning", "content"),
    [
        ("<think>a plan</think>the answer", "a plan", "the answer"),
        ("\n<think>\nI think.\n\n</think>\n\nYes.", "I think.", "Yes."),
        ("<think></think>Yes.", "", "Yes."),
        ("<think>a < b, </thin no</think>ok", "a < b, </thin no", "ok"),
        ("<think>x</think>say <think>y</think>", "x", "say <think>y</think>"),
    ],
)
def test_a_leading_block_is_reasoning_however_the_pieces_fall(
    text: str, reasoning: str, content: str
) -> None:
    for pieces in cuts(text):
        assert split(pieces) == (reasoning, content), pieces


@pytest.mark.parametrize("text", ["Hello, world!", "  <b>bold</b>", "<thinking", "<", " ", ""])
def test_a_reply_without_the_block_is_all_content_unchanged(text: str) -> None:
    for pieces in cuts(text):
        assert split(pieces) == ("", text), pieces


def test_a_reply_that_starts_inside_the_block_is_reasoning_until_it_closes() -> None:
    for pieces in cuts("Let me see.\n</think>\n\n42"):
        assert split(pieces, in_reasoning=True) == ("Let me see.", "42"), pieces


@pytest.mark.parametrize(
    ("text", "in_reasoning", "reasoning"),
    [
        ("<think>still going", False, "still going"),
        ("<think>cut at </thi", False, "cut at </thi"),
        ("still going \n", True, "still going"),
        ("", True, ""),
    ],
)
def test_an_unterminated_block_stays_reasoning(
    text: str, in_reasoning: bool, reasoning: str
) -> None:
    for pieces in cuts(text):
        assert split(pieces, in_reasoning=in_reasoning) == (reasoning, ""), pieces


def test_no_markup_leaks_while_streaming() -> None:
    """Every delta on the way, not only the sums, is free of the markers."""
    text = "<think>ab</think>cd"
    for pieces in cuts(text):
        splitter = ReasoningSplitter()
        for piece in pieces:
            r, c = splitter.feed(piece)
            assert "<" not in r + c and ">" not in r + c, pieces


@pytest.mark.parametrize(
    ("prompt", "inside"),
    [
        ("<|im_start|>assistant\n<think>\n", True),
        ("<\uff5cAssistant\uff5c><think>", True),  # DeepSeek-R1: full-width bars
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
        ("<|im_start|>assistant\n", False),
    ],
)
def test_the_prompts_tail_says_whether_the_reply_starts_inside(prompt: str, inside: bool) -> None:
    assert starts_in_reasoning(prompt) is inside


def gate(pieces: list[str], *, inside: bool) -> tuple[str, str]:
    thinking_gate = ThinkingGate(inside=inside)
    parts = [thinking_gate.feed(piece) for piece in pieces] + [thinking_gate.flush()]
    return "".join(t for t, _ in parts), "".join(a for _, a in parts)


@pytest.mark.behavior("INF-067")
@pytest.mark.parametrize(
    ("text", "inside", "thinking"),
    [
        (" <think>a</think> b", False, " <think>a</think>"),
        ("a</think>b</think>", True, "a</think>"),
        ("no block", False, ""),
        ("<thin", False, ""),
        ("open <think> and </thin", True, "open <think> and </thin"),
    ],
)
def test_the_gate_keeps_every_character_and_tells_the_thinking_from_the_answer(
    text: str, inside: bool, thinking: str
) -> None:
    """What the engine thread checks stop strings against: the answer, raw."""
    for pieces in cuts(text):
        assert gate(pieces, inside=inside) == (thinking, text[len(thinking) :]), pieces


@pytest.mark.behavior("INF-067")
@pytest.mark.parametrize("inside", [False, True])
def test_a_stop_string_in_the_thinking_ends_nothing(inside: bool) -> None:
    text = "<think>Stop? Not yet.</think>Stop here." if not inside else "Stop?</think>Stop."
    sequence = SequenceText(0, ("Stop",), 0, "inside" if inside else "leading")
    fed = 0
    while not sequence.stopped:  # one character a token, as long as the engine would go
        sequence.add(text[fed].encode(), None)
        fed += 1
    assert text[:fed].endswith("</think>Stop")
    sequence.finish()
    output = sequence.take(0)
    assert output is not None and output.text == text[: text.rindex("Stop")]


# Token ids are the characters' own code points, so the pieces are the characters.
CLOSE = [ord(c) for c in "</think>"]


def budgeted(reply: str, *, inside: bool, budget: int) -> str:
    """What a reply becomes under ThinkingBudget: the model's next character unless a
    forced token comes first; once the close was forced, the test stops there."""
    spent = ThinkingBudget(
        inside=inside, budget=budget, close=CLOSE, piece=lambda t: chr(t).encode()
    )
    out: list[int] = []
    forced_any = False
    model = iter(reply)
    while True:
        token = spent.forced()
        if token is None:
            following = next(model, None)
            if forced_any or following is None:
                break
            token = ord(following)
        else:
            forced_any = True
        spent.accept(token)
        out.append(token)
    return "".join(map(chr, out))


@pytest.mark.behavior("INF-071")
@pytest.mark.parametrize(
    ("reply", "inside", "budget", "expected"),
    [
        ("abcdef", True, 3, "abc</think>"),  # cut after three thinking tokens
        ("ab</think>xyz", True, 12, "ab</think>xyz"),  # closed within the budget
        ("ab</think>xyz", True, 4, "ab</</think>"),  # cut inside the model's own close
        ("abc", True, 0, "</think>"),  # budget 0: closed before the first token
        ("<think>abcdef", False, 2, "<think>ab</think>"),  # counted once the model opened it
        ("xyz", False, 0, "xyz"),  # no block: nothing to close
    ],
)
def test_a_thinking_budget_forces_the_close_once_spent(
    reply: str, inside: bool, budget: int, expected: str
) -> None:
    assert budgeted(reply, inside=inside, budget=budget) == expected


@pytest.mark.behavior("INF-070")
def test_a_lazy_grammar_wakes_only_on_tokens_whose_rest_it_can_take() -> None:
    """llama.cpp hands a woken grammar the rest of the token that completed the marker and
    aborts on a rest it refuses: only white space (up to AFTER_SPACE) may follow there."""
    pieces = {1: "so</thi", 2: "nk>\n\n", 3: "nk>{", 4: "nk>" + " " * 9, 5: "{"}
    for rest, safe in ((2, True), (3, False), (4, False)):
        wake = Wake("</think>", lambda t: pieces[t].encode())
        wake.accept(1)
        assert (wake.safe(rest), wake.awake) == (safe, False)
    wake = Wake("</think>", lambda t: pieces[t].encode())
    for token in (1, 2):
        wake.accept(token)
    assert wake.awake and wake.safe(5)  # awake: the grammar itself judges what follows
