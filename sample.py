"""
Sample new routes from a trained generator.

    python sample.py config/kilter.py --angle=40 --grade=V5 --num_samples=10 --out=out/samples
    python sample.py config/kilter.py --angle=35 --grade=6c+ --prompt=p1131r12p1146r12
    python sample.py config/moonboard.py --grade=7a --prompt='SH:C5,E6' --jsonl

Decoding is constrained by the board's grammar (routes.DecodingRules) at every step, so every
route printed is one the board can display: holds of the board only, none twice, one or two
start and finish holds, within the hold-count rules, and including every hold of the prompt.
For each route: its route string, its holds by role, and (with --out) a sheet of all routes drawn
on the board; --jsonl prints one JSON line per route instead.
"""

import json
import os

import torch

from configurator import configure
from draw import write_sheet
from model import check_device, checkpoint_dir, load_generator, sample_routes
from routes import ROLES, Grammar, InputError, grade_name, load_meta, parse_grade

# -----------------------------------------------------------------------------
# config
dataset = 'kilter'
data_root = 'data'
out_dir = ''  # the generator's checkpoints; default out/<dataset>/gen
checkpoint = 'best.pt'
board = ''  # default: the dataset's first board
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
device = 'cpu'
# -----------------------------------------------------------------------------
configure(globals())

# everything the user gave is checked before the model is loaded or anything is sampled
meta = load_meta(os.path.join(data_root, dataset))
grammar = Grammar(meta)
board = board or meta['boards'][0]['name']
spec = grammar.board(board)
required, angle_used = grammar.route(board, prompt, angle, complete=False) if prompt else ([], grammar.check_angle(board, angle))
grades = [None] if str(grade) == '?' else parse_grade(grade)
if not 1 <= num_samples <= 100_000:
    raise InputError(f"num_samples must be 1..100000, got {num_samples}")
check_device(device)
if angle_used is None and angle is not None and not jsonl:
    print(f"note: the {spec['title']} data has no angles; the angle is left unknown")

model = load_generator(os.path.join(out_dir or checkpoint_dir(dataset, 'gen'), checkpoint), meta, device)
prompts = [(board, angle_used, grades[i % len(grades)]) for i in range(num_samples)]  # V5: 6c and 6c+
generator = torch.Generator(device=device).manual_seed(seed)
routes = sample_routes(model, grammar, prompts, [required] * num_samples, temperature, top_k, top_p, generator)

for i, r in enumerate(routes):
    text = grammar.format(board, r['holds'])
    if jsonl:
        record = dict(board=board, angle=r['angle'], grade_asked=str(grade), grade=grade_name(r['grade']))
        if spec['format'] == 'moonboard':
            record['holds'] = {code: [p for p, role in r['holds'] if role == name] for name, code in spec['role_codes'].items()}
        else:
            record['frames'] = text
        print(json.dumps(record))
        continue
    angle_text = '?' if r['angle'] is None else f"{r['angle']}°"
    print(f"#{i + 1} {spec['title']} @ {angle_text}, {grade_name(r['grade'])}: {len(r['holds'])} holds")
    print(f"  {text}")
    for role in ROLES:
        holds = [p for p, rr in r['holds'] if rr == role]
        if holds:
            xy = grammar.xy[board]
            print(f"  {role:7}" + ' '.join(f"{p}({xy[p][0]},{xy[p][1]})" for p in holds))

if out:
    path = os.path.join(out, 'samples.svg')
    sheet = [dict(holds=r['holds'], title=f"#{i + 1} {grade_name(r['grade'])}",
                  subtitle=f"{'?' if r['angle'] is None else r['angle']}°, {len(r['holds'])} holds")
             for i, r in enumerate(routes)]
    write_sheet(path, spec, sheet)
    if not jsonl:
        print(f"wrote {path}")
