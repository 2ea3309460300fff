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

import math
from collections import Counter, defaultdict

import numpy as np
import torch

from model import sample_tokens
from routes import CONDITIONING, END, DecodingRules, fits_wall, font_grade, pad, v_number


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
# the baseline: ridge regression on hold-and-angle features, in closed form

def ridge_features(inputs, angles, token_role):
    """(N, D) float32 design: one-hot of the hold-and-role tokens and of the board token (so one
    dataset of several boards gets an offset per board), then angle/45, (angle/45)^2, angle unknown,
    hold count/10 and a constant. inputs: the grade model's (routes.encoder_input lists, or an
    (N, T) array padded with 0). Unknown angles (NaN) enter as 0 with the 'unknown' flag set."""
    inputs = torch.as_tensor(pad(inputs) if isinstance(inputs, list) else inputs)
    role = torch.as_tensor(token_role)
    N, V = inputs.size(0), len(role)
    onehot = torch.zeros(N, V)
    is_hold = role[inputs] > 0
    onehot.scatter_(1, torch.where(is_hold, inputs, 0), is_hold.float())  # non-holds write 0 to column 0 (padding)
    onehot[torch.arange(N), inputs[:, 0]] = 1.0  # the board token
    a = torch.as_tensor(np.asarray(angles, dtype=np.float32)) / 45.0
    unknown = torch.isnan(a)
    a = torch.where(unknown, torch.zeros_like(a), a)
    numeric = torch.stack([a, a * a, unknown.float(), is_hold.sum(1).float() / 10.0, torch.ones(N)], 1)
    return torch.cat([onehot, numeric], 1)


def fit_ridge(X, y, weights=None, l2=1.0):
    """Weighted ridge regression in closed form: argmin_w sum_i weights_i (X_i w - y_i)^2 + l2 |w|^2,
    the constant (last column) unpenalised. -> coefficients (D,) float64."""
    X = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y, dtype=np.float64))
    w = torch.ones(len(y), dtype=torch.float64) if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
    gram = (X.T @ (X * w.float()[:, None])).double()  # float32 matmul for speed, float64 solve
    penalty = torch.full((X.size(1),), float(l2), dtype=torch.float64)
    penalty[-1] = 0.0
    rhs = X.double().T @ (w * y)
    return torch.linalg.solve(gram + torch.diag(penalty), rhs).numpy()


def ridge_predict(coef, X):
    return (torch.as_tensor(X, dtype=torch.float64) @ torch.as_tensor(coef)).numpy()


def ascent_weights(ascents, cap):
    """Each route's loss weight: min(ascents, cap), 1 where ascents are unknown (NaN); all 1 if
    cap is 0. A grade logged once is much noisier than one many climbers agreed on."""
    if not cap:
        return np.ones(len(ascents))
    return np.where(np.isnan(ascents), 1.0, np.clip(ascents, 1, cap))


def ridge_baseline(train, val, token_role, weights=None, l2_grid=(0.3, 1.0, 3.0, 10.0, 30.0)):
    """Fit the ridge baseline on train (dicts of graded rows: inputs, angle, difficulty) for each
    l2 in the grid and keep the one with the lowest val MAE. -> (coef, l2, val MAE)."""
    X_train = ridge_features(train['inputs'], train['angle'], token_role)
    X_val = ridge_features(val['inputs'], val['angle'], token_role)
    best = None
    for l2 in l2_grid:
        coef = fit_ridge(X_train, train['difficulty'], weights, l2)
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
    every angle it was logged at, and the sizes it fits and hold sets it uses (for nearest on a wall)."""

    def __init__(self, grammar, rows):
        self.climbs = {}  # (board, hold set) -> dict(climb_id, name, grades {angle: difficulty}, sizes, sets)
        for split in rows:
            names = split.get('name', [None] * len(split['tokens']))
            for tokens, climb_id, name, angle, difficulty, sizes, sets in zip(
                    split['tokens'], split['climb_id'], names, split['angle'], split['difficulty'], split['sizes'],
                    split['sets']):
                route = grammar.decode(tokens)
                key = (route['board'], frozenset(route['holds']))
                climb = self.climbs.setdefault(key, dict(climb_id=climb_id, name=name, grades={}, sizes=sizes, sets=sets))
                if not np.isnan(difficulty):
                    climb['grades'][None if np.isnan(angle) else int(angle)] = float(difficulty)
        self.keys = list(self.climbs)
        self.sizes = np.array([len(holds) for _, holds in self.keys])
        boards = np.array([b for b, _ in self.keys], dtype=object)
        self.on_board = {b: boards == b for b in grammar.boards}  # built once: queries are a hot path
        self.postings = defaultdict(list)  # (board, placement, role) -> climb indices
        for i, (board, holds) in enumerate(self.keys):
            for placement, role in holds:
                self.postings[(board, placement, role)].append(i)
        self.postings = {k: np.array(v) for k, v in self.postings.items()}
        self.walls = dict(board=boards, sizes=[self.climbs[k]['sizes'] for k in self.keys],
                          sets=[self.climbs[k]['sets'] for k in self.keys])  # the columns fits_wall reads
        self.on_wall = {}  # wall key -> (climbs,) bool, built on the first query on that wall

    def fitting(self, board, wall=None):
        """(climbs,) bool: the climbs of this board that fit the wall (every one, for None)."""
        if wall is None or wall.whole:
            return self.on_board[board]
        if wall.key not in self.on_wall:
            self.on_wall[wall.key] = fits_wall(self.walls, wall)
        return self.on_wall[wall.key]

    def __len__(self):
        return len(self.keys)

    def contains(self, board, holds):
        return (board, frozenset(holds)) in self.climbs

    def nearest(self, board, holds, angle=None, wall=None):
        """The known climb of this board closest to holds [(placement, role)]: dict(distance,
        climb_id, name, difficulty at that angle or None), or None if the board has no climbs. With
        a wall, the nearest climb that fits it: one the climber can do instead."""
        holds = set(holds)
        lists = [self.postings[(board, p, r)] for p, r in holds if (board, p, r) in self.postings]
        shared = np.bincount(np.concatenate(lists), minlength=len(self.keys)) if lists else np.zeros(len(self.keys))
        distance = np.where(self.fitting(board, wall), 1.0 - shared / (len(holds) + self.sizes - shared), np.inf)
        if not len(distance) or not np.isfinite(distance.min()):
            return None
        i = int(distance.argmin())  # ties: the first climb indexed
        climb = self.climbs[self.keys[i]]
        return dict(distance=float(distance[i]), climb_id=climb['climb_id'], name=climb['name'],
                    difficulty=climb['grades'].get(angle))
