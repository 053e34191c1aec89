"""Full-ranking metrics and paired tests (cprec_core/metrics.py), on cases worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cprec_core.metrics import full_ranks, mean_metrics, metric_names, paired_test, per_user_metrics

# 4 users x 3 items, worked by hand (rank = items other than the target, not in history, with a
# score >= the target's: ties count against the target):
#   u0 scores [0.9, 0.5, 0.1] target 0                     -> nothing >= 0.9           rank 0
#   u1 scores [0.9, 0.5, 0.1] target 2                     -> items 0, 1 >= 0.1        rank 2
#   u2 scores [0.3, 0.3, 0.2] target 1                     -> item 0 ties at 0.3       rank 1
#   u3 scores [0.8, 0.1, 0.7] target 2, item 0 in history  -> item 0 excluded          rank 0
SCORES = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.3, 0.3, 0.2], [0.8, 0.1, 0.7]])
TARGETS = np.array([0, 2, 1, 2])
HISTORY = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)


def test_hand_computed_4x3_case() -> None:
    ranks = full_ranks(SCORES, TARGETS, HISTORY)
    assert ranks.tolist() == [0, 2, 1, 0]
    m = mean_metrics(ranks, [1, 2])
    # Recall@1: hits [1,0,0,1] -> 0.5;  Recall@2: [1,0,1,1] -> 0.75
    assert m["Recall@1"] == pytest.approx(0.5)
    assert m["Recall@2"] == pytest.approx(0.75)
    # NDCG@1 = Recall@1 here; NDCG@2: [1, 0, 1/log2(3) = 0.63093, 1] -> 2.63093 / 4 = 0.65773
    assert m["NDCG@1"] == pytest.approx(0.5)
    assert m["NDCG@2"] == pytest.approx((2 + 1 / math.log2(3)) / 4)
    # MRR: [1, 1/3, 1/2, 1] -> 2.83333 / 4 = 0.70833
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1) / 4)
    assert list(m) == metric_names([1, 2]) == ["Recall@1", "Recall@2", "NDCG@1", "NDCG@2", "MRR"]


def test_without_history_mask_u3_is_beaten_by_item_0() -> None:
    # u3 unmasked: item 0 (0.8) beats the target (0.7) -> rank 1
    assert full_ranks(SCORES, TARGETS)[3] == 1


def test_ties_are_pessimistic_constant_scores_rank_last() -> None:
    # 5 items all scored 1.0: every other item ties with the target -> rank 4 (the last place)
    ranks = full_ranks(np.ones((3, 5)), np.array([0, 2, 4]))
    assert ranks.tolist() == [4, 4, 4]
    assert mean_metrics(ranks, [4])["Recall@4"] == 0.0


def test_target_is_never_masked_even_when_in_history() -> None:
    # the target (item 1) is also a history item (a repeat purchase): it still gets ranked;
    # item 0 is masked, item 2 (0.9) beats the target (0.5) -> rank 1
    scores = np.array([[0.95, 0.5, 0.9]])
    history = np.array([[True, True, False]])
    assert full_ranks(scores, np.array([1]), history).tolist() == [1]


def test_matches_a_naive_per_user_loop_on_random_data_with_ties() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 40
    scores = np.round(rng.random((n_users, n_items)), 1)  # one decimal: many ties
    targets = rng.integers(0, n_items, n_users)
    history = rng.random((n_users, n_items)) < 0.2
    expected = []
    for u in range(n_users):
        t = targets[u]
        expected.append(
            sum(1 for j in range(n_items) if j != t and not history[u, j] and scores[u, j] >= scores[u, t])
        )
    ranks = full_ranks(scores, targets, history)
    assert ranks.tolist() == expected
    per_user = per_user_metrics(ranks, [10])
    for u in range(n_users):
        r = expected[u]
        assert per_user["NDCG@10"][u] == pytest.approx(1 / math.log2(r + 2) if r < 10 else 0.0)
        assert per_user["Recall@10"][u] == (1.0 if r < 10 else 0.0)
        assert per_user["MRR"][u] == pytest.approx(1 / (r + 1))


def test_bad_inputs_fail_clearly() -> None:
    with pytest.raises(ValueError, match="NaN"):
        full_ranks(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="out of range"):
        full_ranks(np.ones((1, 2)), np.array([2]))
    with pytest.raises(ValueError, match="history mask"):
        full_ranks(np.ones((1, 2)), np.array([0]), np.zeros((1, 3), dtype=bool))


def test_paired_tests_on_a_hand_case() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = np.zeros(5)
    # Wilcoxon: 5 positive differences, W- = 0; exact two-sided p = 2 * (1 / 2^5) = 0.0625
    w = paired_test(a, b, "wilcoxon")
    assert (w.statistic, w.n_users, w.mean_a, w.mean_b) == (0.0, 5, 3.0, 0.0)
    assert w.p_value == pytest.approx(0.0625)
    # paired t: d = 1..5, mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426 (df 4, p ~ 0.013)
    t = paired_test(a, b, "ttest")
    assert t.statistic == pytest.approx(3 / (math.sqrt(2.5) / math.sqrt(5)))
    assert 0.01 < t.p_value < 0.02
    # identical variants: no evidence of a difference at all
    assert paired_test(a, a.copy(), "wilcoxon").p_value == 1.0
    with pytest.raises(ValueError, match="evaluate.test"):
        paired_test(a, b, "sign")
