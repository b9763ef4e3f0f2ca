"""NgramDrafter: prompt-lookup drafts from a sequence's own tokens, their length adapted."""

from __future__ import annotations

import pytest

from llm_worker_rbee.engine.ngram import FIRST_DRAFT, MAX_DRAFT, NgramDrafter


@pytest.mark.behavior("INF-068")
def test_the_draft_is_what_followed_the_latest_earlier_occurrence_of_the_tail() -> None:
    drafter = NgramDrafter([1, 2, 3, 4, 5, 6, 9, 2, 3, 7, 8, 1, 2, 3], max_draft=8)
    # The tail (1, 2, 3) occurred at the start, followed by 4, 5, 6, 9: the first FIRST_DRAFT.
    assert drafter.draft(8) == [4, 5, 6, 9][:FIRST_DRAFT]
    drafter.extend([4])
    # (2, 3, 4) occurred once, followed by 5, 6, 9, 2 ...
    assert drafter.draft(2) == [5, 6]


@pytest.mark.behavior("INF-068")
def test_a_shorter_ngram_answers_when_the_longer_never_occurred_and_none_when_nothing() -> None:
    drafter = NgramDrafter([5, 7, 8, 1, 9, 7, 8])
    # (9, 7, 8) is new; (7, 8) followed by 1 earlier.
    assert drafter.draft(4) == [1, 9, 7, 8]
    assert NgramDrafter([1, 2, 3, 4]).draft(4) == []
    assert NgramDrafter([1, 2, 1, 2]).draft(0) == []


@pytest.mark.behavior("INF-068")
def test_the_length_doubles_after_a_whole_draft_and_shrinks_after_a_miss() -> None:
    drafter = NgramDrafter([], max_draft=MAX_DRAFT)
    assert drafter.length == FIRST_DRAFT
    drafter.accepted(FIRST_DRAFT, FIRST_DRAFT)
    assert drafter.length == 2 * FIRST_DRAFT
    drafter.accepted(8, 8)
    drafter.accepted(16, 16)
    assert drafter.length == MAX_DRAFT  # capped
    drafter.accepted(16, 2)
    assert drafter.length == 3  # what was kept, plus one
    drafter.accepted(3, 0)
    assert drafter.length == 1
    drafter.accepted(0, 0)  # no draft: nothing learned
    assert drafter.length == 1
