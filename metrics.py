"""
The numbers evaluate.py reports about generated routes, as plain functions so that each can be
checked on small cases with known answers (tests/test_metrics.py).

A route here is a frozenset of (placement, role) pairs: two routes are the same when they light
the same holds in the same roles, whatever order they were written in.
"""

import math
from collections import Counter

import numpy as np


def distinct_rate(routes):
    """Share of routes that no earlier route in the list repeats."""
    return len(set(routes)) / len(routes) if routes else float('nan')


def jaccard_distance(a, b):
    """1 - |a & b| / |a | b|: 0 for the same set, 1 for sets with nothing in common."""
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


def nearest_jaccard(routes, reference):
    """For each route, the Jaccard distance to its nearest reference route (one matrix product
    over hold-and-role indicator vectors, not a Python double loop)."""
    items = {h: i for i, h in enumerate(sorted({h for r in list(routes) + list(reference) for h in r}, key=str))}

    def indicator(rs):
        m = np.zeros((len(rs), len(items)), dtype=np.float32)
        for i, r in enumerate(rs):
            m[i, [items[h] for h in r]] = 1.0
        return m
    a, b = indicator(routes), indicator(reference)
    inter = a @ b.T
    union = a.sum(1, keepdims=True) + b.sum(1)[None, :] - inter
    sim = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return 1.0 - sim.max(1)


def copy_rate(routes, reference):
    """Share of routes that are exactly a reference route."""
    ref = set(reference)
    return sum(r in ref for r in routes) / len(routes) if routes else float('nan')


def js_divergence(p, q):
    """Jensen-Shannon divergence (base 2, so 0..1) of two histograms given as Counters or dicts:
    0 for identical distributions, 1 for ones with disjoint support."""
    keys = set(p) | set(q)
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return float('nan')
    js = 0.0
    for k in keys:
        a, b = p.get(k, 0) / sp, q.get(k, 0) / sq
        m = (a + b) / 2
        js += 0.5 * (a * math.log2(a / m) if a else 0.0) + 0.5 * (b * math.log2(b / m) if b else 0.0)
    return max(0.0, js)


def hold_usage(routes):
    return Counter(p for r in routes for p, _ in r)


def role_counts(routes):
    """How many holds of each role routes have, as a histogram of (role, count) pairs."""
    roles = ('start', 'middle', 'finish', 'foot')
    return Counter((role, sum(1 for _, r in route if r == role)) for route in routes for role in roles)


def hold_counts(routes):
    return Counter(len(r) for r in routes)


def shape_stats(routes, xy):
    """Mean height reached (highest hold), vertical span and horizontal span, in board units."""
    ys = [[xy[p][1] for p, _ in r] for r in routes]
    xs = [[xy[p][0] for p, _ in r] for r in routes]
    return dict(top=float(np.mean([max(y) for y in ys])), height_span=float(np.mean([max(y) - min(y) for y in ys])),
                width_span=float(np.mean([max(x) - min(x) for x in xs])))


def frechet_distance(a, b):
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows): 0 when the
    means and covariances agree. The matrix square root comes from an eigendecomposition."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(ca cb) = sum of sqrt of the eigenvalues of sqrt(ca) cb sqrt(ca), all >= 0
    w, v = np.linalg.eigh(ca)
    sqrt_ca = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(sqrt_ca @ cb @ sqrt_ca)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt)
