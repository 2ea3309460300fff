"""
One report on both models, in numbers and pictures.

    python evaluate.py config/kilter.py
    python evaluate.py config/moonboard.py --num_samples=500
    python evaluate.py config/kilter.py --size='8 x 12'     # for one wall: out/kilter/report-size8/

Writes out/<dataset>/report/report.json and report.html (self-contained: inline SVG, no network):
- the grade model on the test split (the grade models joined by the generator's grade
  posterior, engine.join_generator), beside the grade models alone, their first member alone and a
  ridge baseline on hold-and-angle features (if a grade checkpoint exists: python train_grade.py <config>);
- the generator: val loss per token and per route; routes sampled for (angle, grade) prompts
  drawn like the real test routes, plain and grade-guided (best_of candidates, the one the grade
  model puts nearest the asked grade kept, known climbs dropped), then validity, distinct and copy
  rates, novelty (Jaccard distance to the nearest training route), grade consistency, realism
  against the real test routes (or --split=val or all; Jensen-Shannon divergences, shape
  statistics, Fréchet distance of grade-model embeddings); the same for a frequency baseline that
  samples holds from their frequencies given board, angle and grade under the same grammar. Grade consistency is judged by
  a grade model that did not pick the routes (out/<dataset>/judge, trained with another seed:
  python train_grade.py <config> --seed=2 --out_dir=out/<dataset>/judge); without one, by the
  guiding model itself, and the report says so;
- a sheet of generated routes drawn on the board, grouped by requested grade (and sheet_<board>.svg,
  one route per requested grade, to put in a README);
- headline.md: the key figures as a markdown table, also printed.
With --size and/or --sets (a wall of --board, default the first) the prompts are drawn like the
real test routes that fit the wall, routes are generated on the wall, realism is measured against
those real routes, and the val loss of the val routes that fit it is given with and without the
wall's mask; the report goes to out/<dataset>/report-<wall>/.
It reads as load -> measure -> write.
"""

import json
import os
import random
import time
from collections import defaultdict
from xml.sax.saxutils import escape

import numpy as np
import torch

import metrics
from configurator import configure
from draw import board_svg, curve_svg, html_page, html_table, scatter_svg, write_sheet, write_text
from engine import (ACCEPT, AT_ONCE, BEST_OF, candidate_rounds, check_sampling, grade_routes, guide_rule,
                    join_generator, route_nll, sample_routes)
from metrics import REPORT_ROWS, ClimbIndex
from model import (check_device, checkpoint_dir, encoder_tables, grade_checkpoints, load_generator, load_grader,
                   read_history)
from routes import (CONDITIONING, FONT, SPLITS, V_GRADE, Grammar, InputError, RouteError,
                    encoder_input, fits_wall, font_grade, grade_name, load_meta, load_split, sample_split, select,
                    v_number)

# -----------------------------------------------------------------------------
# config
dataset = 'kilter'
data_root = 'data'
gen_dir = ''  # default out/<dataset>/gen
grade_dir = ''  # default out/<dataset>/grade (one model or an ensemble): grades the test split, guides sampling
judge_dir = ''  # default out/<dataset>/judge: a grade model kept apart to judge the samples
best_of = BEST_OF  # guided sampling: candidates per route at most
at_once = AT_ONCE  # candidates drawn first, then doubled, until one is within accept grades of the asked grade
accept = ACCEPT
tolerance = 1.0  # guided sampling: a route whose candidates all miss the asked grade by more is drawn again
report_dir = ''  # default out/<dataset>/report
num_samples = 1000
sample_batch = 500
temperature = 1.0
top_k = 0
top_p = 1.0
seed = 1337
device = 'cpu'
sheet_per_grade = 4  # routes drawn per requested grade
split = 'test'  # the real routes prompts are drawn like and realism is measured against: test, val (to
#                 choose a setting), or all (every split: a small wall has few routes in any one)
board = ''  # the board of the wall below; default: the dataset's first
size = ''  # evaluate on a wall: a size of the board, by id or name; default: the whole board
sets = ''  # and the hold sets on it, by id or name; default: all
max_rows = REPORT_ROWS  # the val and test routes a figure counts (train: ten times as many), a fixed sample of a
#                         split that has more (routes.sample_rows): a real snapshot's report in minutes; 0: all
# -----------------------------------------------------------------------------
configure(globals())
if split not in SPLITS + ('all',):
    raise InputError(f"split must be one of {', '.join(SPLITS)} or all, got {split!r}")
if not (isinstance(max_rows, int) and max_rows >= 0):
    raise InputError(f"max_rows must be a whole number of routes >= 0 (0: every route), got {max_rows!r}")
if num_samples < 1 or sample_batch < 1 or sheet_per_grade < 0:
    raise InputError("num_samples and sample_batch must be at least 1, sheet_per_grade at least 0")
check_sampling(temperature, top_k, top_p, best_of, tolerance, at_once, accept)
check_device(device)
t_start = time.time()


def log(message):
    print(f"[{time.time() - t_start:5.1f}s] {message}", flush=True)


# -----------------------------------------------------------------------------
# load: the prepared data, decoded, and the models
folder = os.path.join(data_root, dataset)
meta = load_meta(folder)
grammar = Grammar(meta)
gen_dir = gen_dir or checkpoint_dir(dataset, 'gen')
grade_dir = grade_dir or checkpoint_dir(dataset, 'grade')
judge_dir = judge_dir or checkpoint_dir(dataset, 'judge')
wall = grammar.wall(board or meta['boards'][0]['name'], size, sets) if size or sets else None
report_dir = report_dir or checkpoint_dir(dataset, 'report' + (f'-{wall.slug}' if wall else ''))
full = {s: load_split(folder, meta, s, lists=False) for s in SPLITS}  # every route: copies are of all known climbs
data = {s: sample_split(rows, len(rows['board']) if not max_rows else 10 * max_rows if s == 'train' else max_rows)
        for s, rows in full.items()}  # the routes the figures count
counted = {s: (len(data[s]['board']), len(full[s]['board'])) for s in SPLITS}
sampled = any(n < of for n, of in counted.values()) and \
    'The figures count a fixed sample of ' + ', '.join(f"{n:,} of the {of:,} {s} routes" for s, (n, of) in counted.items()) + '.'
if sampled:
    log(sampled)
routes = {}  # split -> decoded routes with their tokens and labels, and whether they fit the wall
for name, rows in data.items():
    fit = fits_wall(rows, wall) | (rows['board'] != wall.board) if wall else fits_wall(rows, None)  # other boards: whole
    routes[name] = [dict(grammar.decode(t), tokens=t, difficulty=d, fits=f)
                     for t, d, f in zip(rows['tokens'], rows['difficulty'], fit)]
walls = {b['name']: wall if wall and wall.board == b['name'] else None for b in meta['boards']}
real_test = [r for s in (SPLITS if split == 'all' else [split]) for r in routes[s] if r['fits']]
if not real_test:
    raise InputError(f"no {split} route fits the wall {wall.title}: nothing to draw prompts from or compare with")
boards = [b['name'] for b in meta['boards']]
board_specs = {b['name']: b for b in meta['boards']}
gpt = load_generator(os.path.join(gen_dir, 'best.pt'), meta, device)
gen_iteration = gpt.iteration
log(f"generator: {gen_dir}/best.pt, iteration {gen_iteration}, {gpt.num_params() / 1e6:.2f}M parameters")
guide = load_grader(grade_dir, meta, device) if grade_checkpoints(grade_dir) else None  # guides sampling
grader = guide and join_generator(guide, gpt, meta)  # grades the test split: the generator's posterior joined
judge = load_grader(judge_dir, meta, device) if grade_checkpoints(judge_dir) else guide
if guide is None:
    log(f"no grade model in {grade_dir}: guided sampling, grade consistency and embedding distances are skipped "
        f"(train one with python train_grade.py config/{dataset}.py)")
else:
    log(f"grade model: {', '.join(grader.paths)}; guide: {', '.join(guide.paths)}; judge: {', '.join(judge.paths)}"
        + ('' if judge is not guide else ' (the guide: guided figures are not independent)'))
known = ClimbIndex(grammar, list(full.values()))
torch.manual_seed(seed)
rng = random.Random(seed)

# -----------------------------------------------------------------------------
# measure: the generator's val loss
val_nll = route_nll(gpt, [r['tokens'] for r in routes['val']])
val_tokens = sum(len(r['tokens']) - CONDITIONING for r in routes['val'])
report = dict(dataset=dataset, boards=boards, grade_model=grader and grader.paths, judge=judge and judge.paths,
              routes_counted={s: dict(counted=n, of=of) for s, (n, of) in counted.items()},
              guide=dict(models=guide and guide.paths, best_of=best_of, at_once=at_once, accept=accept, tolerance=tolerance),
              generator=dict(
    val_loss_per_token=float(val_nll.sum() / val_tokens), val_loss_per_route=float(val_nll.mean()), iteration=gen_iteration))
log(f"val loss {report['generator']['val_loss_per_token']:.4f} per token, "
    f"{report['generator']['val_loss_per_route']:.2f} per route ({len(val_nll):,} routes)")
if wall:  # the val routes that fit the wall, scored as drawn (whole board) and under the wall's mask
    report['wall'] = wall.describe()
    mine = [r['tokens'] for r in routes['val'] if r['fits'] and r['board'] == wall.board]
    plain, masked = route_nll(gpt, mine), route_nll(gpt, mine, blocked=grammar.off_wall(wall))
    report['wall'].update(val_routes=len(mine), val_loss_per_route=float(plain.mean()) if mine else None,
                          val_loss_per_route_masked=float(masked.mean()) if mine else None)
    log(f"wall {wall.title}: {len(mine):,} val routes fit it" + (f"; val loss per route {plain.mean():.2f} on the "
        f"whole board, {masked.mean():.2f} under the wall's mask" if mine else ''))

# measure: samples for prompts drawn like the real routes of the split, their (board, angle, grade) with replacement
drawn = [rng.choice(real_test) for _ in range(num_samples)]  # the real routes the prompts are drawn from
prompts = [(r['board'], r['angle'], r['grade']) for r in drawn]
prompt_walls = [walls[p[0]] for p in prompts]


sample_stats = {}


def sampler(guided):
    """Plain sampling (every route as drawn), or guided (best_of candidates graded, known climbs dropped)."""
    def sample(prompts, generator, walls):
        per_prompt = candidate_rounds(best_of, at_once)[0] if guided else 1  # rows of its first round
        out, stats, step = [], dict(drawn=0, copies=0, more=0, redrawn=0), max(1, sample_batch // per_prompt)
        for i in range(0, len(prompts), step):
            chunk, chunk_stats = sample_routes(gpt, grammar, prompts[i:i + step], None, temperature, top_k, top_p,
                                               generator, *((guide, best_of, known) if guided else ()), tolerance=tolerance,
                                               walls=walls[i:i + step], at_once=at_once, accept=accept)
            out += [r['tokens'] for r in chunk]
            stats = {k: stats[k] + chunk_stats[k] for k in stats}
        sample_stats['gpt, guided' if guided else 'gpt'] = stats
        return out
    return sample


baseline = metrics.FrequencyBaseline(grammar, routes['train'])
samplers = [('gpt', sampler(False))] + ([('gpt, guided', sampler(True))] if guide is not None else []) \
    + [('frequency baseline', baseline.sample)]
samples = {}
for name, sample in samplers:
    t0 = time.time()
    samples[name] = sample(prompts, torch.Generator().manual_seed(seed), prompt_walls)
    log(f"sampled {len(prompts):,} routes from the {name} in {time.time() - t0:.1f}s")


def graded(rs):
    """Each decoded route gets the judge's prediction and embedding."""
    if judge is None or not rs:
        return
    out = grade_routes(judge, [encoder_input(r['tokens']) for r in rs], [r['angle'] for r in rs])
    for r, d, e in zip(rs, out['difficulty'], out['embedding']):
        r['predicted'], r['embedding'] = d, e


novelty = ClimbIndex(grammar, [full['train']])  # copies and the nearest route are of the training split
real = defaultdict(list)  # the real routes of the split that fit the wall
for r in real_test:
    real[r['board']].append(r)
graded(real_test)

# the judge's reach: the highest V grade it gives any real route of the split of the board. A prompt more
# than two V above it cannot be judged within two V, whatever route answers it.
judge_ceiling = {b: int(v_number(max(r['predicted'] for r in real[b]))) for b in boards if real[b] and judge}
generation, decoded_by_sampler = {}, {}
for name, seqs in samples.items():
    decoded = []
    for seq, prompt in zip(seqs, prompts):
        try:
            r = grammar.decode(seq)
            grammar.validate(r['board'], r['holds'])
        except RouteError:  # counted: validity is what is being measured
            continue
        decoded.append(dict(r, tokens=seq, asked=prompt))
    decoded_by_sampler[name] = decoded
    graded(decoded)
    per_board = {}
    for b in boards:
        mine = [r for r in decoded if r['board'] == b]
        if not mine:
            continue
        sets = [frozenset(r['holds']) for r in mine]
        real_sets = [frozenset(r['holds']) for r in real[b]]
        m = dict(samples=len(mine), distinct=metrics.distinct_rate(sets), real_routes=len(real_sets),
                 on_wall=float(np.mean([all(p in walls[b].placements for p, _ in s) for s in sets])) if walls[b] else 1.0,
                 copies=float(np.mean([novelty.contains(b, s) for s in sets])),
                 nearest_jaccard=float(np.mean([novelty.nearest(b, s)['distance'] for s in sets])),
                 js_hold_usage=metrics.js_divergence(metrics.hold_usage(sets), metrics.hold_usage(real_sets)),
                 js_role_counts=metrics.js_divergence(metrics.role_counts(sets), metrics.role_counts(real_sets)),
                 js_hold_counts=metrics.js_divergence(metrics.hold_counts(sets), metrics.hold_counts(real_sets)),
                 shape=metrics.shape_stats(sets, grammar.xy[b]),
                 real_shape=metrics.shape_stats(real_sets, grammar.xy[b]) if real_sets else None)
        judged = [r for r in mine if r['grade'] is not None and 'predicted' in r]
        if judged:
            err = np.array([r['predicted'] - r['grade'] for r in judged])
            dv = np.abs(v_number([r['predicted'] for r in judged]) - v_number([r['grade'] for r in judged]))
            m.update(grade_mae=float(np.abs(err).mean()), grade_exact_v=float((dv == 0).mean()),
                     grade_within1_v=float((dv <= 1).mean()), grade_within2_v=float((dv <= 2).mean()))
            if b in judge_ceiling:
                beyond = v_number([r['grade'] for r in judged]) > judge_ceiling[b] + 2
                m.update(judge_ceiling_v=judge_ceiling[b], beyond_judge=int(beyond.sum()),
                         grade_within2_v_in_reach=float((dv[~beyond] <= 2).mean()) if (~beyond).any() else None)
            with_emb = [r for r in real[b] if 'embedding' in r]
            if len(with_emb) > 2:
                m['frechet_embedding'] = metrics.frechet_distance(np.stack([r['embedding'] for r in judged]),
                                                                  np.stack([r['embedding'] for r in with_emb]))
        per_board[b] = m
    generation[name] = dict(valid=len(decoded) / len(seqs), boards=per_board, **sample_stats.get(name, {}))
    log(f"{name}: {100 * generation[name]['valid']:.1f}% valid; " + '; '.join(
        f"{b}: distinct {100 * m['distinct']:.1f}%, copies {100 * m['copies']:.1f}%, "
        f"nearest Jaccard {m['nearest_jaccard']:.3f}" for b, m in per_board.items()))
report['generation'] = generation

# measure: realism as a two-sample test: how often a classifier tells each sampler's routes from the real
# routes their prompts came from (each once), beside two controls in the same run: other real routes of the
# split (about 50%: the test cannot tell real from real) and as many random holds in the same roles (near
# 100%: it has the power to tell)
t0 = time.time()
asked = list({id(r): r for r in drawn}.values())
ids, two_sample = {id(r) for r in asked}, {}
for b in boards:
    mine = [frozenset(r['holds']) for r in asked if r['board'] == b]
    sides = {f'real {split} routes (control)': [frozenset(r['holds']) for r in real[b] if id(r) not in ids],
             'random holds (control)': metrics.random_routes(mine, walls[b].placements if walls[b] else grammar.xy[b], seed)}
    sides.update((name, [frozenset(r['holds']) for r in decoded if r['board'] == b]) for name, decoded in decoded_by_sampler.items())
    two_sample[b] = {name: metrics.two_sample_accuracy(mine, other, grammar.xy[b], seed=seed) for name, other in sides.items()}
report['two_sample'] = two_sample
log(f"two-sample test in {time.time() - t0:.1f}s: " + '; '.join(
    f"{b} {name} {100 * m['accuracy']:.1f}%" for b, ms in two_sample.items() for name, m in ms.items()))

# measure: the grade model on the test split, beside the ridge baseline fitted on the same train split
# (the same on every wall: left out of a wall's report)
if grader is not None and wall is None:
    rows = {s: select(d, ~np.isnan(d['difficulty'])) for s, d in data.items()}
    for r in rows.values():
        r['inputs'] = [encoder_input(t) for t in r['tokens']]
    token_role = encoder_tables(meta)[1]
    weights = metrics.ascent_weights(rows['train']['ascents'], 10)  # train_grade.py's default cap
    coef, _, _ = metrics.ridge_baseline(rows['train'], rows['val'], token_role, weights)
    test = rows['test']
    graded_test = grade_routes(grader, test['inputs'], test['angle'])
    predictions = dict(model=graded_test['difficulty'])
    # what the generator adds (the grade models alone), and what the ensemble adds (its first member alone)
    predictions['grade models'] = grade_routes(guide, test['inputs'], test['angle'])['difficulty']
    if len(guide.paths) > 1:
        predictions['single'] = grade_routes(guide.members[0], test['inputs'], test['angle'])['difficulty']
    predictions['ridge'] = metrics.ridge_predict(coef, metrics.ridge_design(test['inputs'], test['angle'], token_role))
    report['grade'] = metrics.grade_metrics_by_board(test, predictions)
    for b, entry in report['grade'].items():
        on_board = test['board'] == b
        true, pred = test['difficulty'][on_board], predictions['model'][on_board]
        font_true = font_grade(true)
        entry['calibration'] = {int(f): float(pred[font_true == f].mean()) for f in sorted(set(font_true))}
        # does the grade distribution mean what it says: how sure its likeliest grade is, against how often it is right
        entry['reliability'] = metrics.calibration(graded_test['probs'][on_board], metrics.grade_classes(
            true, grader.grade_min, grader.n_grades))
        vt, vp = v_number(true), v_number(pred)
        entry['v_confusion'] = {int(v): {int(w): int(((vt == v) & (vp == w)).sum()) for w in sorted(set(vp))}
                                for v in sorted(set(vt))}
        entry['plot'] = (true, pred)
    log('grade model on test: ' + '; '.join(
        f"{b}: MAE {v['model']['all']['mae']:.2f} (ridge {v['ridge']['all']['mae']:.2f})" for b, v in report['grade'].items()))

# -----------------------------------------------------------------------------
# write: report.json, report.html, the sheets, headline.md
plots = {b: entry.pop('plot') for b, entry in report.get('grade', {}).items()}
write_text(os.path.join(report_dir, 'report.json'), json.dumps(report, indent=1, default=float))


def pct(x):
    return '' if x is None else f'{100 * x:.1f}%'


def num(x, digits=3):
    return '' if x is None else f'{x:.{digits}f}'


judge_note = '' if judge is None else (' (also the guiding model: not independent)' if judge is guide
                                       else ', a model that did not guide')
judged_by = 'no grade model' if judge is None else ', '.join(judge.paths) + judge_note
# the page names checkpoints relative to the repo (out/<dataset>/...) or else to the one folder they all
# share, named once: absolute paths repeated on every line bury what differs between them
model_paths = [os.path.abspath(p) for p in [gpt.path] + (grader.paths if grader else []) + (judge.paths if judge else [])]
repo = os.getcwd() + os.sep
model_base = '' if all(p.startswith(repo) for p in model_paths) else os.path.commonpath([os.path.dirname(p) for p in model_paths])
if model_base in {os.path.dirname(p) for p in model_paths}:  # keep each run's own folder in its name: gen/best.pt
    model_base = os.path.dirname(model_base)
model_base = '' if model_base == os.sep else model_base  # nothing shared: each path as it is


def short(path):
    path = os.path.abspath(path)
    return os.path.relpath(path, model_base) if model_base else path[len(repo):] if path.startswith(repo) else path


def shorts(paths):
    return escape(', '.join(short(p) for p in paths)) if paths else '-'


views = {b: walls[b].view() if walls[b] else board_specs[b] for b in boards}  # a wall is drawn with its holds only
on_wall = '' if wall is None else (
    f"On the wall {wall.title} ({len(wall.placements)} holds): prompts and realism from the {len(real_test):,} real "
    f"{split} routes that fit it" + ('.' if not report['wall']['val_routes'] else
    f"; its {report['wall']['val_routes']:,} val routes score {report['wall']['val_loss_per_route']:.2f} per route on "
    f"the whole board, {report['wall']['val_loss_per_route_masked']:.2f} under the wall's mask."))
html = [f'<h1>boardgpt report: {escape(dataset)}</h1>', f'<p>{escape(on_wall)}</p>' if wall else '',
        f"<p>Generator val loss: {report['generator']['val_loss_per_token']:.4f} per token, "
        f"{report['generator']['val_loss_per_route']:.2f} per route (iteration {gen_iteration}). "
        f"{num_samples:,} prompts drawn like the real {split} routes.</p>",
        f'<p>{escape(sampled)}</p>' if sampled else '',
        # one model a line: a paragraph of comma-separated paths does not say which is which
        ('<p>Checkpoints, in <code>' + escape(model_base) + '</code>:</p>' if model_base else '<p>Checkpoints:</p>') +
        f"<ul class=\"models\"><li>generator: <code>{shorts([gpt.path])}</code> (iteration {gen_iteration})</li>"
        f"<li>guided sampling keeps the {guide_rule(best_of, at_once, accept)} by <code>{shorts(guide and guide.paths)}</code></li>"
        f"<li>grade consistency judged by " + ('no grade model' if judge is None else
                                                f"<code>{shorts(judge.paths)}</code>{judge_note}") + '</li>'
        f"<li>the test split graded by <code>{shorts(grader and grader.paths)}</code> (the generator's posterior joined)</li></ul>"]
# where learning stopped: every model's loss history, the checkpoint kept marked
runs = [(f'generator: {short(gen_dir)}', gen_dir, ('batch_loss', 'train_loss', 'val_loss'))]
for role, m in (('guide', guide), ('judge', judge if judge is not guide else None)):
    runs += [(f'{role}: {short(os.path.dirname(p))}', os.path.dirname(p), ('val_loss', 'val_mae', 'train_mae'))
             for p in (m.paths if m else [])]
html.append('<h2>Training curves</h2><div class="cards">' + ''.join(
    f'<div class="curve-card"><h4>{escape(title)}</h4>{curve_svg(read_history(folder), keys)}</div>'
    for title, folder, keys in runs) + '</div>')
rows = [[name, b, pct(g['valid']), pct(m['distinct']), pct(m['copies']), num(m['nearest_jaccard']),
         num(m.get('grade_mae'), 2), pct(m.get('grade_exact_v')), pct(m.get('grade_within1_v')),
         pct(m.get('grade_within2_v')), num(m['js_hold_usage']), num(m['js_role_counts']), num(m['js_hold_counts']),
         num(m.get('frechet_embedding'), 2)]
        for name, g in generation.items() for b, m in g['boards'].items()]
html.append('<h2>Generated routes</h2>' + html_table(
    ['sampler', 'board', 'valid', 'distinct', 'copies', 'nearest Jaccard', 'grade MAE', 'exact V', 'within 1 V',
     'within 2 V', 'JS holds', 'JS roles', 'JS hold count', 'Fréchet'], rows))
if 'gpt, guided' in generation:
    g = generation['gpt, guided']
    html.append(f"<p>Guided sampling drew {g['drawn']:,} candidates for {num_samples:,} routes; {g['copies']:,} of them "
                f"({pct(g['copies'] / max(g['drawn'], 1))}) were known climbs of the dataset and were dropped; "
                f"{g['more']:,} times a route drew more of its {best_of} (none yet within {accept:g} grades); "
                f"{g['redrawn']:,} times a route was drawn again (no candidate within one grade of the asked grade, "
                f"or none that was not a known climb).</p>")
beyond_judge = '; '.join(
    f"{name}, {b}: {m['beyond_judge']:,} prompts ask for more than two V above V{m['judge_ceiling_v']}, the highest grade "
    f"the judge gives any real {split} route; within 2 V on the other prompts {pct(m['grade_within2_v_in_reach'])}"
    for name, g in generation.items() for b, m in g['boards'].items() if m.get('beyond_judge'))
if beyond_judge:  # on the page a table: the sentence would repeat itself for every sampler
    html.append(f"<p>Prompts beyond the judge's reach: more than two V above the highest grade the judge gives any "
                f"real {split} route.</p>" + html_table(
                    ['sampler', 'board', "the judge's highest V", 'prompts beyond it', 'within 2 V on the other prompts'],
                    [[name, b, f"V{m['judge_ceiling_v']}", f"{m['beyond_judge']:,}", pct(m['grade_within2_v_in_reach'])]
                     for name, g in generation.items() for b, m in g['boards'].items() if m.get('beyond_judge')]))
    beyond_judge += '.'
shape_rows, shape_keys = [], ('top', 'height_span', 'width_span')
for b in boards:
    for name, g in generation.items():
        if b in g['boards']:
            shape_rows.append([name, b] + [num(g['boards'][b]['shape'][k], 1) for k in shape_keys])
    if real[b]:
        real_shape = metrics.shape_stats([frozenset(r['holds']) for r in real[b]], grammar.xy[b])
        shape_rows.append([f"real {split} routes", b] + [num(real_shape[k], 1) for k in shape_keys])
html.append('<h3>Shape (board units)</h3>' + html_table(['routes', 'board', 'top hold', 'height span', 'width span'], shape_rows))
html.append('<h3>Two-sample test</h3><p>How often a classifier (logistic regression on each hold in its role, the '
            'role counts, a coarse grid and the geometry; 5-fold cross-validated) tells the routes from the real '
            f'{split} routes the prompts were drawn from: 50% is indistinguishable. The two controls show the test '
            'cannot tell real from real and has the power to tell random holds.</p>' + html_table(
                ['routes', 'board', 'classifier accuracy', '± (standard error)', 'routes a side'],
                [[name, b, pct(m['accuracy']), pct(m['se']), f"{m['n']:,}"] for b, ms in two_sample.items()
                 for name, m in ms.items()]))

GRADE_COLUMNS = [('n', 'routes', '{:,}'), ('mae', 'MAE', '{:.2f}'), ('rmse', 'RMSE', '{:.2f}'), ('r2', 'R²', '{:.3f}'),
                 ('v_exact', 'exact V', '{:.1%}'), ('v_within1', 'within 1 V', '{:.1%}'),
                 ('v_within2', 'within 2 V', '{:.1%}'), ('font_exact', 'exact Font', '{:.1%}'),
                 ('font_within1', 'within 1 Font', '{:.1%}')]
if 'grade' in report:
    html.append('<h2>Grade model (test split)</h2>')
    for b, entry in report['grade'].items():
        rows = [[f'{name} ({"all rows" if part == "all" else "≥5 ascents"})'] + [fmt.format(entry[name][part][k])
                                                                                for k, _, fmt in GRADE_COLUMNS]
                for part in ('all', 'min5') for name in entry if name in predictions and part in entry[name]]
        html.append(f'<h3>{escape(b)}</h3>' + html_table(['predictor'] + [title for _, title, _ in GRADE_COLUMNS], rows))
        calibration = [[f'{FONT[f]}/{V_GRADE[f]}', f'{m:.2f}', FONT[font_grade(m)]] for f, m in entry['calibration'].items()]
        vs = sorted({w for row in entry['v_confusion'].values() for w in row})
        confusion = [[f'V{v}'] + [f'{row.get(w, 0):,}' for w in vs] for v, row in entry['v_confusion'].items()]
        # panels that wrap onto another line rather than run off the page, each table scrolling in its own box
        html.append('<div class="cards">'
                    f'<div class="panel"><h4>predicted vs true</h4>{scatter_svg(*plots[b])}</div>'
                    f'<div class="panel"><h4>calibration: mean prediction per true grade</h4>'
                    f"{html_table(['true grade', 'mean predicted', 'as Font'], calibration)}</div>"
                    f"<div class=\"panel\"><h4>V grades: true (rows) vs predicted (columns)</h4>"
                    f"{html_table([''] + [f'V{w}' for w in vs], confusion)}</div>"
                    f"<div class=\"panel\"><h4>reliability of the likeliest Font grade (expected calibration error "
                    f"{num(entry['reliability']['ece'])})</h4>"
                    + html_table(['confidence', 'routes', 'mean confidence', 'right'],
                                 [[f'{lo:.1f}-{hi:.1f}', f'{n:,}', f'{c:.3f}', f'{a:.3f}'] for lo, hi, n, c, a in
                                  entry['reliability']['table']]) + '</div></div>')

# a sheet of generated routes per requested grade
by_grade = defaultdict(list)
for r in decoded_by_sampler['gpt']:
    if len(by_grade[(r['board'], r['grade'])]) < sheet_per_grade:
        by_grade[(r['board'], r['grade'])].append(r)
html.append('<h2>Generated routes by requested grade</h2>')
sheets = defaultdict(list)  # per board, the first route of every requested grade: one standalone SVG
for (b, g) in sorted(by_grade, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
    cells = []
    for i, r in enumerate(by_grade[(b, g)]):
        subtitle = f"{'?' if r['angle'] is None else r['angle']}°, {len(r['holds'])} holds"
        cells.append(board_svg(views[b], r['holds'], title=grade_name(g), subtitle=subtitle, size=160))
        if i == 0:
            sheets[b].append(dict(holds=r['holds'], title=grade_name(g), subtitle=subtitle))
    html.append(f'<div class="row"><h3>{escape(b)} {escape(grade_name(g))}</h3>' + ''.join(cells) + '</div>')
for b, sheet in sheets.items():
    write_sheet(os.path.join(report_dir, f'sheet_{b}.svg'), views[b], sheet, columns=6)
write_text(os.path.join(report_dir, 'report.html'), html_page('boardgpt report', html))

# headline.md: the report's key figures as markdown tables (printed too)
lines = ([on_wall, ''] if wall else []) + [f'Grade consistency judged by {judged_by}.', '',
         '| sampler | board | valid | distinct | copies | nearest Jaccard | grade MAE | within 1 V | within 2 V '
         '| JS holds | JS hold count | Fréchet |', '|' + '---|' * 12]
for name, g in generation.items():
    for b, m in g['boards'].items():
        cells = [name, b, pct(g['valid']), pct(m['distinct']), pct(m['copies']), num(m['nearest_jaccard']),
                 num(m.get('grade_mae'), 2), pct(m.get('grade_within1_v')), pct(m.get('grade_within2_v')),
                 num(m['js_hold_usage']), num(m['js_hold_counts']), num(m.get('frechet_embedding'), 2)]
        lines.append('| ' + ' | '.join(cells) + ' |')
lines += ['', f'| two-sample test against the real {split} routes | board | classifier accuracy | routes a side |',
          '|' + '---|' * 4]
lines += [f"| {name} | {b} | {pct(m['accuracy'])} | {m['n']:,} |" for b, ms in two_sample.items() for name, m in ms.items()]
if 'grade' in report:
    lines += ['', '| grade predictor (test) | board | routes | MAE | exact V | within 1 V | exact Font | within 1 Font |',
              '|' + '---|' * 8]
    for b, entry in report['grade'].items():
        for part, label in (('all', 'all rows'), ('min5', '≥5 ascents')):
            for name in predictions:
                if part in entry[name]:
                    m = entry[name][part]
                    lines.append(f"| {name}, {label} | {b} | {m['n']:,} | {m['mae']:.2f} | {pct(m['v_exact'])} "
                                 f"| {pct(m['v_within1'])} | {pct(m['font_exact'])} | {pct(m['font_within1'])} |")
    lines += ['', 'Expected calibration error of the grade distribution (test, likeliest Font grade): ' + ', '.join(
        f"{b} {num(entry['reliability']['ece'])}" for b, entry in report['grade'].items()) + '.']
if beyond_judge:
    lines += ['', beyond_judge]
headline = '\n'.join(lines) + '\n'
write_text(os.path.join(report_dir, 'headline.md'), headline)
print(headline, end='')
log(f"wrote {report_dir}/report.json, report.html, headline.md and " + ', '.join(f'sheet_{b}.svg' for b in sheets))
