"""NgramDrafter and NgramMemory: proposals from a sequence's own tokens and from what the
model wrote before after the same context, and the estimate of how many get kept."""

from __future__ import annotations

import pytest

from llm_worker_rbee.engine.ngram import (
    MEMORY,
    MEMORY_KEY,
    OWN,
    PRIOR_HITS,
    PRIOR_MISSES,
    NgramDrafter,
    NgramMemory,
    Proposal,
    kind,
)

PRIOR = PRIOR_HITS / (PRIOR_HITS + PRIOR_MISSES)


def drafter(prompt: list[int], memory: NgramMemory | None = None, **kw: int) -> NgramDrafter:
    return NgramDrafter(prompt, NgramMemory() if memory is None else memory, **kw)


def tokens(drafter: NgramDrafter, limit: int) -> list[int]:
    return drafter.propose(limit).tokens


@pytest.mark.behavior("INF-068")
def test_the_proposal_is_what_followed_the_latest_earlier_occurrence_of_the_tail() -> None:
    seq = drafter([1, 2, 3, 4, 5, 6, 9, 2, 3, 7, 8, 1, 2, 3])
    # The tail (1, 2, 3) occurred at the start, followed by 4, 5, 6, 9, 2, 3, 7 ...
    assert seq.propose(5) == Proposal([4, 5, 6, 9, 2], [OWN] * 5)
    seq.sampled(4)
    # (2, 3, 4) occurred once, followed by 5, 6 ...
    assert tokens(seq, 2) == [5, 6]


@pytest.mark.behavior("INF-068")
def test_a_shorter_ngram_answers_when_the_longer_never_occurred_and_none_when_nothing() -> None:
    # (9, 7, 8) is new; (7, 8) followed by 1 earlier, and the copy runs on from there.
    assert tokens(drafter([5, 7, 8, 1, 9, 7, 8]), 4) == [1, 9, 7, 8]
    assert tokens(drafter([1, 2, 3, 4]), 4) == []
    assert tokens(drafter([1, 2, 1, 2]), 0) == []
    assert tokens(drafter([1, 2, 3, 1, 2, 3], max_draft=2), 8) == [1, 2]


@pytest.mark.behavior("INF-068")
def test_the_memory_drafts_what_an_earlier_sequence_wrote_after_the_same_context() -> None:
    memory = NgramMemory()
    prompt = list(range(100, 100 + MEMORY_KEY))
    first = drafter(prompt, memory)
    assert tokens(first, 8) == []  # nothing repeats in its own text, and nothing is kept
    output = [7, 3, 9, 3, 7, 1]
    for token in output:
        first.sampled(token)
    # A new sequence with the same prompt gets the whole output; one with another prompt
    # gets nothing (only what follows the same MEMORY_KEY tokens is recalled).
    assert drafter(prompt, memory).propose(8) == Proposal(output, [MEMORY] * len(output))
    assert tokens(drafter([1, *prompt[1:]], memory), 8) == []
    # Prompts are not kept; `--speculation prompt`'s memory keeps nothing.
    assert len(memory) == len(output)
    private = NgramMemory(entries=0)
    for token in output:
        drafter(prompt, private).sampled(token)
    assert len(private) == 0


@pytest.mark.behavior("INF-068")
def test_the_memory_wins_over_the_own_text() -> None:
    memory = NgramMemory()
    context = list(range(200, 200 + MEMORY_KEY))
    drafter(context, memory).sampled(5)  # after `context` the model once wrote 5
    # This sequence's own text continued `context` with 6, 7, 8; after the memory's 5 the
    # own text has nothing (its tail, ending in 5, never occurred).
    own = [*context, 6, 7, 8, 1, *context]
    assert drafter(own, memory).propose(3) == Proposal([5], [MEMORY])
    assert tokens(drafter(own), 3) == [6, 7, 8]  # without the memory's word


@pytest.mark.behavior("INF-068")
def test_the_memory_forgets_its_oldest_quarter_when_full() -> None:
    memory = NgramMemory(entries=8)
    context = list(range(1000, 1000 + MEMORY_KEY))
    for token in range(9):
        memory.remember(context, token)
        context = [*context[1:], token]
    assert len(memory) == 9 - 8 // 4


@pytest.mark.behavior("INF-068")
def test_acceptance_follows_drafts_kept_and_proposals_checked_while_not_drafting() -> None:
    memory = NgramMemory()
    seq = drafter([], memory)
    own = Proposal([1] * 8, [OWN] * 8)

    def last(proposal: Proposal = own) -> float:
        """The chance of a proposal's last token: every estimate it depends on moves it."""
        return seq.chances(proposal)[-1]

    # A first token and a later one from the same source, and other sources, start alike.
    assert seq.chances(Proposal([1, 1], [OWN, MEMORY])) == pytest.approx([PRIOR, PRIOR**2])
    seq.verified(own, kept=8)
    high = last()
    assert high > PRIOR**8
    assert last(Proposal([1], [MEMORY])) == pytest.approx(PRIOR)  # its own estimates
    seq.verified(own, kept=0)
    assert last() < high
    # The first token and the ones after it have estimates of their own: a miss at the
    # first lowers the first's, not the later ones'.
    first, later = seq.chances(own)[0], seq.chances(own)[1] / seq.chances(own)[0]
    assert later > first
    # Not drafted: the proposal is checked token by token against what is sampled.
    before = last()
    seq.planned(Proposal([4, 5, 6], [OWN] * 3), drafted=0)
    seq.sampled(4)
    seq.sampled(5)
    middle = last()
    assert middle > before
    seq.sampled(9)  # the proposal said 6: a miss, and the shadow ends
    after_miss = last()
    assert after_miss < middle
    seq.sampled(6)  # nothing is shadowed now: no change
    assert last() == after_miss
    # A drafted plan drops the shadow: its verification counts instead.
    seq.planned(Proposal([1, 2], [OWN] * 2), drafted=0)
    seq.planned(Proposal([1, 2], [OWN] * 2), drafted=2)
    seq.sampled(3)
    assert last() == after_miss
    # The worker's estimates moved with the sequence's, and a new sequence starts there.
    assert last(Proposal([1], [OWN])) != pytest.approx(PRIOR)
    first_p, later_p = (memory.acceptance[kind(OWN, position)].p for position in (0, 1))
    fresh = drafter([], memory).chances(Proposal([1, 1], [OWN, OWN]))
    assert fresh == pytest.approx([first_p, first_p * later_p])
