"""
Grade a route with a trained grade model, and the pieces train_grade.py and evaluate.py share.

    python grade.py config/kilter.py --frames=p1145r12p1160r13p1201r14 --angle=40
    python grade.py config/moonboard.py --frames='SH:C5,E6/IH:E8/FH:D18'
    python grade.py config/kilter.py --input=routes.jsonl > grades.jsonl

One route prints its predicted difficulty with its Font and V grade. --input reads JSON lines,
each {"board": ..., "frames": ... (or "holds": a MoonBoard dict), "angle": ...} ("board" may be
left out on a one-board dataset, "angle" on a one-angle board), and writes one JSON line per input
line: the prediction, or {"line": n, "error": ...}; a bad line does not stop the others, and the
exit status is 1 if any line failed. A bad route on the command line stops with one line,
`error: ...`.

Importing this module runs nothing: it holds the data loading, the metrics and the ridge baseline
that train_grade.py and evaluate.py share, and load_grader() / predict() for any other script.
Metrics are in app difficulty units (10..33 = Font 4a..8c+ = V0..V16); grades are compared as
Font grades (round(difficulty), clamped to 10..33) and as V numbers of those.
"""

import json
import math
import os
import sys

import numpy as np
import torch

from configurator import configure
from model import GradeEncoder, ModelConfig
from routes import FONT, MAX_DIFFICULTY, MIN_DIFFICULTY, ROLES, V_GRADE, Grammar, RouteError, load_meta
from trainer import load_checkpoint

# -----------------------------------------------------------------------------
# config of the command line (configure() runs only under __main__)
dataset = 'kilter'
data_root = 'data'
checkpoint = ''  # default out/<dataset>/grade/best.pt
board = ''  # default: the dataset's only board
frames = ''  # one route: Aurora frames (p1145r12p1160r13...) or MoonBoard SH:C5,E6/IH:E8/FH:D18
angle = None  # degrees; may be left out on a one-angle board (MoonBoard) or a board without angles
input = ''  # noqa: A001 (the flag is --input) JSON lines of routes to grade; '-' reads stdin
device = 'cpu'
batch_size = 512  # routes per forward pass in batch grading


# -----------------------------------------------------------------------------
# the encoder's view of a dataset

def encoder_tables(meta):
    """GradeEncoder's per-token tables as plain lists (they travel in a checkpoint's model_args):
    token_xy (V, 2), each hold's (x, y) scaled to [0, 1] by its board's edges, and token_role (V,),
    1 + the role's index in routes.ROLES for hold tokens, 0 for every other token."""
    edges = {b['name']: b['edges'] for b in meta['boards']}
    token_xy, token_role = [], []
    for t, kind in enumerate(meta['kind']):
        if kind != 'hold':
            token_xy.append([0.0, 0.0])
            token_role.append(0)
            continue
        left, right, bottom, top = edges[meta['hold_board'][t]]
        token_xy.append([(meta['hold_x'][t] - left) / (right - left), (meta['hold_y'][t] - bottom) / (top - bottom)])
        token_role.append(1 + ROLES.index(meta['hold_role'][t]))
    return token_xy, token_role


def build_grader(model_args):
    """model_args (plain Python, as in a checkpoint) -> a fresh GradeEncoder."""
    args = dict(model_args)
    tables = {k: args.pop(k) for k in ('token_xy', 'token_role', 'grade_min', 'grade_max')}
    return GradeEncoder(ModelConfig(**args), **tables)


def load_split(meta, folder, split):
    """One split of a prepared dataset as the grade model sees it: inputs (N, T) int64, each route
    <board> <angle> holds... (the prepared sequence without its grade and <end> tokens) padded
    with 0; angle, difficulty and ascents (N,) float64 with NaN where unknown; board (N,) names."""
    data = np.fromfile(os.path.join(folder, f'{split}.bin'), dtype=np.uint16).astype(np.int64)
    arrays = meta['splits'][split]
    offsets = np.array(arrays['offset'], dtype=np.int64)
    lengths = np.diff(offsets) - 2
    col = np.arange(max(lengths.max(initial=0), 1))
    source = offsets[:-1, None] + col + (col >= 2)  # positions 2.. skip the grade token
    inputs = np.where(col < lengths[:, None], data[np.minimum(source, max(len(data) - 1, 0))], 0)

    def floats(values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    return dict(inputs=torch.from_numpy(inputs), lengths=torch.from_numpy(lengths), angle=floats(arrays['angle']),
                difficulty=floats(arrays['difficulty']), ascents=floats(arrays['ascents']),
                board=np.array(arrays['board'], dtype=object))


def encoder_input(tokens):
    """A route's full token sequence (<board> <angle> <grade> holds <end>) -> the grade model's
    input: the same without its grade token and <end>."""
    return tokens[:2] + tokens[3:-1]


def ascent_weights(ascents, cap):
    """Each route's loss weight: min(ascents, cap), 1 where ascents are unknown (NaN); all 1 if
    cap is 0. A grade logged once is much noisier than one many climbers agreed on."""
    if not cap:
        return np.ones(len(ascents))
    return np.where(np.isnan(ascents), 1.0, np.clip(ascents, 1, cap))


def select(split, keep):
    """The rows of a load_split() dict where keep (N,) bool is True."""
    keep_t = torch.from_numpy(np.asarray(keep))
    return {k: v[keep_t] if torch.is_tensor(v) else v[keep] for k, v in split.items()}


# -----------------------------------------------------------------------------
# a trained model

def load_grader(checkpoint_path, meta, device='cpu'):
    """The grade model of a checkpoint written by train_grade.py, in eval mode. It must have been
    trained on this dataset's vocabulary: the checkpoint's token tables are checked against meta's."""
    if not os.path.isfile(checkpoint_path):
        raise SystemExit(f"error: no grade model at {checkpoint_path}: train one first (python train_grade.py <config>)")
    ckpt = load_checkpoint(checkpoint_path, device)
    args = ckpt['model_args']
    if 'token_role' not in args:
        raise SystemExit(f"error: {checkpoint_path} is not a grade model (train it with train_grade.py)")
    token_xy, token_role = encoder_tables(meta)
    if args['token_role'] != token_role or not np.allclose(args['token_xy'], token_xy):
        raise SystemExit(f"error: {checkpoint_path} was trained on another vocabulary than "
                         f"dataset {meta['dataset']}: retrain it, or pass the matching --dataset")
    model = build_grader(args)
    model.load_state_dict(ckpt['model'])
    return model.to(device).eval()


@torch.no_grad()
def predict(model, inputs, angles, batch_size=512):
    """Predicted difficulty of each route -> numpy (N,). inputs: (N, T) token ids, <board> <angle>
    holds... padded with 0 (a tensor, or a list of token lists); angles: (N,) degrees, NaN or None
    where unknown. The model is run in eval mode and left in the mode it was in."""
    if not torch.is_tensor(inputs):
        width = max((len(r) for r in inputs), default=1)
        inputs = torch.tensor([list(r) + [0] * (width - len(r)) for r in inputs], dtype=torch.long)
    angles = torch.tensor([math.nan if a is None else float(a) for a in angles], dtype=torch.float32)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        x = inputs[i:i + batch_size]
        x = x[:, :max(int((x != 0).sum(1).max()), 1)]  # trim the padding the whole batch shares
        pred, _ = model(x.to(device), angles[i:i + batch_size].to(device))
        out.append(pred.float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def route_inputs(grammar, board_name, route, angle=None):
    """A user's route -> (tokens, angle in degrees or NaN), the model's input for one route.
    Raises RouteError for an unknown board, an impossible angle, a malformed route string, a hold
    the board does not have or a route the grammar does not allow."""
    b = grammar.board(board_name)
    if angle is None and b['angle_known'] and len(b['angles']) == 1:
        angle = b['angles'][0]  # the MoonBoard is set at 40 degrees, and only at 40
    a = grammar.check_angle(board_name, angle)
    holds = grammar.parse(board_name, route)
    grammar.validate(board_name, holds)
    tokens = grammar.encode(board_name, a, None, holds)
    return encoder_input(tokens), math.nan if a is None else float(a)


# -----------------------------------------------------------------------------
# metrics

V_NUMBER = np.array([int(V_GRADE[d][1:]) if d in V_GRADE else -1 for d in range(MAX_DIFFICULTY + 1)])


def font_grade(difficulty):
    """Continuous difficulty -> integer Font grade on the app scale: round, clamp to 10..33."""
    return np.clip(np.rint(np.asarray(difficulty, dtype=np.float64)), MIN_DIFFICULTY, MAX_DIFFICULTY).astype(np.int64)


def v_number(difficulty):
    """Continuous difficulty -> V number (V5 -> 5) of its Font grade."""
    return V_NUMBER[font_grade(difficulty)]


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


def board_report(split, predictions, min_ascents=5):
    """Per board: metrics of each named prediction (N,) on all the split's graded rows, and on those
    with at least min_ascents ascents where the data counts ascents. -> printable text."""
    graded = ~np.isnan(split['difficulty'])
    blocks = []
    for board_name in sorted(set(split['board'][graded])):
        rows = graded & (split['board'] == board_name)
        many = rows & (split['ascents'] >= min_ascents)  # NaN (unknown) compares False
        columns = [(f'{name} (all)', grade_metrics(p[rows], split['difficulty'][rows])) for name, p in predictions.items()]
        if many.any():
            columns += [(f'{name} (>={min_ascents} asc)', grade_metrics(p[many], split['difficulty'][many]))
                        for name, p in predictions.items()]
        blocks.append(f'{board_name}\n' + metrics_table(columns))
    return '\n\n'.join(blocks)


# -----------------------------------------------------------------------------
# the baseline: ridge regression on hold-and-angle features, in closed form

def ridge_features(inputs, angles, token_role):
    """(N, D) float32 design: one-hot of the hold-and-role tokens and of the board token (so one
    dataset of several boards gets an offset per board), then angle/45, (angle/45)^2, angle unknown,
    hold count/10 and a constant. Unknown angles (NaN) enter as 0 with the 'unknown' flag set."""
    inputs = torch.as_tensor(inputs)
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


def ridge_baseline(train, val, token_role, weights=None, l2_grid=(0.3, 1.0, 3.0, 10.0, 30.0)):
    """Fit the ridge baseline on train (load_split dicts of graded rows) for each l2 in the grid and
    keep the one with the lowest val MAE. -> (coef, l2, val MAE)."""
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
# the command line

def grade_line(grammar, default_board, text):
    """One JSON line of --input -> (board, tokens, angle in degrees or NaN). Raises RouteError."""
    try:
        row = json.loads(text)
    except ValueError as e:
        raise RouteError(f"not a JSON object ({e})") from None
    if not isinstance(row, dict):
        raise RouteError(f"expected a JSON object with board, frames or holds, and angle; got {type(row).__name__}")
    board_name = row.get('board') or default_board
    if not board_name:
        raise RouteError(f"no board: this dataset has {', '.join(grammar.boards)}; give \"board\"")
    if 'frames' not in row and 'holds' not in row:
        raise RouteError('no route: give "frames" (Aurora boards) or "holds" (a MoonBoard dict)')
    tokens, a = route_inputs(grammar, board_name, row['frames'] if 'frames' in row else row['holds'], row.get('angle'))
    return board_name, tokens, a


def grade_record(difficulty):
    d = int(font_grade(difficulty))
    return dict(difficulty=round(float(difficulty), 2), font=FONT[d], v=V_GRADE[d])


def main():
    meta = load_meta(os.path.join(data_root, dataset, 'meta.pkl'))
    grammar = Grammar(meta)
    default_board = board or (meta['boards'][0]['name'] if len(meta['boards']) == 1 else '')
    if bool(frames) == bool(input):
        raise RouteError('give one route with --frames=... (and --angle=...), or a JSON lines file with --input=PATH')
    if default_board:
        grammar.board(default_board)  # an unknown --board fails here, once
    model = load_grader(checkpoint or os.path.join('out', dataset, 'grade', 'best.pt'), meta, device)

    if frames:
        if not default_board:
            raise RouteError(f"dataset {dataset} has boards {', '.join(grammar.boards)}: say which with --board=NAME")
        tokens, a = route_inputs(grammar, default_board, frames, angle)
        d = float(predict(model, [tokens], [a])[0])
        where = f"at {a:g} degrees" if not math.isnan(a) else "(angle unknown)"
        r = grade_record(d)
        with torch.no_grad():  # how sure the model is: its three most likely Font grades
            x, angle_t = torch.tensor([tokens], device=device), torch.tensor([a], device=device)
            probs = model.log_probs(model.embed(x, angle_t)).exp()[0]
        likely = ', '.join(f"{FONT[model.grade_min + int(i)]} {p:.0%}" for p, i in zip(*probs.topk(3)))
        print(f"{default_board} {where}: difficulty {r['difficulty']:.2f}, Font {r['font']}, {r['v']} (likely: {likely})")
        return 0

    if input == '-':
        lines = sys.stdin.read().splitlines()
    elif os.path.isfile(input):
        with open(input) as f:
            lines = f.read().splitlines()
    else:
        raise RouteError(f"no input file {input}")
    results, good = {}, []  # line number -> record; [(line number, board, tokens, angle)]
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            good.append((number, *grade_line(grammar, default_board, text)))
        except RouteError as e:
            results[number] = dict(line=number, error=str(e))
    preds = predict(model, [g[2] for g in good], [g[3] for g in good], batch_size)
    for (number, board_name, _, a), d in zip(good, preds):
        results[number] = dict(line=number, board=board_name, angle=None if math.isnan(a) else int(a), **grade_record(d))
    for number in sorted(results):
        print(json.dumps(results[number]))
    failed = [n for n in sorted(results) if 'error' in results[n]]
    if failed:
        print(f"error: {len(failed)} of {len(results)} routes could not be graded "
              f"(lines {', '.join(map(str, failed[:10]))}{', ...' if len(failed) > 10 else ''})", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    configure(globals())  # its echo goes to stderr: stdout is the grades
    try:
        sys.exit(main())
    except RouteError as e:
        sys.exit(f"error: {e}")
