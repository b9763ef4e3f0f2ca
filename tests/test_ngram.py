"""NgramDrafter and NgramMemory: proposals from a sequence's own tokens and from what the
model wrote before after the same context, and the estimate of how many get kept."""

from __future__ import annotations

import pytest

from llm_worker_rbee.engine.ngram import (
    MATCHES,
    MEMORY_FIRST,
    MEMORY_KEY,
    MEMORY_LATER,
    PRIORS,
    NgramDrafter,
    NgramMemory,
    Proposal,
    own_kind,
)

SHORT, LONG = own_kind(0), own_kind(MATCHES[-1])  # a chance match, a copy under way


def drafter(prompt: list[int], memory: NgramMemory | None = None, **kw: int) -> NgramDrafter:
    return NgramDrafter(prompt, NgramMemory() if memory is None else memory, **kw)


def tokens(drafter: NgramDrafter, limit: int) -> list[int]:
    return drafter.propose(limit).tokens


@pytest.mark.behavior("INF-068")
def test_the_proposal_is_what_followed_the_latest_earlier_occurrence_of_the_tail() -> None:
    seq = drafter([1, 2, 3, 4, 5, 6, 9, 2, 3, 7, 8, 1, 2, 3])
    # The tail (1, 2, 3) occurred at the start, followed by 4, 5, 6, 9, 2, 3, 7 ...; its
    # match is those 3 tokens, and each token copied after it matches one more.
    kinds = [own_kind(match) for match in range(3, 8)]
    assert seq.propose(5) == Proposal([4, 5, 6, 9, 2], kinds)
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
    kinds = [MEMORY_FIRST] + [MEMORY_LATER] * (len(output) - 1)
    assert drafter(prompt, memory).propose(8) == Proposal(output, kinds)
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
    assert drafter(own, memory).propose(3) == Proposal([5], [MEMORY_FIRST])
    assert tokens(drafter(own), 3) == [6, 7, 8]  # without the memory's word


@pytest.mark.behavior("INF-068")
def test_the_memory_tells_apart_two_places_where_one_context_went_on_differently() -> None:
    memory = NgramMemory()
    context = list(range(300, 300 + MEMORY_KEY))
    # The model wrote `context`, then 1 after it; later the same context again, then 2.
    output = [*context, 1, 9, 8, *context, 2, 7]
    first = drafter([5], memory)
    for token in output:
        first.sampled(token)
    # Another sequence writing the same text gets each place's own token back: 1 the first
    # time, 2 the second, within one proposal or across steps.
    second = drafter([5], memory)
    for token in output[:MEMORY_KEY]:
        second.sampled(token)
    assert tokens(second, 4 + MEMORY_KEY) == output[MEMORY_KEY : 2 * MEMORY_KEY + 4]
    for token in output[MEMORY_KEY : 2 * MEMORY_KEY + 3]:
        second.sampled(token)
    assert tokens(second, 2) == [2, 7]
    # A third time, which no sequence wrote yet: the first time's token.
    for token in [2, 7, *context]:
        second.sampled(token)
    assert tokens(second, 1) == [1]


@pytest.mark.behavior("INF-068")
def test_the_memory_forgets_its_oldest_quarter_when_full() -> None:
    memory = NgramMemory(entries=8)
    context = list(range(1000, 1000 + MEMORY_KEY))
    for token in range(9):
        key = NgramMemory.key(context)
        assert key is not None
        memory.remember(key, 0, token)
        context = [*context[1:], token]
    assert len(memory) == 9 - 8 // 4


@pytest.mark.behavior("INF-068")
def test_a_copy_under_way_is_told_from_a_chance_match_and_followed_past_other_passages() -> None:
    passage = list(range(10, 40))
    # 20 tokens of the passage copied: each proposed token's match is long.
    seq = drafter([*passage, 1, 2, *passage[:20]])
    assert seq.propose(4) == Proposal(passage[20:24], [LONG] * 4)
    # (1, 2) was once followed by 5 by chance: a short match.
    assert drafter([1, 2, 5, 6, 1, 2]).propose(1) == Proposal([5], [own_kind(2)])
    # Another passage holds the copy's tail (33, 34, 35) later than the passage and goes on
    # otherwise (99): the latest occurrence, but the sequence has been following the
    # passage, whose match is longer.
    other = [7, 33, 34, 35, 99]
    followed = drafter([*passage, *other, 10], NgramMemory(entries=0))
    for token in passage[1:26]:
        followed.sampled(token)
    assert followed.propose(1) == Proposal([36], [LONG])
    cold = drafter([*passage, *other, *passage[:26]], NgramMemory(entries=0))
    assert cold.propose(1) == Proposal([99], [own_kind(3)])


@pytest.mark.behavior("INF-068")
def test_acceptance_follows_drafts_kept_and_proposals_checked_while_not_drafting() -> None:
    memory = NgramMemory()
    seq = drafter([], memory)
    copy = Proposal([1] * 8, [LONG] * 8)

    def last(proposal: Proposal = copy) -> float:
        """The chance of a proposal's last token: every estimate it depends on moves it."""
        return seq.chances(proposal)[-1]

    # Each kind starts from its prior: a chance match's below a copy's under way.
    short, long, later = PRIORS[SHORT], PRIORS[LONG], PRIORS[MEMORY_LATER]
    assert short < long
    mixed = Proposal([1, 1, 1], [SHORT, LONG, MEMORY_LATER])
    assert seq.chances(mixed) == pytest.approx([short, short * long, short * long * later])
    seq.verified(copy, kept=8)
    high = last()
    assert high > long**8
    assert last(Proposal([1], [MEMORY_FIRST])) == pytest.approx(PRIORS[MEMORY_FIRST])
    seq.verified(copy, kept=0)
    assert last() < high
    # Not drafted: the proposal is checked token by token against what is sampled.
    before = last()
    seq.planned(Proposal([4, 5, 6], [LONG] * 3), drafted=0)
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
    seq.planned(Proposal([1, 2], [LONG] * 2), drafted=0)
    seq.planned(Proposal([1, 2], [LONG] * 2), drafted=2)
    seq.sampled(3)
    assert last() == after_miss
    # The worker's estimates moved with the sequence's, and a new sequence starts there.
    moved = memory.acceptance[LONG].p
    assert moved != pytest.approx(long)
    fresh = drafter([], memory).chances(Proposal([1, 1], [LONG, SHORT]))
    assert fresh == pytest.approx([moved, moved * short])
