"""
Sample new routes from a trained generator.

    python sample.py config/kilter.py --angle=40 --grade=V5 --num_samples=10 --out=samples
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
import sys

import torch

from configurator import configure
from draw import write_sheet
from model import GPT, ModelConfig, generate
from routes import END, DecodingRules, Grammar, RouteError, grade_name, load_meta, parse_grade
from trainer import load_checkpoint

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


def fail(message):
    sys.exit(f"error: {message}")


meta = load_meta(os.path.join(data_root, dataset, 'meta.pkl'))
grammar = Grammar(meta)
board = board or meta['boards'][0]['name']
try:
    spec = grammar.board(board)
    angle_used = grammar.check_angle(board, angle)
    grades = [None] if str(grade) == '?' else parse_grade(grade)
    required = grammar.parse(board, prompt) if prompt else []
except RouteError as e:
    fail(e)
if angle_used is None and angle is not None and not jsonl:
    print(f"note: the {spec['title']} data has no angles; the angle is left unknown")
if num_samples < 1:
    fail('num_samples must be at least 1')

ckpt_path = os.path.join(out_dir or os.path.join('out', dataset, 'gen'), checkpoint)
ckpt = load_checkpoint(ckpt_path, device)
model = GPT(ModelConfig(**ckpt['model_args']))
model.load_state_dict(ckpt['model'])
model.to(device).eval()
if model.config.vocab_size != grammar.vocab_size:
    fail(f"{ckpt_path} was trained on another vocabulary ({model.config.vocab_size} tokens, "
         f"{dataset} has {grammar.vocab_size}): prepare and train on the same config")

# a V grade covers several Font grades: spread the samples over them
asked = [grades[i % len(grades)] for i in range(num_samples)]
prefix = torch.tensor([grammar.prefix(board, angle_used, g) for g in asked], device=device)
rules = DecodingRules(grammar, [(board, required)] * num_samples, device=device)
gen = torch.Generator(device=device).manual_seed(seed)
tokens = generate(model, prefix, rules, temperature=temperature, top_k=top_k, top_p=top_p, generator=gen)

routes = []
for row in tokens.tolist():
    route = grammar.decode(row[:row.index(END) + 1])
    grammar.validate(board, route['holds'])  # by construction; checked anyway, it is cheap
    routes.append(route)

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
    for role in ('start', 'middle', 'finish', 'foot'):
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
