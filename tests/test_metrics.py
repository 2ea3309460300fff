"""Generation metrics on hand-made cases with known answers; the ridge baseline and the known-climb
index against plain references (a dense design matrix, a pass over every decoded row)."""
import os
import random
from collections import Counter

import numpy as np
import torch
import pytest

from conftest import run, shared
from metrics import (ClimbIndex, calibration, distinct_rate, fit_ridge, fit_temperature, frechet_distance, grade_classes,
                     hold_counts, jaccard_distance, js_divergence, random_routes, ridge_baseline, ridge_design,
                     ridge_features, ridge_normal_equations, ridge_predict, role_counts, route_features, shape_stats,
                     stiff_or_soft, two_sample_accuracy)
from model import grade_quantile
from routes import SPLITS, Grammar, load_meta, load_split, pad

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


# -----------------------------------------------------------------------------
# the ridge baseline: sparse design and Gram against a dense reference

def random_grade_rows(rng, n, role):
    """n grade-model inputs (<board> <angle> distinct holds) over the vocabulary of role: tokens
    2, 3 boards, 4..6 angles, then holds; angles with some unknown."""
    holds = np.flatnonzero(np.asarray(role) > 0)
    inputs = [[int(rng.integers(2, 4)), int(rng.integers(4, 7))]
              + sorted(rng.choice(holds, rng.integers(1, 13), replace=False).tolist()) for _ in range(n)]
    angles = rng.choice([0.0, 20.0, 40.0, 45.0, 70.0, np.nan], n)
    return inputs, angles


def dense_ridge(inputs, angles, role, y, w, l2):
    """The ridge baseline written out: dense features (numeric columns in float32, as the model
    has them) and the normal equations solved directly. -> (X, coef)."""
    V = len(role)
    X = np.zeros((len(inputs), V + 5))
    for i, (tokens, angle) in enumerate(zip(inputs, angles)):
        holds = [t for t in tokens if role[t] > 0]
        X[i, holds] = 1.0
        X[i, tokens[0]] = 1.0
        a = np.float32(0) if np.isnan(angle) else np.float32(angle) / np.float32(45)
        X[i, V:] = [a, a * a, float(np.isnan(angle)), np.float32(len(holds)) / np.float32(10), 1.0]
    penalty = np.full(V + 5, float(l2))
    penalty[-1] = 0.0
    return X, np.linalg.solve(X.T @ (w[:, None] * X) + np.diag(penalty), X.T @ (w * y))


def test_sparse_ridge_matches_the_dense_reference():
    rng = np.random.default_rng(1)
    role = [0, 0, 0, 0, 0, 0, 0] + list(rng.integers(1, 5, 40))  # pad, end, 2 boards, 3 angles, 40 holds
    inputs, angles = random_grade_rows(rng, 300, role)
    truth = rng.normal(size=len(role))
    y = np.array([truth[t].sum() for t in inputs]) + np.nan_to_num(angles) / 10 + rng.normal(size=300)
    w = rng.integers(0, 10, 300).astype(float)  # zeros too: rows that do not count
    X, coef = dense_ridge(inputs, angles, role, y, w, 3.0)
    design = ridge_design(inputs, angles, role)
    assert design.shape == X.shape and np.array_equal(ridge_features(inputs, angles, role).numpy(), X.astype(np.float32))
    fitted = fit_ridge(design, y, w, 3.0)
    assert np.allclose(fitted, coef, rtol=1e-9, atol=1e-9)
    assert np.allclose(ridge_predict(fitted, design), X @ coef, rtol=0, atol=1e-9)
    padded = ridge_design(pad(inputs), angles, role)  # the (N, T) form gives the same rows
    assert np.allclose(ridge_predict(fitted, padded), X @ coef, rtol=0, atol=1e-9)
    # chunks of a few rows (and rows of one count split across chunks) add up to the same Gram
    gram, rhs = ridge_normal_equations(design, y, w)
    small = ridge_normal_equations(design, y, w, chunk=50)
    assert np.allclose(gram, X.T @ (w[:, None] * X), atol=1e-9) and np.allclose(small[0], gram, atol=1e-9)
    assert np.allclose(rhs, X.T @ (w * y)) and np.allclose(small[1], rhs)


def test_ridge_baseline_picks_the_l2_of_the_dense_reference():
    rng = np.random.default_rng(2)
    role = [0] * 7 + list(rng.integers(1, 5, 30))
    inputs, angles = random_grade_rows(rng, 260, role)
    truth = rng.normal(size=len(role)) * 2
    y = np.array([truth[t].sum() for t in inputs]) + 3 * rng.normal(size=260)
    w = rng.integers(1, 6, 200).astype(float)
    train = dict(inputs=inputs[:200], angle=angles[:200], difficulty=y[:200])
    val = dict(inputs=inputs[200:], angle=angles[200:], difficulty=y[200:])
    grid = (0.01, 1.0, 30.0, 1000.0)
    X_val = dense_ridge(val['inputs'], val['angle'], role, np.zeros(60), np.ones(60), 1.0)[0]
    maes = []
    for l2 in grid:
        coef = dense_ridge(train['inputs'], train['angle'], role, train['difficulty'], w, l2)[1]
        maes.append((np.abs(X_val @ coef - val['difficulty']).mean(), l2, coef))
    mae, l2, coef = min(maes, key=lambda m: m[0])
    got_coef, got_l2, got_mae = ridge_baseline(train, val, role, w, grid)
    assert got_l2 == l2 and got_mae == pytest.approx(mae, abs=1e-9) and np.allclose(got_coef, coef, atol=1e-9)
    assert len({m[1] for m in maes if abs(m[0] - mae) < 1e-6}) == 1  # the choice is not a near tie


# -----------------------------------------------------------------------------
# the known-climb index against a pass over every decoded row

def brute_climbs(grammar, rows):
    """(board, hold set) -> dict(climb_id, name, grades, sizes, sets), in order of first row."""
    climbs = {}
    for split in rows:
        for i, tokens in enumerate(split['tokens']):
            route = grammar.decode(tokens)
            climb = climbs.setdefault((route['board'], frozenset(route['holds'])), dict(
                climb_id=split['climb_id'][i], name=split['name'][i], setter=split['setter'][i], grades={},
                sizes=split['sizes'][i], sets=split['sets'][i]))
            angle, difficulty = split['angle'][i], split['difficulty'][i]
            if not np.isnan(difficulty):
                climb['grades'][None if np.isnan(angle) else int(angle)] = float(difficulty)
    return climbs


def brute_nearest(climbs, board, holds, angle, wall):
    best = None
    for (b, known), climb in climbs.items():
        if b != board or (wall is not None and not wall.whole and not wall.fits(climb['sizes'], climb['sets'])):
            continue
        d = jaccard_distance(frozenset(holds), known)
        if best is None or d < best[0]:  # strictly less: ties go to the first climb
            best = (d, climb)
    return best and dict(distance=best[0], climb_id=best[1]['climb_id'], name=best[1]['name'],
                         setter=best[1]['setter'], difficulty=best[1]['grades'].get(angle))


def test_climb_index_answers_as_a_pass_over_every_row(tiny):
    folder = os.path.join(tiny['root'], 'tiny')
    meta = load_meta(folder)
    g = Grammar(meta)
    rows = [load_split(folder, meta, s) for s in SPLITS]
    # more rows of known hold sets: other ids (the first row's stays), other angles, regraded angles, no grade
    rng = random.Random(0)
    train = rows[0]
    picked = rng.sample(range(len(train['tokens'])), 30)
    extra = dict(tokens=[], climb_id=[], name=[], setter=[], angle=[], difficulty=[])
    for k, i in enumerate(picked):
        route = g.decode(train['tokens'][i])
        angle, difficulty = rng.choice([route['angle'], 0, 70]), rng.choice([float('nan'), 12.5, 20.25])
        extra['tokens'].append(g.encode('tiny', angle, None if np.isnan(difficulty) else difficulty, route['holds']))
        extra['climb_id'].append(f'copy{k}')
        extra['name'].append(f'copy {k}')
        extra['setter'].append(f'copier {k}')
        extra['angle'].append(float(angle))
        extra['difficulty'].append(difficulty)
    extra.update(angle=np.array(extra['angle']), difficulty=np.array(extra['difficulty']),
                 sizes=[(10,)] * len(picked), sets=[(1,)] * len(picked))
    rows.append(extra)
    index, climbs = ClimbIndex(g, rows), brute_climbs(g, rows)
    assert len(index) == len(climbs) < sum(len(r['tokens']) for r in rows)
    assert list(index.climbs) == list(climbs) and all(index.climbs[k] == c for k, c in climbs.items())
    assert any(len(c['grades']) > 1 for c in climbs.values())
    b = meta['boards'][0]
    walls = [None, g.wall('tiny', 11), g.wall('tiny', '', 'Bolt Ons'), g.wall('tiny', 11, 'Screw Ons')]
    hold_pairs = [(meta['hold_placement'][t], meta['hold_role'][t]) for t, k in enumerate(meta['kind']) if k == 'hold']
    known = [holds for _, holds in climbs]
    ties = on_wall = 0
    for n in range(400):
        holds = set(rng.choice(known))
        if n % 4 == 1:
            holds.discard(rng.choice(sorted(holds)))
        elif n % 4 == 2:
            holds.add(rng.choice(hold_pairs))
        elif n % 4 == 3:
            holds = set(rng.sample(hold_pairs, rng.randrange(1, 8)))
        angle, wall = rng.choice(b['angles'] + [None]), rng.choice(walls)
        assert index.contains('tiny', holds) == (('tiny', frozenset(holds)) in climbs)
        near = brute_nearest(climbs, 'tiny', holds, angle, wall)
        assert index.nearest('tiny', list(holds), angle, wall) == near
        if wall is None:
            ties += sum(jaccard_distance(frozenset(holds), h) == near['distance'] for _, h in climbs) > 1
        else:
            on_wall += near != brute_nearest(climbs, 'tiny', holds, angle, None)
    assert ties >= 5 and on_wall >= 20, (ties, on_wall)  # the tie rule and the walls were tested
    assert not index.contains('tiny', [(10 ** 6, 'start')]) and not index.contains('other', known[0])
    assert index.nearest('tiny', [], 40) == brute_nearest(climbs, 'tiny', [], 40, None)
    assert len(ClimbIndex(g, [])) == 0 and ClimbIndex(g, []).nearest('tiny', known[0]) is None


def test_climb_index_from_flat_tokens_is_the_same(tiny):
    """sample, grade and serve build the index from load_split(lists=False): the same climbs and answers."""
    folder = os.path.join(tiny['root'], 'tiny')
    meta = load_meta(folder)
    g = Grammar(meta)
    lists = ClimbIndex(g, [load_split(folder, meta, s) for s in SPLITS])
    flat = ClimbIndex(g, [load_split(folder, meta, s, lists=False) for s in SPLITS])
    assert len(flat) == len(lists) > 0 and dict(flat.climbs) == dict(lists.climbs)
    rng = random.Random(1)
    for _, holds in rng.sample(list(lists.climbs), 50):
        changed = sorted(holds)[1:]
        for wall in (None, g.wall('tiny', 11)):
            assert flat.nearest('tiny', changed, 40, wall) == lists.nearest('tiny', changed, 40, wall)


def test_calibration_and_temperature():
    rng = np.random.default_rng(0)
    n, k = 4000, 6
    logits = rng.normal(size=(n, k)) * 2
    true_p = torch.softmax(torch.as_tensor(logits), -1).numpy()
    classes = np.array([rng.choice(k, p=p) for p in true_p])  # drawn from the distribution: calibrated
    assert calibration(true_p, classes)['ece'] < 0.03
    # an overconfident model (logits x 3): a worse ECE, and fitting T on its log-probs finds about 3
    sharp = torch.log_softmax(torch.as_tensor(logits * 3), -1).numpy()
    assert calibration(np.exp(sharp), classes)['ece'] > 0.1
    t = fit_temperature(sharp, classes)
    assert 2.5 < t < 3.6 and calibration(torch.softmax(torch.as_tensor(sharp / t), -1).numpy(), classes)['ece'] < 0.03
    table = calibration(true_p, classes)['table']
    assert sum(row[2] for row in table) == n and all(lo <= c <= hi for lo, hi, _, c, _ in table)
    assert list(grade_classes([9.0, 10.4, 10.6, 33.0, 40.0], 10, 24)) == [0, 0, 1, 23, 23]


def test_grade_quantile_and_stiff_or_soft():
    probs = np.zeros((3, 24))
    probs[0, 10] = 1.0  # all on grade 20 (grade_min 10): spread over 19.5..20.5
    probs[1, [5, 15]] = 0.5  # half on 15, half on 25
    probs[2, :] = 1 / 24
    q = torch.stack([grade_quantile(torch.as_tensor(probs), t, 10) for t in (0.1, 0.5, 0.9)], 1).numpy()
    assert q[0] == pytest.approx([19.6, 20.0, 20.4]) and q[1, 1] == pytest.approx(15.5) and q[2, 1] == pytest.approx(21.5)
    verdict, band = stiff_or_soft([21.0, 20.0, 11.0], probs, 10)  # the uniform one's 10% point: 11.9
    assert list(verdict) == ['soft', 'as graded', 'stiff'] and band.shape == (3, 2)


# a 12 x 18 board; "set" routes climb a band up the middle, start low and finish high, feet at the bottom
XY = {100 + 12 * y + x: (x, y) for x in range(12) for y in range(18)}


def set_route(rng):
    hands = sorted(rng.sample(range(3, 15), rng.randint(4, 8)))
    route = {(100 + 12 * y + rng.randint(4, 7), 'middle') for y in hands}
    route |= {(100 + 12 * 1 + rng.randint(4, 7), 'start'), (100 + 12 * 17 + rng.randint(4, 7), 'finish')}
    route |= {(100 + rng.randint(0, 11), 'foot') for _ in range(rng.randint(1, 3))}
    return frozenset(route)


def test_route_features_see_holds_roles_counts_and_geometry():
    a = frozenset({(100, 'start'), (100 + 12 * 17 + 11, 'finish')})
    X = route_features([a, frozenset({(100, 'foot'), (100 + 12 * 17 + 11, 'finish')})], XY)
    assert X.shape[0] == 2 and (X[0] != X[1]).any()
    assert X[0, -6:].tolist() == pytest.approx([0, 1, 1, 1, 2 ** 0.5, 2 ** 0.5])  # lowest, highest, spans, the step
    assert X[0].sum() == pytest.approx(2 + 4 + 2 + sum(X[0, -6:]))  # 2 holds, 4 role counts, 2 grid cells


def test_two_sample_test_cannot_tell_like_from_like_and_tells_random_holds():
    rng = random.Random(0)
    real, more = [set_route(rng) for _ in range(400)], [set_route(rng) for _ in range(400)]
    same = two_sample_accuracy(real, more, XY)
    assert 0.42 < same['accuracy'] < 0.58 and same['n'] == 400
    random_holds = random_routes(real, XY, seed=1)
    assert [Counter(r for _, r in a) for a in random_holds] == [Counter(r for _, r in a) for a in real]  # same roles
    assert two_sample_accuracy(real, random_holds, XY)['accuracy'] > 0.95
    # a subtler difference: one hand hold fewer
    fewer = [r - {min(h for h in r if h[1] == 'middle')} for r in more]
    assert two_sample_accuracy(real, fewer, XY)['accuracy'] > 0.6


def test_two_sample_test_on_real_kilter_routes(tmp_path):
    run('prepare.py', 'config/kilter.py', f"--db={shared('kilter.db')}", f'--data_root={tmp_path}')
    meta = load_meta(os.path.join(tmp_path, 'kilter'))
    xy = Grammar(meta).xy['kilter']
    routes = {s: [frozenset(Grammar(meta).decode(t)['holds']) for t in load_split(os.path.join(tmp_path, 'kilter'), meta, s)['tokens']]
              for s in ('val', 'test')}
    assert 0.44 < two_sample_accuracy(routes['val'], routes['test'], xy)['accuracy'] < 0.56
    assert two_sample_accuracy(routes['val'], random_routes(routes['val'], xy), xy)['accuracy'] > 0.95
