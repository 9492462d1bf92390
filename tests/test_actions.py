"""Mask-1 and mask-0 actions against docs/semantics.md, Mask-1 and Mask-0 actions, on small NumPy arrays."""

import numpy as np
import pytest

from tf_lth.core import actions

W_INIT = np.array([[0.5, -1.0, 2.0], [-0.25, 1.5, -3.0]])
MASK = np.array([[1, 0, 1], [1, 0, 1]], dtype=np.float32)  # 4 of 6 kept
KEPT = MASK == 1
STD = np.std(W_INIT)  # population std of all six initial values


def rng(seed=0):
    return np.random.default_rng(seed)


def test_action_lists_match_spec():
    base = [
        "reinit",
        "reshuffle",
        "constant",
        "signed_reinit",
        "signed_reshuffle",
        "signed_constant",
    ]
    assert set(actions.MASK_ONE_ACTIONS) == {"none"} | set(base) | {
        f"{name}_rescaled" for name in base
    }
    assert set(actions.MASK_ZERO_ACTIONS) == {
        "zero",
        "freeze_init",
        "freeze_init_zero_mask",
        "freeze_init_zero_all",
        "freeze_init_zero_reshuffle",
        "freeze_init_zero_rev",
    }


# --- Mask-1 actions -------------------------------------------------------------------------


@pytest.mark.parametrize("action", actions.MASK_ONE_ACTIONS)
def test_every_mask_one_action_zeroes_pruned_positions(action):
    values = actions.mask_one_values(action, W_INIT, MASK, rng())
    assert values.shape == W_INIT.shape
    np.testing.assert_array_equal(values[~KEPT], 0)
    assert np.all(values[KEPT] != 0)


def test_none_keeps_initial_values():
    values = actions.mask_one_values("none", W_INIT, MASK, rng())
    np.testing.assert_array_equal(values, [[0.5, 0, 2.0], [-0.25, 0, -3.0]])


def test_reinit_draws_without_replacement_from_all_initial_values():
    seen_pruned_value = False
    for seed in range(20):
        values = actions.mask_one_values("reinit", W_INIT, MASK, rng(seed))[KEPT]
        assert len(set(values.tolist())) == 4  # distinct: without replacement
        assert set(values.tolist()) <= set(W_INIT.ravel().tolist())
        seen_pruned_value |= bool(np.isin([-1.0, 1.5], values).any())
    assert seen_pruned_value  # draws come from the whole layer, not only the kept weights


def test_reshuffle_permutes_the_kept_initial_values():
    moved = False
    for seed in range(10):
        values = actions.mask_one_values("reshuffle", W_INIT, MASK, rng(seed))
        assert sorted(values[KEPT].tolist()) == sorted(W_INIT[KEPT].tolist())
        moved |= not np.array_equal(values[KEPT], W_INIT[KEPT])
    assert moved


def test_constant_has_std_magnitude_and_the_layers_signs_shuffled():
    # The layer has 3 positive and 3 negative signs; kept draws come from that multiset.
    sign_changed = False
    for seed in range(10):
        values = actions.mask_one_values("constant", W_INIT, MASK, rng(seed))
        np.testing.assert_allclose(np.abs(values[KEPT]), STD)
        sign_changed |= bool(np.any(np.sign(values[KEPT]) != np.sign(W_INIT[KEPT])))
    assert sign_changed  # the signs are shuffled, not read from the position
    # A full mask shows the whole permutation of signs: still 3 positive and 3 negative.
    for seed in range(3):
        full = actions.mask_one_values("constant", W_INIT, np.ones((2, 3)), rng(seed))
        assert sorted(np.sign(full).ravel().tolist()) == [-1, -1, -1, 1, 1, 1]


@pytest.mark.parametrize("action", ["signed_reinit", "signed_reshuffle", "signed_constant"])
def test_signed_actions_keep_the_sign_of_w_init(action):
    for seed in range(5):
        values = actions.mask_one_values(action, W_INIT, MASK, rng(seed))
        np.testing.assert_array_equal(np.sign(values[KEPT]), np.sign(W_INIT[KEPT]))


def test_signed_constant_is_std_times_sign():
    values = actions.mask_one_values("signed_constant", W_INIT, MASK, rng())
    np.testing.assert_allclose(values, STD * np.array([[1, 0, 1], [-1, 0, -1]]))


def test_signed_reshuffle_magnitudes_are_the_kept_magnitudes():
    values = actions.mask_one_values("signed_reshuffle", W_INIT, MASK, rng(3))
    assert sorted(np.abs(values[KEPT]).tolist()) == [0.25, 0.5, 2.0, 3.0]


@pytest.mark.parametrize(
    "action",
    ["reinit", "reshuffle", "constant", "signed_reinit", "signed_reshuffle", "signed_constant"],
)
def test_rescaled_variants_multiply_by_size_over_kept(action):
    plain = actions.mask_one_values(action, W_INIT, MASK, rng(7))
    rescaled = actions.mask_one_values(f"{action}_rescaled", W_INIT, MASK, rng(7))
    np.testing.assert_allclose(rescaled, plain * 6 / 4)


# --- Mask-0 actions -------------------------------------------------------------------------

# Six weights: 0 and 1 were pruned earlier (frozen at 7 and 0), 2-4 are pruned this round,
# 5-7 stay kept. abs(w_f) < abs(w_i) ("shrank") at positions 2, 3 and 5.
Z_INIT = np.array([1.0, 2.0, 3.0, -4.0, 5.0, -6.0, 7.0, 8.0])
Z_FINAL = np.array([9.0, 9.0, 1.0, 3.0, -6.0, -1.0, 7.5, -9.0])
Z_PREV = np.array([0, 0, 1, 1, 1, 1, 1, 1], dtype=np.float32)
Z_NEW = np.array([0, 0, 0, 0, 0, 1, 1, 1], dtype=np.float32)
Z_PREV_FROZEN = np.array([7.0, 0.0, 0, 0, 0, 0, 0, 0])


def zero_values(action, seed=0):
    return actions.mask_zero_values(
        action, Z_INIT, Z_FINAL, Z_NEW, Z_PREV, Z_PREV_FROZEN, rng(seed)
    )


@pytest.mark.parametrize(
    "action, expected",
    [
        ("zero", [7, 0, 0, 0, 0, 0, 0, 0]),
        ("freeze_init", [7, 0, 3, -4, 5, 0, 0, 0]),
        ("freeze_init_zero_mask", [7, 0, 0, 0, 5, 0, 0, 0]),
        ("freeze_init_zero_all", [7, 0, 0, 0, 5, 0, 0, 0]),
        ("freeze_init_zero_rev", [7, 0, 3, -4, 0, 0, 0, 0]),
    ],
)
def test_mask_zero_frozen_values(action, expected):
    frozen, _ = zero_values(action)
    np.testing.assert_array_equal(frozen, expected)


@pytest.mark.parametrize("action", actions.MASK_ZERO_ACTIONS)
def test_earlier_pruned_keep_prev_frozen_and_kept_hold_zero(action):
    frozen, zero_start = zero_values(action)
    np.testing.assert_array_equal(frozen[:2], [7, 0])
    np.testing.assert_array_equal(frozen[5:], 0)
    assert zero_start.dtype == bool and zero_start.shape == Z_INIT.shape


def test_variant_two_zeroes_exactly_the_kept_weights_that_shrank():
    _, zero_start = zero_values("freeze_init_zero_all")
    np.testing.assert_array_equal(zero_start, [0, 0, 0, 0, 0, 1, 0, 0])
    for action in actions.MASK_ZERO_ACTIONS:
        if action != "freeze_init_zero_all":
            assert not zero_values(action)[1].any()


def test_zero_reshuffle_zeroes_as_many_as_variant_one_at_random():
    chosen = set()
    for seed in range(20):
        frozen, _ = zero_values("freeze_init_zero_reshuffle", seed)
        newly = frozen[2:5]
        assert np.sum(newly == 0) == 2  # variant 1 zeroes two of the three
        assert set(newly[newly != 0].tolist()) <= {3.0, -4.0, 5.0}  # the rest stay at w_i
        chosen.add(tuple(newly == 0))
    assert len(chosen) > 1


def test_first_round_accepts_no_prev_frozen():
    frozen, _ = actions.mask_zero_values(
        "freeze_init", Z_INIT, Z_FINAL, Z_NEW, np.ones(8), None, rng()
    )
    np.testing.assert_array_equal(frozen, [1, 2, 3, -4, 5, 0, 0, 0])


# --- Both together --------------------------------------------------------------------------


def test_next_round_values_combines_both_actions():
    start, frozen = actions.next_round_values(
        "none", "freeze_init_zero_all", Z_INIT, Z_FINAL, Z_NEW, Z_PREV, Z_PREV_FROZEN, rng()
    )
    np.testing.assert_array_equal(frozen, [7, 0, 0, 0, 5, 0, 0, 0])
    # Kept: w_init except position 5, which shrank; pruned positions hold the frozen values.
    np.testing.assert_array_equal(start, [7, 0, 0, 0, 5, 0, 7, 8])
    effective = Z_NEW * start + (1 - Z_NEW) * frozen
    np.testing.assert_array_equal(effective, start)


def test_next_round_values_lottery_ticket():
    start, frozen = actions.next_round_values(
        "none", "zero", Z_INIT, Z_FINAL, Z_NEW, Z_PREV, np.zeros(8), rng()
    )
    np.testing.assert_array_equal(start, [0, 0, 0, 0, 0, -6, 7, 8])
    np.testing.assert_array_equal(frozen, np.zeros(8))


# --- Errors ---------------------------------------------------------------------------------


def test_unknown_actions_raise_with_allowed_names():
    with pytest.raises(
        ValueError,
        match=r"Unknown mask-1 action 'reinti'\. Allowed: none, reinit, .* Received: "
        r"action='reinti'",
    ):
        actions.mask_one_values("reinti", W_INIT, MASK, rng())
    with pytest.raises(
        ValueError, match=r"Unknown mask-0 action 'zeros'\. Allowed: zero, freeze_init, .*"
    ):
        zero_values("zeros")
    with pytest.raises(ValueError, match=r"Received: mask_one_action='nope'"):
        actions.next_round_values("nope", "zero", Z_INIT, Z_FINAL, Z_NEW, Z_PREV, None, rng())


def test_shape_and_mask_errors():
    with pytest.raises(ValueError, match=r"mask must have the shape of w_init \(2, 3\)"):
        actions.mask_one_values("none", W_INIT, np.ones(6), rng())
    with pytest.raises(ValueError, match=r"Received: w_final\.shape=\(7,\)"):
        actions.mask_zero_values("zero", Z_INIT, np.ones(7), Z_NEW, Z_PREV, None, rng())
    with pytest.raises(ValueError, match="pruned weights never come back"):
        actions.mask_zero_values("zero", Z_INIT, Z_FINAL, np.ones(8), Z_PREV, None, rng())
