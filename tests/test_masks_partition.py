"""The linear-time path of 1x1 pruning picks exactly the weights a full sort would."""

import numpy as np
import pytest

from tf_lth.core import masks


def _by_full_sort(unit_scores, candidates, rng, target):
    order = masks._score_order(unit_scores, candidates, rng)
    return set(order[:target].tolist())


@pytest.mark.parametrize("seed", range(6))
def test_partition_picks_the_same_units_as_a_full_sort_with_ties(seed):
    data = np.random.default_rng(seed)
    scores = data.integers(0, 7, size=500).astype(np.float64)  # many ties
    candidates = data.random(500) < 0.7
    for target in (0, 1, 37, int(candidates.sum()) // 2, int(candidates.sum()) - 1,
                   int(candidates.sum())):
        fast = masks._lowest_units(scores, candidates, np.random.default_rng(seed), target)
        assert len(fast) == target and candidates[fast].all()
        assert set(fast.tolist()) == _by_full_sort(scores, candidates,
                                                   np.random.default_rng(seed), target)


def test_pruned_count_is_floor_of_rate_times_kept_and_the_smallest_go():
    w_final = np.arange(1.0, 11.0).reshape(5, 2)  # |w| 1..10, all distinct
    mask = np.ones((5, 2), np.float32)
    mask[4, 1] = 0.0  # the largest is already pruned: 9 kept, floor(0.5 * 9) = 4 go
    new = masks.compute_mask("large_final", w_final, w_final, mask, 0.5,
                             rng=np.random.default_rng(0))
    assert new.ravel().tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
