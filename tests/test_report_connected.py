"""`report.connected`: items that share a key, directly or through others, in one group; groups
and members in the items' order. Its shortcut (no key met twice) gives what the union-find
gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node_agent.report import connected


def _naive(items: list[list[int]]) -> list[list[int]]:
    groups: list[set[int]] = []
    for index, item in enumerate(items):
        joined = {index}
        for group in [g for g in groups if any(set(item) & set(items[m]) for m in g)]:
            groups.remove(group)
            joined |= group
        groups.append(joined)
    return sorted(sorted(group) for group in groups)


@given(st.lists(st.lists(st.integers(0, 30), max_size=4), max_size=12))
def test_groups_are_the_components(items: list[list[int]]) -> None:
    assert connected(items) == _naive(items)
    assert connected(iter(items)) == _naive(items)  # any iterable of items


def test_items_sharing_nothing_are_alone_in_order() -> None:
    assert connected([["a", "b"], ["c"], [], ["d"]]) == [[0], [1], [2], [3]]


def test_a_key_twice_in_one_item_joins_nothing_else() -> None:
    assert connected([["a", "a"], ["b"], ["c", "b"]]) == [[0], [1, 2]]
