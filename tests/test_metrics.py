"""Generation metrics on hand-made cases with known answers."""
from collections import Counter

import numpy as np
import pytest

from metrics import distinct_rate, frechet_distance, hold_counts, jaccard_distance, js_divergence, role_counts, shape_stats

A = frozenset({(1, 'start'), (2, 'middle'), (3, 'finish')})
B = frozenset({(1, 'start'), (4, 'middle'), (3, 'finish')})
C = frozenset({(7, 'start'), (8, 'finish')})


def test_jaccard():
    assert jaccard_distance(A, A) == 0.0
    assert jaccard_distance(A, C) == 1.0
    assert jaccard_distance(A, B) == pytest.approx(1 - 2 / 4)
    assert jaccard_distance(A, frozenset({(1, 'foot'), (2, 'middle'), (3, 'finish')})) == pytest.approx(0.5)  # roles count


def test_distinct():
    assert distinct_rate([A, B, A, A]) == 0.5
    assert distinct_rate([A, B, C]) == 1.0


def test_js_divergence():
    p = Counter({1: 3, 2: 1})
    assert js_divergence(p, Counter({1: 6, 2: 2})) == pytest.approx(0.0)  # same distribution, other total
    assert js_divergence(p, Counter({3: 5})) == pytest.approx(1.0)
    mid = js_divergence(Counter({1: 1}), Counter({1: 1, 2: 1}))
    assert 0 < mid < 1 and mid == pytest.approx(js_divergence(Counter({1: 1, 2: 1}), Counter({1: 1})))


def test_histograms_and_shapes():
    assert hold_counts([A, B, C]) == Counter({3: 2, 2: 1})
    rc = role_counts([A, C])
    assert rc[('start', 1)] == 2 and rc[('middle', 1)] == 1 and rc[('middle', 0)] == 1 and rc[('foot', 0)] == 2
    xy = {1: (0, 0), 2: (4, 8), 3: (8, 16), 7: (0, 4), 8: (0, 12)}
    s = shape_stats([A, C], xy)
    assert s == dict(top=14.0, height_span=12.0, width_span=4.0)


def test_frechet():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # same covariance, mean shifted by 3 along one axis: distance is 9
    assert frechet_distance(x, x + np.array([3.0, 0, 0, 0])) == pytest.approx(9.0, abs=1e-6)
    assert frechet_distance(x, 2 * x) > 1.0
