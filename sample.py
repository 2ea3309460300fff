"""
Sample new routes from a trained generator.

    python sample.py config/kilter.py --angle=40 --grade=V5 --num_samples=10 --out=out/samples
    python sample.py config/kilter.py --angle=35 --grade=6c+ --prompt=p1131r12p1146r12
    python sample.py config/moonboard.py --grade=7a --prompt='SH:C5,E6' --jsonl
    python sample.py config/kilter.py --num_samples=1 --lights     # the Bluetooth packets, as hex
    python sample.py config/kilter.py --size='7 x 10' --sets='Bolt Ons'   # routes for your wall

Decoding is constrained by the board's grammar (routes.DecodingRules) at every step, so every
route printed is one the board can display: holds of the board only, none twice, one or two
start and finish holds, within the hold-count rules, and including every hold of the prompt.
--size and --sets say which wall the routes are for (a size of the board and the hold sets on
it, by id or name; prepare.py lists them): the decoder then only ever takes holds that wall has,
the nearest known climb is one that fits it, and the lights use that size's LEDs.

Grade-guided (the default where the dataset has a grade model, out/<dataset>/grade): up to best_of
candidates are drawn for each route and the one the grade model puts closest to the asked grade
is kept; a route draws at_once first, then as many again as it has (1, 1, 2, 4), and stops as
soon as one is within accept grades of the asked grade (--at_once=0: all best_of at once);
--best_of=1 is plain sampling. A route that is already a known climb of the dataset is not offered
(it is drawn again), unless --allow_copies. For each route: its route string, its holds by role,
the grade model's opinion, and the nearest known climb (Jaccard distance over holds with roles; 0
is the same climb); with --out a sheet of all routes drawn on the board; --jsonl prints one JSON
line per route instead. --lights adds the packets that light each route on the board (lights.py;
one frame a line, as hex; --led_api=2 for older Aurora controllers).
"""

import json
import os

import torch

from configurator import configure
from draw import write_sheet
from lights import hex_lines, route_packets
from engine import ACCEPT, AT_ONCE, BEST_OF, check_sampling, guide_rule, sample_routes
from metrics import ClimbIndex, climb_label
from model import check_device, checkpoint_dir, grade_checkpoints, load_generator, load_grader
from routes import ROLES, SPLITS, Grammar, InputError, grade_name, load_meta, load_split, parse_grade

# -----------------------------------------------------------------------------
# config
dataset = 'kilter'
data_root = 'data'
out_dir = ''  # the generator's checkpoints; default out/<dataset>/gen
checkpoint = 'best.pt'
grade_dir = ''  # the grade model (or ensemble) that guides; default out/<dataset>/grade
best_of = BEST_OF  # candidates per route at most, the one graded closest to the asked grade kept; 1: plain sampling
at_once = AT_ONCE  # candidates drawn first, then doubled, until one is within accept grades; 0: all at once
accept = ACCEPT
tolerance = 1.0  # grades: a route whose candidates all miss the asked grade by more is drawn again
allow_copies = False  # offer routes that are known climbs of the dataset
board = ''  # default: the dataset's first board
size = ''  # your wall: a size of the board, by id or name ('7 x 10'); default: the configured size
sets = ''  # the hold sets on your wall, by id or name ('Bolt Ons,Screw Ons'); default: all
angle = 40  # degrees; ignored (unknown) on boards whose data has no angles
grade = 'V5'  # V5, 6c+, 7A or an app difficulty like 20; '?' for no grade
prompt = ''  # a partial route the samples must contain, e.g. p1131r12p1146r12 or SH:C5,E6
num_samples = 10
temperature = 1.0
top_k = 0  # 0 = off
top_p = 1.0  # 1.0 = off
seed = 1337
out = ''  # a folder: writes <out>/samples.svg, all routes drawn on the board
jsonl = False
lights = False  # print each route's Bluetooth LED packets
led_api = 3  # Aurora controller API level: 3, or 2 for older boards (a device name ending @2 says so)
device = 'cpu'
# -----------------------------------------------------------------------------
configure(globals())

# everything the user gave is checked before the model is loaded or anything is sampled
meta = load_meta(os.path.join(data_root, dataset))
grammar = Grammar(meta)
board = board or meta['boards'][0]['name']
spec = grammar.board(board)
wall = grammar.wall(board, size, sets)
required, angle_used = grammar.route(board, prompt, angle, complete=False, wall=wall) if prompt else \
    ([], grammar.check_angle(board, angle))
grades = [None] if str(grade) == '?' else parse_grade(grade)
if not 1 <= num_samples <= 100_000:
    raise InputError(f"num_samples must be 1..100000, got {num_samples}")
check_device(device)
if angle_used is None and angle is not None and not jsonl:
    print(f"note: the {spec['title']} data has no angles; the angle is left unknown")

check_sampling(temperature, top_k, top_p, best_of, tolerance, at_once, accept)
if lights and led_api not in (2, 3):
    raise InputError(f"led_api must be 2 or 3, got {led_api!r}")
if lights and spec['format'] == 'aurora' and not (wall.leds and spec['role_colors']):
    raise InputError(f"{wall.title}: no LED map in {data_root}/{dataset} (its database lists no LEDs for this size, "
                     f"or no colour for each role), so its routes cannot be lit")

model = load_generator(os.path.join(out_dir or checkpoint_dir(dataset, 'gen'), checkpoint), meta, device)
grade_dir = grade_dir or checkpoint_dir(dataset, 'grade')
grader = load_grader(grade_dir, meta, device) if grade_checkpoints(grade_dir) else None
if grader is None and best_of > 1 and not jsonl:
    print(f"note: no grade model in {grade_dir}, so plain sampling (train one: python train_grade.py config/{dataset}.py)")
known = ClimbIndex(grammar, [load_split(os.path.join(data_root, dataset), meta, s, lists=False) for s in SPLITS])
prompts = [(board, angle_used, grades[i % len(grades)]) for i in range(num_samples)]  # V5: 6c and 6c+
generator = torch.Generator(device=device).manual_seed(seed)
routes, stats = sample_routes(model, grammar, prompts, [required] * num_samples, temperature, top_k, top_p, generator,
                              grader, best_of if grader is not None else 1, None if allow_copies else known,
                              tolerance=tolerance, walls=[wall] * num_samples, at_once=at_once, accept=accept)

for i, r in enumerate(routes):
    text = grammar.format(board, r['holds'])
    near = known.nearest(board, r['holds'], r['angle'], wall)
    if jsonl:
        record = dict(board=board, wall=wall.title, angle=r['angle'], grade_asked=str(grade), grade=grade_name(r['grade']))
        if spec['format'] == 'moonboard':
            record['holds'] = {code: [p for p, role in r['holds'] if role == name] for name, code in spec['role_codes'].items()}
        else:
            record['frames'] = text
        if 'predicted' in r:
            record['predicted'] = dict(difficulty=round(r['predicted'], 2), grade=grade_name(r['predicted']))
        record['nearest'] = near and dict(near, distance=round(near['distance'], 3))
        record['known_climb'] = r['copy']
        if lights:
            record['lights'] = hex_lines(route_packets(wall.lighting(led_api), r['holds'])).splitlines()
        print(json.dumps(record))
        continue
    angle_text = '?' if r['angle'] is None else f"{r['angle']}°"
    judged = f", graded {grade_name(r['predicted'])} ({r['predicted']:.1f})" if 'predicted' in r else ''
    print(f"#{i + 1} {wall.title} @ {angle_text}, asked {grade_name(r['grade'])}{judged}: {len(r['holds'])} holds"
          + (' (a known climb: every candidate was one)' if r['copy'] else ''))
    print(f"  {text}")
    if near:
        at = f", logged {grade_name(near['difficulty'])} at this angle" if near['difficulty'] is not None else ''
        print(f"  nearest known climb: {climb_label(near)} (distance {near['distance']:.2f}{at})")
    for role in ROLES:
        holds = [p for p, rr in r['holds'] if rr == role]
        if holds:
            xy = grammar.xy[board]
            print(f"  {role:7}" + ' '.join(f"{p}({xy[p][0]},{xy[p][1]})" for p in holds))
    if lights:
        print('  lights' + (f' (API v{led_api})' if spec['format'] == 'aurora' else '') + ':\n    '
              + hex_lines(route_packets(wall.lighting(led_api), r['holds'])).replace('\n', '\n    '))

if not jsonl:
    guide = 'plain sampling'
    if grader is not None and best_of > 1:
        guide = f"{guide_rule(best_of, at_once, accept)}, graded by {len(grader.paths)} grade model(s)"
    print(f"{guide}; {stats['drawn']} candidates drawn, {stats['copies']} of them known climbs"
          + (' (dropped)' if not allow_copies else '')
          + (f"; {stats['more']} time(s) a route drew more (none yet within {accept:g} grades)"
             if stats['more'] else '')
          + (f"; {stats['redrawn']} time(s) a route was drawn again (no candidate near the asked grade, "
             f"or only known climbs)" if stats['redrawn'] else ''))
if out:
    path = os.path.join(out, 'samples.svg')
    sheet = [dict(holds=r['holds'], title=f"#{i + 1} {grade_name(r['grade'])}",
                  subtitle=f"{'?' if r['angle'] is None else r['angle']}°, {len(r['holds'])} holds")
             for i, r in enumerate(routes)]
    write_sheet(path, wall.view(), sheet)
    if not jsonl:
        print(f"wrote {path}")
