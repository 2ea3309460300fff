"""
Every number boardgpt reports, as plain functions of their inputs, so that each can be checked on
small cases with known answers (tests/test_metrics.py), and the two baselines the models are
measured against:

- generated routes: distinct and copy rates, novelty (Jaccard distance to the nearest known
  route), realism (Jensen-Shannon divergences, shape, Fréchet distance of embeddings); a route
  here is a frozenset of (placement, role) pairs, so two routes are the same when they light the
  same holds in the same roles;
- grades: MAE, RMSE, R², exact / within-1 / within-2 V and exact / within-1 Font grade, per board,
  on all rows and on rows with enough ascents, in app difficulty units (10..33 = Font 4a..8c+);
- the ridge baseline (grades from hold-and-angle features, closed form) and the frequency
  baseline (routes from hold frequencies, under the same grammar as the GPT).
"""

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Mapping

import numpy as np
import torch

from engine import sample_tokens
from model import grade_quantile
from routes import CONDITIONING, END, DecodingRules, fits_wall, font_grade, v_number


def distinct_rate(routes):
    """Share of routes that no earlier route in the list repeats."""
    return len(set(routes)) / len(routes) if routes else float('nan')


def jaccard_distance(a, b):
    """1 - |a & b| / |a | b|: 0 for the same set, 1 for sets with nothing in common."""
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


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


# -----------------------------------------------------------------------------
# the two-sample test: can a classifier tell generated routes from real ones?

FEATURE_ROLES = ('start', 'middle', 'finish', 'foot')


def route_features(routes, xy, grid=4, max_count=16):
    """Routes (sets of (placement, role)) of one board as what the two-sample test's classifier
    sees: each hold in each role (one-hot over the board's holds), how many holds of each role,
    how many of each role in each cell of a coarse grid x grid over the board, and the geometry:
    the lowest and highest hold, the height and width spanned, the mean and the largest step
    between hand holds in height order. xy: placement -> (x, y), the board's holds."""
    placements = sorted(xy)
    index = {p: i for i, p in enumerate(placements)}
    pts = np.array([xy[p] for p in placements], dtype=np.float64)
    lo, span = pts.min(0), np.maximum(pts.max(0) - pts.min(0), 1e-9)
    R, H = len(FEATURE_ROLES), len(placements)
    X = np.zeros((len(routes), H * R + R * max_count + R * grid * grid + 6), dtype=np.float32)
    for n, route in enumerate(routes):
        counts = np.zeros(R, dtype=int)
        for p, role in route:
            r = FEATURE_ROLES.index(role)
            X[n, index[p] * R + r] = 1
            counts[r] += 1
            u = np.minimum(((np.asarray(xy[p]) - lo) / span * grid).astype(int), grid - 1)
            X[n, H * R + R * max_count + (r * grid + u[1]) * grid + u[0]] += 1
        X[n, H * R + np.arange(R) * max_count + np.minimum(counts, max_count - 1)] = 1
        at = (np.array([xy[p] for p, _ in route]) - lo) / span
        hands = np.array(sorted((xy[p][1], xy[p][0]) for p, role in route if role != 'foot'))[:, ::-1]
        steps = np.linalg.norm(np.diff((hands - lo) / span, axis=0), axis=1) if len(hands) > 1 else np.zeros(1)
        X[n, -6:] = at[:, 1].min(), at[:, 1].max(), np.ptp(at[:, 1]), np.ptp(at[:, 0]), steps.mean(), steps.max()
    return X


def _logistic(X, y, l2, steps=60):
    """Weights (w, b) of an L2-regularized logistic regression, fitted by L-BFGS in float64."""
    X, y = torch.from_numpy(X).double(), torch.from_numpy(y).double()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn='strong_wolfe')

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, y) + l2 * (w * w).sum()
        value.backward()
        return value
    opt.step(loss)
    return w.detach().numpy(), float(b.detach())


def _folds(n, k, rng):
    order = rng.permutation(n)
    return [order[i::k] for i in range(k)]


def two_sample_accuracy(a, b, xy, folds=5, l2s=(1e-4, 1e-3, 1e-2), seed=0):
    """How often a classifier tells routes a from routes b (sets of (placement, role) of one board),
    on held-out routes: the mean accuracy over folds of a logistic regression on route_features,
    its L2 chosen within each training fold by a 3-fold split of it (nothing chosen on the routes
    it is scored on). The two sides are cut to the same size first, so 0.5 means they cannot be
    told apart and 1.0 that every route is told. Each side counts a route once (a climb logged at
    several angles is one route), and a route on both sides is on neither: a classifier would
    otherwise learn the routes of its training folds by heart. -> dict(accuracy, se, n) (n routes a side)."""
    rng = np.random.default_rng(seed)
    a, b = list(dict.fromkeys(a)), list(dict.fromkeys(b))
    both = set(a) & set(b)
    a, b = [r for r in a if r not in both], [r for r in b if r not in both]
    n = min(len(a), len(b))
    if n < 2 * folds:
        return dict(accuracy=float('nan'), se=float('nan'), n=n)
    a = [a[i] for i in sorted(rng.choice(len(a), n, replace=False))]
    b = [b[i] for i in sorted(rng.choice(len(b), n, replace=False))]
    X = route_features(a + b, xy)
    y = np.r_[np.ones(n), np.zeros(n)].astype(np.float32)

    def fit_score(train, test, l2):
        mu, sd = X[train].mean(0), X[train].std(0) + 1e-6  # standardized on the training rows only
        w, c = _logistic((X[train] - mu) / sd, y[train], l2)
        return float(((((X[test] - mu) / sd) @ w + c > 0) == (y[test] > 0.5)).mean())

    right = []
    for test in _folds(2 * n, folds, rng):
        train = np.setdiff1d(np.arange(2 * n), test)
        inner = _folds(len(train), 3, rng)
        best = max(l2s, key=lambda l2: np.mean([fit_score(np.setdiff1d(train, train[f]), train[f], l2) for f in inner]))
        right.append(fit_score(train, test, best) * len(test))
    accuracy = sum(right) / (2 * n)
    return dict(accuracy=accuracy, se=float(np.sqrt(accuracy * (1 - accuracy) / (2 * n))), n=n)


def random_routes(routes, placements, seed=0):
    """The two-sample test's control with power: for each route, one of as many holds in the same
    roles, its holds drawn at random from placements (none twice)."""
    rng = np.random.default_rng(seed)
    placements = sorted(placements)
    out = []
    for route in routes:
        picked = rng.choice(len(placements), len(route), replace=False)
        out.append(frozenset((placements[i], role) for i, (_, role) in zip(picked, sorted(route, key=lambda h: h[1]))))
    return out


# -----------------------------------------------------------------------------
# grades

def grade_metrics(pred, target):
    """Predictions against true difficulties: n, mae, rmse (difficulty units), r2, and the
    fractions (0..1) of routes whose V grade is exact / within 1 / within 2 V grades and whose
    Font grade is exact / within 1 Font grade."""
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    assert pred.shape == target.shape and pred.ndim == 1, (pred.shape, target.shape)
    n = len(target)
    if n == 0:
        return dict(n=0)
    err = pred - target
    spread = ((target - target.mean()) ** 2).sum()
    v_off = np.abs(v_number(pred) - v_number(target))
    font_off = np.abs(font_grade(pred) - font_grade(target))
    return dict(n=n, mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err ** 2).mean())),
                r2=float(1 - (err ** 2).sum() / spread) if spread > 0 else math.nan,
                v_exact=float((v_off == 0).mean()), v_within1=float((v_off <= 1).mean()),
                v_within2=float((v_off <= 2).mean()), font_exact=float((font_off == 0).mean()),
                font_within1=float((font_off <= 1).mean()))


# a report's figures count at most this many val or test routes (train: ten times as many), a fixed
# sample (routes.sample_rows) of a larger split: a real snapshot's report in minutes
REPORT_ROWS = 5000

METRIC_ROWS = [('n', 'routes', '{:,}'), ('mae', 'MAE', '{:.3f}'), ('rmse', 'RMSE', '{:.3f}'), ('r2', 'R2', '{:.3f}'),
               ('v_exact', 'V exact', '{:.1%}'), ('v_within1', 'V within 1', '{:.1%}'),
               ('v_within2', 'V within 2', '{:.1%}'), ('font_exact', 'Font exact', '{:.1%}'),
               ('font_within1', 'Font within 1', '{:.1%}')]


def metrics_table(columns):
    """[(title, grade_metrics dict)] -> a printable table, one column each ('-' where empty)."""
    width = max([14] + [len(title) + 2 for title, _ in columns])
    lines = [f"{'':16}" + ''.join(f'{title:>{width}}' for title, _ in columns)]
    for key, name, fmt in METRIC_ROWS:
        cells = [fmt.format(m[key]) if m.get('n') and key in m else '-' for _, m in columns]
        lines.append(f'{name:16}' + ''.join(f'{c:>{width}}' for c in cells))
    return '\n'.join(lines)


def grade_metrics_by_board(split, predictions, min_ascents=5):
    """Per board of a split (a dict with board, difficulty, ascents arrays), grade_metrics of each
    named prediction (N,) on all graded rows ('all') and, where the data counts ascents, on rows
    with at least min_ascents ('min5'). -> {board: {name: {'all': ..., 'min5': ...}}}"""
    graded = ~np.isnan(split['difficulty'])
    out = {}
    for board in sorted(set(split['board'][graded])):
        rows = graded & (split['board'] == board)
        many = rows & (split['ascents'] >= min_ascents)  # NaN (unknown) compares False
        out[board] = {name: dict(all=grade_metrics(p[rows], split['difficulty'][rows]),
                                 **({'min5': grade_metrics(p[many], split['difficulty'][many])} if many.any() else {}))
                      for name, p in predictions.items()}
    return out


def grade_report(by_board, min_ascents=5):
    """grade_metrics_by_board's result as printable text, a table per board."""
    blocks = []
    for board, entry in by_board.items():
        columns = [(f'{name} (all)', m['all']) for name, m in entry.items()]
        columns += [(f'{name} (>={min_ascents} asc)', m['min5']) for name, m in entry.items() if 'min5' in m]
        blocks.append(f'{board}\n' + metrics_table(columns))
    return '\n\n'.join(blocks)


# -----------------------------------------------------------------------------
# calibration: does a grade distribution mean what it says

def grade_classes(difficulty, grade_min, n_grades):
    """The grade (column of a grade distribution) each continuous difficulty falls in: its Font
    grade (routes.font_grade), as every grade metric counts it."""
    return np.clip(np.atleast_1d(font_grade(difficulty)) - grade_min, 0, n_grades - 1)


def calibration(probs, classes, bins=10):
    """Top-grade calibration of (N, n_grades) probabilities against the true grades classes (N,):
    the expected calibration error (the mean gap between how sure the likeliest grade is and how
    often it is right, weighted by rows per confidence bin) and the reliability table, rows of
    (bin low, bin high, rows, mean confidence, share right)."""
    probs, classes = np.asarray(probs, dtype=np.float64), np.asarray(classes)
    if not len(probs):
        return dict(ece=None, table=[])
    confidence, right = probs.max(1), probs.argmax(1) == classes
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            conf, acc = float(confidence[inside].mean()), float(right[inside].mean())
            table.append((b / bins, (b + 1) / bins, int(inside.sum()), conf, acc))
            ece += inside.mean() * abs(conf - acc)
    return dict(ece=float(ece), table=table)


STIFF_SOFT_BAND = (0.1, 0.9)  # a logged grade outside the model's 80% range is flagged


def stiff_or_soft(logged, probs, grade_min):
    """A known climb's logged grade against the model's distribution for its holds: 'soft' (logged
    harder than the model's 80% range: easier than its grade), 'stiff' (logged easier than it:
    harder than its grade) or 'as graded', with that range. -> (verdicts, (N, 2) ranges)."""
    probs = torch.as_tensor(np.asarray(probs, dtype=np.float64))
    band = torch.stack([grade_quantile(probs, q, grade_min) for q in STIFF_SOFT_BAND], 1).numpy()
    logged = np.asarray(logged, dtype=np.float64)
    verdict = np.where(logged > band[:, 1], 'soft', np.where(logged < band[:, 0], 'stiff', 'as graded'))
    return verdict, band


def fit_temperature(log_probs, classes, grid=np.exp(np.linspace(np.log(0.25), np.log(4.0), 97))):
    """The temperature T (log-probabilities divided by T, renormalised) with the least negative
    log-likelihood of the true grades: the usual post-hoc calibration, fitted on val."""
    logp = torch.as_tensor(np.asarray(log_probs), dtype=torch.float64)
    target = torch.as_tensor(np.asarray(classes))
    nll = [float(-(logp / t).log_softmax(-1).gather(1, target[:, None]).mean()) for t in grid]
    return float(grid[int(np.argmin(nll))])


# -----------------------------------------------------------------------------
# the baseline: ridge regression on hold-and-angle features, in closed form

class RidgeDesign:
    """A ridge design matrix kept sparse, so memory grows with the non-zeros and not with rows x
    columns: the one-hot block (width columns) as the column indices each row sets, in CSR form
    (columns, offsets (N+1,)), then numeric (N, M) float64, the dense columns after it."""

    def __init__(self, columns, offsets, numeric, width):
        self.columns, self.offsets, self.numeric, self.width = columns, offsets, numeric, width
        self.shape = (len(numeric), width + numeric.shape[1])

    @classmethod
    def of(cls, X):
        """A design, or a dense (N, D) matrix taken as all numeric columns."""
        if isinstance(X, cls):
            return X
        X = np.asarray(X, dtype=np.float64)
        return cls(np.zeros(0, dtype=np.int64), np.zeros(len(X) + 1, dtype=np.int64), X, 0)

    def counts(self):
        return np.diff(self.offsets)

    def entry_rows(self):
        """The row of each one-hot entry."""
        return np.repeat(np.arange(len(self.numeric)), self.counts())

    def dense(self):
        """(N, D) float32 tensor: for small cases and for looking at the features."""
        out = torch.zeros(len(self.numeric), self.width)
        out[torch.from_numpy(self.entry_rows()), torch.from_numpy(self.columns)] = 1.0
        return torch.cat([out, torch.from_numpy(self.numeric).float()], 1)


def ridge_design(inputs, angles, token_role):
    """The ridge baseline's features as a RidgeDesign: one-hot of the hold-and-role tokens and of
    the board token (so one dataset of several boards gets an offset per board), then angle/45,
    (angle/45)^2, angle unknown, hold count/10 and a constant. inputs: the grade model's
    (routes.encoder_input lists, or an (N, T) array padded with 0); a route's tokens are distinct,
    as the grammar's strict order makes them. Unknown angles (NaN) enter as 0 with the 'unknown'
    flag set."""
    if isinstance(inputs, list):
        lengths = np.fromiter(map(len, inputs), dtype=np.int64, count=len(inputs))
        flat = np.fromiter(itertools.chain.from_iterable(inputs), dtype=np.int64, count=int(lengths.sum()))
    else:
        inputs = np.asarray(inputs, dtype=np.int64)
        lengths, flat = np.full(len(inputs), inputs.shape[1], dtype=np.int64), inputs.ravel()
    role = np.asarray(token_role)
    N = len(lengths)
    is_hold = role[flat] > 0
    keep = is_hold.copy()
    keep[np.cumsum(lengths)[lengths > 0] - lengths[lengths > 0]] = True  # the board token, first in each row
    row = np.repeat(np.arange(N), lengths)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(row[keep], minlength=N))])
    holds = np.bincount(row[is_hold], minlength=N)
    # numeric columns in float32, as the dense design had them
    a = np.asarray(angles, dtype=np.float32) / np.float32(45.0)
    unknown = np.isnan(a)
    a = np.where(unknown, np.float32(0), a)
    numeric = np.stack([a, a * a, unknown.astype(np.float32), holds.astype(np.float32) / np.float32(10.0),
                        np.ones(N, dtype=np.float32)], 1)
    return RidgeDesign(flat[keep], offsets, numeric.astype(np.float64), len(role))


def ridge_features(inputs, angles, token_role):
    """ridge_design's features as a dense (N, D) float32 tensor (for small inputs)."""
    return ridge_design(inputs, angles, token_role).dense()


def ridge_normal_equations(X, y, weights=None, chunk=1 << 22):
    """X^T W X (D, D) and X^T W y (D,) in float64 for a RidgeDesign (or a dense matrix). The one-hot
    block's Gram is a bincount over each row's column pairs, taken over rows of one count at a
    time, at most chunk pairs at once."""
    X = RidgeDesign.of(X)
    V, M = X.width, X.numeric.shape[1]
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    counts = X.counts()
    onehot = np.zeros(V * V)
    for c in np.unique(counts[counts > 0]):
        rows = np.flatnonzero(counts == c)
        step = max(1, chunk // (c * c))
        for i in range(0, len(rows), step):
            part = rows[i:i + step]
            cols = X.columns[X.offsets[part][:, None] + np.arange(c)]  # (rows, c)
            pairs = (cols[:, :, None] * V + cols[:, None, :]).ravel()
            onehot += np.bincount(pairs, np.repeat(w[part], c * c), minlength=V * V)
    per_entry = X.entry_rows()
    cross = np.stack([np.bincount(X.columns, (w * X.numeric[:, j])[per_entry], minlength=V) for j in range(M)], 1)
    gram = np.block([[onehot.reshape(V, V), cross], [cross.T, X.numeric.T @ (X.numeric * w[:, None])]])
    rhs = np.concatenate([np.bincount(X.columns, (w * y)[per_entry], minlength=V), X.numeric.T @ (w * y)])
    return gram, rhs


def solve_ridge(gram, rhs, l2):
    """Coefficients (D,) from ridge_normal_equations' result, the constant (last column) unpenalised."""
    penalty = np.full(len(rhs), float(l2))
    penalty[-1] = 0.0
    return np.linalg.solve(gram + np.diag(penalty), rhs)


def fit_ridge(X, y, weights=None, l2=1.0):
    """Weighted ridge regression in closed form: argmin_w sum_i weights_i (X_i w - y_i)^2 + l2 |w|^2,
    the constant (last column) unpenalised. X: a RidgeDesign or a dense (N, D) matrix. -> (D,) float64."""
    return solve_ridge(*ridge_normal_equations(X, y, weights), l2)


def ridge_predict(coef, X):
    X = RidgeDesign.of(X)
    coef = np.asarray(coef, dtype=np.float64)
    onehot = np.bincount(X.entry_rows(), coef[X.columns], minlength=len(X.numeric))
    return onehot + X.numeric @ coef[X.width:]


def ascent_weights(ascents, cap):
    """Each route's loss weight: min(ascents, cap), 1 where ascents are unknown (NaN); all 1 if
    cap is 0. A grade logged once is much noisier than one many climbers agreed on."""
    if not cap:
        return np.ones(len(ascents))
    return np.where(np.isnan(ascents), 1.0, np.clip(ascents, 1, cap))


def ridge_baseline(train, val, token_role, weights=None, l2_grid=(0.3, 1.0, 3.0, 10.0, 30.0)):
    """Fit the ridge baseline on train (dicts of graded rows: inputs, angle, difficulty) for each
    l2 in the grid and keep the one with the lowest val MAE. -> (coef, l2, val MAE)."""
    X_train = ridge_design(train['inputs'], train['angle'], token_role)
    normal = ridge_normal_equations(X_train, train['difficulty'], weights)
    X_val = ridge_design(val['inputs'], val['angle'], token_role)
    best = None
    for l2 in l2_grid:  # one Gram matrix, a solve per l2
        coef = solve_ridge(*normal, l2)
        mae = float(np.abs(ridge_predict(coef, X_val) - val['difficulty']).mean()) if len(val['difficulty']) else 0.0
        if best is None or mae < best[2]:
            best = (coef, l2, mae)
    return best


# -----------------------------------------------------------------------------
# the frequency baseline: what a route generator without a model would do

class FrequencyBaseline:
    """Holds drawn from how often each hold-and-role token appears in training routes of the same
    board, angle and grade (backing off to board and grade, then board), and <end> from how often
    training routes of that grade stop at each length. Sampled under the same grammar as the GPT.
    train: decoded routes, dicts with board, angle, grade, holds and tokens."""

    def __init__(self, grammar, train):
        self.grammar = grammar
        counts = defaultdict(lambda: np.zeros(grammar.vocab_size))
        lengths = defaultdict(Counter)
        for r in train:
            for key in ((r['board'], r['angle'], r['grade']), (r['board'], r['grade']), (r['board'],)):
                counts[key][r['tokens'][CONDITIONING:-1]] += 1
            lengths[(r['board'], r['grade'])][len(r['holds'])] += 1
            lengths[(r['board'],)][len(r['holds'])] += 1
        self.counts, self.lengths = counts, lengths

    def log_probs(self, board, angle, grade):
        p = np.zeros(self.grammar.vocab_size)
        for weight, key in ((0.5, (board, angle, grade)), (0.3, (board, grade)), (0.2, (board,))):
            c = self.counts.get(key)
            if c is not None and c.sum() > 0:
                p += weight * c / c.sum()
        return np.log(p + 1e-12)

    def stop_hazard(self, board, grade, max_len):
        """P(route ends at n holds | it has n), for n = 0..max_len."""
        hist = self.lengths.get((board, grade)) or self.lengths[(board,)]
        hazard, left = np.zeros(max_len + 2), sum(hist.values())
        for n in range(max_len + 2):
            hazard[n] = hist.get(n, 0) / left if left > 0 else 1.0
            left -= hist.get(n, 0)
        return np.clip(hazard, 1e-6, 1 - 1e-6)

    @torch.no_grad()
    def sample(self, prompts, generator, walls=None):
        """prompts: [(board, angle, grade)] -> token sequences, one per prompt; walls as for
        DecodingRules."""
        max_len = max(b['max_holds'] for b in self.grammar.meta['boards'])
        logp = torch.tensor(np.stack([self.log_probs(*p) for p in prompts]), dtype=torch.float32)
        hazard = torch.tensor(np.stack([self.stop_hazard(p[0], p[2], max_len) for p in prompts]), dtype=torch.float32)
        rules = DecodingRules(self.grammar, [(p[0], []) for p in prompts], walls=walls)
        seqs = [self.grammar.prefix(*p) for p in prompts]
        for _ in range(max_len + 1):
            n = rules.count.sum(1).clamp(max=hazard.size(1) - 1)
            stop = hazard.gather(1, n[:, None]).squeeze(1)
            logits = logp + torch.log1p(-stop)[:, None]
            logits[:, END] = torch.log(stop)
            logits = logits.masked_fill(~rules.mask(), float('-inf'))
            nxt = sample_tokens(logits.softmax(-1), generator)
            done_before = rules.done.clone()
            rules.update(nxt)
            for seq, t, done in zip(seqs, nxt.view(-1).tolist(), done_before.tolist()):
                if not done:
                    seq.append(t)
            if rules.done.all():
                break
        return seqs


# -----------------------------------------------------------------------------
# known climbs: is a route new, and which known climb is it closest to

class ClimbIndex:
    """The climbs of a prepared dataset, searchable by hold set: exact matches (copies) and the
    nearest climb by Jaccard distance over holds with roles, through an inverted index (hold ->
    climbs), so a query costs the length of its holds' posting lists, not a pass over every climb.
    rows: load_split() dicts (any splits); each climb is one hold set with its id, name, grade at
    every angle it was logged at, and the sizes it fits and hold sets it uses (for nearest on a wall).
    Built with numpy on the token ids: a climb is its board token and hold tokens, which the
    grammar's canonical order makes one sequence per hold set; rows of a climb at several angles
    are one climb, the first row naming it, and its grades are gathered only when a query returns it."""

    def __init__(self, grammar, rows):
        self.grammar = grammar
        if all('flat' in split for split in rows):  # load_split(..., lists=False): no list per route
            lengths = np.concatenate([np.zeros(0, dtype=np.int64)] + [np.diff(s['offset']) for s in rows])
            flat = np.concatenate([np.zeros(0, dtype=np.uint16)] + [s['flat'] for s in rows])
        else:
            tokens = [t for split in rows for t in split['tokens']]
            lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
            flat = np.fromiter(itertools.chain.from_iterable(tokens), dtype=np.uint16, count=int(lengths.sum()))
            del tokens
        N = len(lengths)
        # each row's key: (N, 1 + most holds) uint16, its board token then its hold tokens, 0-padded
        n_holds = lengths - CONDITIONING - 1
        starts = np.cumsum(lengths) - lengths
        keys = np.zeros((N, 1 + int(n_holds.max(initial=0))), dtype=np.uint16)
        keys[:, 0] = flat[starts]
        row = np.repeat(np.arange(N), n_holds)
        col = np.arange(len(row)) - np.repeat(np.cumsum(n_holds) - n_holds, n_holds)
        keys[row, 1 + col] = flat[starts[row] + CONDITIONING + col]
        del flat, row, col
        # climbs numbered in order of first row; the keys as one bytes string each, sorted, for
        # exact lookups (token 0 is no hold, so the S type's dropping trailing NULs loses nothing)
        self.sorted_keys, first, inverse = np.unique(keys.view(f'S{2 * keys.shape[1]}').ravel(), return_index=True,
                                                     return_inverse=True)
        order = np.argsort(first)
        self.key_climb = np.empty(len(order), dtype=np.int64)  # sorted_keys[k] is climb key_climb[k]
        self.key_climb[order] = np.arange(len(order))
        self.row_climb, self.first_row = self.key_climb[inverse], first[order]
        climb_keys = keys[self.first_row]
        held = climb_keys[:, 1:] > 0
        self.sizes = held.sum(1)
        self.climb_tokens = climb_keys[:, 1:][held]  # climb by climb; climb_start[i] is where climb i's begin
        self.climb_start = np.concatenate([[0], np.cumsum(self.sizes)])
        self.on_board = {b: climb_keys[:, 0] == t for b, t in grammar.board_token.items()}
        # postings: the climbs using each hold token, ascending; token t's are postings[posting_start[t]:posting_start[t + 1]]
        self.postings = np.repeat(np.arange(len(self)), self.sizes)[np.argsort(self.climb_tokens, kind='stable')]
        per_token = np.bincount(self.climb_tokens, minlength=grammar.vocab_size)
        self.posting_start = np.concatenate([[0], np.cumsum(per_token)])
        # per row, what a returned climb reports
        self.angle, self.difficulty = (np.concatenate([np.zeros(0)] + [np.asarray(s[k], dtype=np.float64) for s in rows])
                                       for k in ('angle', 'difficulty'))
        def per_climb(key):  # a column of the climbs' first rows
            parts = [np.empty(0, dtype=object)]
            for s in rows:
                column = s.get(key)
                if not (isinstance(column, np.ndarray) and column.dtype == object):
                    values, column = column, np.empty(len(s['climb_id']), dtype=object)
                    for j, v in enumerate(values if values is not None else []):  # a list of tuples stays tuples
                        column[j] = v
                parts.append(column)
            return np.concatenate(parts)[self.first_row]
        self.climb_id, self.name, self.setter = per_climb('climb_id'), per_climb('name'), per_climb('setter')
        board_name = np.empty(grammar.vocab_size, dtype=object)
        for b, t in grammar.board_token.items():
            board_name[t] = b
        self.walls = dict(board=board_name[climb_keys[:, 0]], sizes=per_climb('sizes'), sets=per_climb('sets'))  # fits_wall's columns
        self.on_wall = {}  # wall key -> (climbs,) bool, built on the first query on that wall

    def fitting(self, board, wall=None):
        """(climbs,) bool: the climbs of this board that fit the wall (every one, for None)."""
        if wall is None or wall.whole:
            return self.on_board[board]
        if wall.key not in self.on_wall:
            self.on_wall[wall.key] = fits_wall(self.walls, wall)
        return self.on_wall[wall.key]

    def __len__(self):
        return len(self.first_row)

    def _hold_tokens(self, board, holds):
        """The tokens of a set of (placement, role) on this board, None for a pair it lacks."""
        return [self.grammar.hold_token.get((board, p, r)) for p, r in set(holds)]

    def find(self, board, holds):
        """The number of the climb with exactly these holds on this board, or None."""
        tokens = self._hold_tokens(board, holds)
        if board not in self.grammar.board_token or None in tokens:
            return None
        tokens.sort(key=self.grammar.meta['hold_rank'].__getitem__)  # canonical order, as the keys have it
        key = np.zeros(self.sorted_keys.itemsize // 2, dtype=np.uint16)
        if len(tokens) >= len(key):
            return None
        key[:len(tokens) + 1] = [self.grammar.board_token[board]] + tokens
        key = key.view(self.sorted_keys.dtype)[0]
        k = int(np.searchsorted(self.sorted_keys, key))
        return int(self.key_climb[k]) if k < len(self.sorted_keys) and self.sorted_keys[k] == key else None

    def contains(self, board, holds):
        return self.find(board, holds) is not None

    def climb(self, i):
        """Climb i as dict(climb_id, name, setter, grades {angle: difficulty}, sizes, sets): its first row
        names it, and a later row of the same angle overrides an earlier one's grade."""
        grades = {}
        for r in np.flatnonzero(self.row_climb == i):
            if not np.isnan(self.difficulty[r]):
                grades[None if np.isnan(self.angle[r]) else int(self.angle[r])] = float(self.difficulty[r])
        return dict(climb_id=self.climb_id[i], name=self.name[i], setter=self.setter[i], grades=grades,
                    sizes=self.walls['sizes'][i], sets=self.walls['sets'][i])

    @property
    def climbs(self):
        """(board, frozenset of holds) -> climb(i), as a read-only mapping built on access."""
        return _Climbs(self)

    def nearest(self, board, holds, angle=None, wall=None):
        """The known climb of this board closest to holds [(placement, role)]: dict(distance,
        climb_id, name, setter, difficulty at that angle or None), or None if the board has no climbs. With
        a wall, the nearest climb that fits it: one the climber can do instead."""
        holds = set(holds)
        lists = [self.postings[self.posting_start[t]:self.posting_start[t + 1]]
                 for t in self._hold_tokens(board, holds) if t is not None]
        shared = np.bincount(np.concatenate(lists), minlength=len(self)) if lists else np.zeros(len(self))
        distance = np.where(self.fitting(board, wall), 1.0 - shared / (len(holds) + self.sizes - shared), np.inf)
        if not len(distance) or not np.isfinite(distance.min()):
            return None
        i = int(distance.argmin())  # ties: the first climb indexed
        climb = self.climb(i)
        return dict(distance=float(distance[i]), climb_id=climb['climb_id'], name=climb['name'], setter=climb['setter'],
                    difficulty=climb['grades'].get(angle))


def climb_label(climb):
    """A known climb as a climber names it: its name (else its id) and its setter, whom boardsesh
    asks every app showing its climbs to credit."""
    return (climb['name'] or climb['climb_id']) + (f" by {climb['setter']}" if climb.get('setter') else '')


class _Climbs(Mapping):
    """ClimbIndex.climbs: what the index held as a dict before it was built with numpy."""

    def __init__(self, index):
        self.index = index

    def __getitem__(self, key):
        i = self.index.find(*key)
        if i is None:
            raise KeyError(key)
        return self.index.climb(i)

    def __iter__(self):
        meta, index = self.index.grammar.meta, self.index
        for i in range(len(index)):
            tokens = index.climb_tokens[index.climb_start[i]:index.climb_start[i + 1]].tolist()
            yield index.walls['board'][i], frozenset((meta['hold_placement'][t], meta['hold_role'][t]) for t in tokens)

    def __len__(self):
        return len(self.index)
