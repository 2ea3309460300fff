"""
Grade routes with a trained grade model.

    python grade.py config/kilter.py --frames=p1145r12p1160r13p1201r14 --angle=40
    python grade.py config/kilter.py --frames=p1145r12p1160r13p1201r14 --angle=all   # the grade curve
    python grade.py config/moonboard.py --frames='SH:C5,E6/IH:E8/FH:D18'
    python grade.py config/kilter.py --input=routes.jsonl > grades.jsonl
    python grade.py config/kilter.py --frames=p1145r12p1160r13p1201r14 --angle=40 --lights
    python grade.py config/kilter.py --frames=p1145r12p1160r13p1201r14 --angle=40 --size=8   # on an 8 x 12
    python grade.py config/kilter.py --stiff_soft --angle=40   # known climbs most soft / stiff for their grade

One route prints its predicted difficulty with its Font and V grade, the three likeliest grades,
and the nearest known climb of the dataset (Jaccard distance over holds with roles; 0 is the same
climb) with its logged grade at that angle; --angle=all prints the grade at every angle of the
board instead (most climbs are logged at a few angles only). --input reads JSON lines, each
{"board": ..., "frames": ... (or "holds": a MoonBoard dict), "angle": ...} ("board" may be left
out on a one-board dataset, "angle" on a one-angle board; "angle": "all", or --angle=all for lines
without one, gives the curve), and writes one JSON line per input line: the prediction, or
{"line": n, "error": ...}; a bad line does not stop the others, and the exit status is 1 if any
line failed. A bad route on the command line stops with one line, `error: ...`. --lights prints
the Bluetooth packets that light the route on the board (one frame a line, as hex). --size and
--sets name your wall (of the default board): a route with a hold it lacks is refused, the
nearest known climb is one that fits it, and the lights use its size's LEDs.

A known climb (distance 0) also gets whether its logged grade is stiff or soft: below or above
the model's 80% range for its holds (metrics.stiff_or_soft); --stiff_soft lists the dataset's
climbs at --angle with at least --min_ascents ascents that are most so, --top of each.

The grade models are joined by the route generator read backwards (how likely it finds these holds
at each grade, by Bayes' rule: engine.GeneratorGrades) where out/<dataset>/gen/best.pt exists: on
Kilter val that took the MAE of rows with 5+ ascents from 1.31 to 1.21 (docs/grade.md). --generator=none
grades with the grade models alone, some 5 times faster.

Grades are in app difficulty units (10..33 = Font 4a..8c+ = V0..V16).
"""

import json
import math
import os
import sys
from collections import Counter

import numpy as np

from configurator import configure
from lights import hex_lines, route_packets
from engine import grade_curve, grade_routes, join_generator
from metrics import ClimbIndex, climb_label, stiff_or_soft
from model import check_device, checkpoint_dir, load_generator, load_grader
from routes import (FONT, SPLITS, Grammar, InputError, RouteError, encoder_input, grade_name, grade_record, load_meta,
                    load_split, select)

# -----------------------------------------------------------------------------
# config
dataset = 'kilter'
data_root = 'data'
checkpoint = ''  # a grade checkpoint, or a folder of them (an ensemble); default out/<dataset>/grade
generator = ''  # the generator whose grade posterior joins the grade model's (engine.join_generator):
#                default out/<dataset>/gen/best.pt where it exists; 'none': the grade model alone
board = ''  # default: the dataset's only board
size = ''  # your wall: a size of the board, by id or name; default: the configured size
sets = ''  # the hold sets on your wall, by id or name; default: all
frames = ''  # one route: Aurora frames (p1145r12p1160r13...) or MoonBoard SH:C5,E6/IH:E8/FH:D18
angle = None  # degrees, or 'all' for the grade curve; may be left out on a one-angle board (MoonBoard)
input = ''  # noqa: A001 (the flag is --input) JSON lines of routes to grade; '-' reads stdin
device = 'cpu'
batch_size = 512  # routes per forward pass in batch grading
lights = False  # print the route's Bluetooth LED packets (one route, --frames)
led_api = 3  # Aurora controller API level: 3, or 2 for older boards
stiff_soft = False  # list the dataset's known climbs at --angle that look most soft and most stiff for their grade
min_ascents = 5  # stiff_soft: only rows with at least this many ascents (a grade logged once says little)
top = 10  # stiff_soft: how many of each
# -----------------------------------------------------------------------------
configure(globals())  # its echo goes to stderr: stdout is the grades

meta = load_meta(os.path.join(data_root, dataset))
grammar = Grammar(meta)
default_board = board or (meta['boards'][0]['name'] if len(meta['boards']) == 1 else '')
if bool(frames) + bool(input) + bool(stiff_soft) != 1:
    raise InputError('give one route with --frames=... (and --angle=...), a JSON lines file with --input=PATH, '
                     'or --stiff_soft with --angle=...')
walls = {}  # board -> the climber's wall, for the default board
if default_board:
    walls[default_board] = grammar.wall(default_board, size, sets)  # an unknown --board, size or set fails here, once
elif size or sets:
    raise InputError("--size and --sets describe a wall of one board: say which with --board=NAME")
if frames and not default_board:
    raise InputError(f"dataset {dataset} has boards {', '.join(grammar.boards)}: say which with --board=NAME")
if input and input != '-' and not os.path.isfile(input):
    raise InputError(f"no input file {input}")
if lights and led_api not in (2, 3):
    raise InputError(f"led_api must be 2 or 3, got {led_api!r}")
if batch_size < 1:
    raise InputError(f"batch_size must be at least 1, got {batch_size}")
check_device(device)


def model_input(board_name, route, route_angle):
    """A user's route -> (holds, grade model input tokens or None for the curve, angle in degrees
    or NaN). Raises RouteError."""
    if route_angle == 'all':
        holds, _ = grammar.route(board_name, route, grammar.board(board_name)['angles'][0], wall=walls.get(board_name))
        return holds, None, math.nan
    holds, a = grammar.route(board_name, route, route_angle, wall=walls.get(board_name))
    return holds, encoder_input(grammar.encode(board_name, a, None, holds)), math.nan if a is None else float(a)


def grade_model():
    grader = load_grader(checkpoint or checkpoint_dir(dataset, 'grade'), meta, device)
    path = generator or os.path.join(checkpoint_dir(dataset, 'gen'), 'best.pt')
    if generator == 'none' or (not generator and not os.path.isfile(path)):
        return grader
    return join_generator(grader, load_generator(path, meta, device), meta)


def nearest_record(board_name, holds, a):
    near = known.nearest(board_name, holds, None if math.isnan(a) else int(a), walls.get(board_name))
    return near and dict(near, distance=round(near['distance'], 3))


# -----------------------------------------------------------------------------
# the known climbs that look most soft and most stiff for their logged grade, at one angle
if stiff_soft:
    if not default_board:
        raise InputError(f"dataset {dataset} has boards {', '.join(grammar.boards)}: say which with --board=NAME")
    spec = grammar.board(default_board)
    at = grammar.check_angle(default_board, spec['angles'][0] if angle is None and len(spec['angles']) == 1 else angle)
    rows = {s: load_split(os.path.join(data_root, dataset), meta, s) for s in SPLITS}
    here = {s: (r['board'] == default_board) & ~np.isnan(r['difficulty']) &
            ((r['angle'] == at) if at is not None else np.isnan(r['angle'])) for s, r in rows.items()}
    counted = sum(int(h.sum()) for h in here.values())
    trusted = {s: select(r, here[s] & (r['ascents'] >= min_ascents)) for s, r in rows.items()}  # NaN ascents fail too
    kept = sum(len(r['climb_id']) for r in trusted.values())
    unknown = sum(int((here[s] & np.isnan(r['ascents'])).sum()) for s, r in rows.items())
    if not kept:
        raise InputError(f"no graded climb of {default_board} at {at} degrees has {min_ascents} or more ascents "
                         f"({counted:,} graded rows there, {unknown:,} without an ascent count): lower --min_ascents")
    model = grade_model()
    listed = []
    for s, r in trusted.items():
        out = grade_routes(model, [encoder_input(t) for t in r['tokens']], r['angle'], batch_size)
        verdict, band = stiff_or_soft(r['difficulty'], out['probs'], model.grade_min)
        listed += [dict(split=s, climb=dict(climb_id=c, name=n, setter=st), logged=d, ascents=a, model=m, band=b, verdict=v)
                   for c, n, st, d, a, m, b, v in zip(r['climb_id'], r['name'], r['setter'], r['difficulty'], r['ascents'],
                                                      out['difficulty'], band, verdict)]
    verdicts = Counter(x['verdict'] for x in listed)
    print(f"{default_board} at {at} degrees: {counted:,} graded climbs, {kept:,} with {min_ascents}+ ascents "
          f"({counted - kept:,} left out, {unknown:,} of them without an ascent count): {verdicts['soft']:,} soft, "
          f"{verdicts['stiff']:,} stiff, {verdicts['as graded']:,} as graded (logged grade outside or inside the "
          f"model's 80% range; the model was trained on the train split's climbs, so theirs look truer than they are)")
    for kind, gap in (('soft', lambda x: x['logged'] - x['band'][1]), ('stiff', lambda x: x['band'][0] - x['logged'])):
        print(f"\nmost {kind} for their grade:")
        for i, x in enumerate(sorted((x for x in listed if x['verdict'] == kind), key=gap, reverse=True)[:top], 1):
            print(f"{i:>3}. {climb_label(x['climb'])}: logged {grade_name(x['logged'])} ({x['ascents']:.0f} ascents), "
                  f"model {grade_name(x['model'])} (80%: {grade_name(x['band'][0])} to {grade_name(x['band'][1])}) "
                  f"[{x['split']}]")
    sys.exit(0)

known = ClimbIndex(grammar, [load_split(os.path.join(data_root, dataset), meta, s, lists=False) for s in SPLITS])

# -----------------------------------------------------------------------------
# one route from the command line
if frames:
    holds, tokens, a = model_input(default_board, frames, angle)
    packets = route_packets(walls[default_board].lighting(led_api), holds) if lights else []
    model = grade_model()
    if tokens is None:  # the curve: one row per angle of the board
        print(f"{default_board}: {grammar.format(default_board, holds)}")
        print(f"{'angle':>6} {'difficulty':>10}  grade    likely")
        for curve_angle, d, probs in grade_curve(model, grammar, default_board, holds):
            likely = ', '.join(f"{FONT[model.grade_min + int(i)]} {probs[i]:.0%}" for i in probs.argsort()[::-1][:3])
            print(f"{'?' if curve_angle is None else curve_angle:>6} {d:>10.2f}  {grade_name(d):8} {likely}")
        sys.exit(0)
    graded = grade_routes(model, [tokens], [a])
    r = grade_record(graded['difficulty'][0])
    probs = graded['probs'][0]
    likely = ', '.join(f"{FONT[model.grade_min + int(i)]} {probs[i]:.0%}" for i in probs.argsort()[::-1][:3])
    where = f"at {a:g} degrees" if not math.isnan(a) else "(angle unknown)"
    print(f"{default_board} {where}: difficulty {r['difficulty']:.2f}, Font {r['font']}, {r['v']} (likely: {likely})")
    near = nearest_record(default_board, holds, a)
    if near:
        logged = f", logged {grade_name(near['difficulty'])} at this angle" if near['difficulty'] is not None else ''
        print(f"nearest known climb: {climb_label(near)} (distance {near['distance']:.2f}{logged})")
        if near['distance'] == 0 and near['difficulty'] is not None:  # this very climb: is its grade stiff or soft
            verdict, band = stiff_or_soft([near['difficulty']], probs[None], model.grade_min)
            print(f"its logged grade is {verdict[0]} for these holds (the model's 80% range: {grade_name(band[0, 0])} "
                  f"to {grade_name(band[0, 1])})")
    if lights:
        print(f"lights:\n{hex_lines(packets)}")
    sys.exit(0)

# -----------------------------------------------------------------------------
# JSON lines: every line is graded or gets its own error, whatever the others hold
raw = sys.stdin.buffer.read() if input == '-' else open(input, 'rb').read()
results, good = {}, []  # line number -> record; [(line number, board, tokens, angle)]
for number, line in enumerate(raw.splitlines(), 1):
    try:
        text = line.decode('utf-8')
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as e:
            raise RouteError(f"not a JSON object ({e})") from None
        if not isinstance(row, dict):
            raise RouteError(f"expected a JSON object with board, frames or holds, and angle; got {type(row).__name__}")
        board_name = row.get('board') or default_board
        if not board_name:
            raise RouteError(f"no board: this dataset has {', '.join(grammar.boards)}; give \"board\"")
        if not isinstance(board_name, str):
            raise RouteError(f"board must be a string, got {board_name!r}")
        if 'frames' not in row and 'holds' not in row:
            raise RouteError('no route: give "frames" (Aurora boards) or "holds" (a MoonBoard dict)')
        route_angle = row['angle'] if 'angle' in row else angle
        good.append((number, board_name, *model_input(board_name, row.get('frames', row.get('holds')), route_angle)))
    except UnicodeDecodeError as e:
        results[number] = dict(line=number, error=f"not UTF-8 text (byte {line[e.start]:#04x} at column {e.start + 1})")
    except RouteError as e:
        results[number] = dict(line=number, error=str(e))
model = grade_model()
single = [g for g in good if g[3] is not None]
predicted = grade_routes(model, [g[3] for g in single], [g[4] for g in single], batch_size)['difficulty']
for (number, board_name, holds, _, a), d in zip(single, predicted):
    results[number] = dict(line=number, board=board_name, angle=None if math.isnan(a) else int(a), **grade_record(d),
                           nearest=nearest_record(board_name, holds, a))
for number, board_name, holds, _, _ in (g for g in good if g[3] is None):
    curve = [dict(angle=ca, **grade_record(d)) for ca, d, _ in grade_curve(model, grammar, board_name, holds)]
    results[number] = dict(line=number, board=board_name, curve=curve, nearest=nearest_record(board_name, holds, math.nan))
for number in sorted(results):
    print(json.dumps(results[number]))
failed = [n for n in sorted(results) if 'error' in results[n]]
if failed:
    print(f"error: {len(failed)} of {len(results)} routes could not be graded "
          f"(lines {', '.join(map(str, failed[:10]))}{', ...' if len(failed) > 10 else ''})", file=sys.stderr)
    sys.exit(1)
