"""
One report on both models, in numbers and pictures.

    python evaluate.py config/kilter.py
    python evaluate.py config/moonboard.py --num_samples=500

Writes out/<dataset>/report/report.json and report.html (self-contained: inline SVG, no network):
- the grade model on the test split, beside a ridge baseline on hold-and-angle features (if a
  grade checkpoint exists: python train_grade.py <config>);
- the generator: val loss per token and per route; routes sampled for (angle, grade) prompts
  drawn like the real test routes, then validity, distinct and copy rates, novelty (Jaccard
  distance to the nearest training route), grade consistency (the grade model on the samples),
  realism against the real test routes (Jensen-Shannon divergences, shape statistics, Fréchet
  distance of grade-model embeddings); the same for a frequency baseline that samples holds from
  their frequencies given board, angle and grade under the same grammar;
- a sheet of generated routes drawn on the board, grouped by requested grade (and sheet_<board>.svg,
  one route per requested grade, to put in a README);
- headline.md: the key figures as a markdown table, also printed.
"""

import json
import math
import os
import random
import time
from collections import Counter, defaultdict
from xml.sax.saxutils import escape

import numpy as np
import torch

import metrics as M
from configurator import configure
from draw import board_svg, write_sheet
from model import GPT, ModelConfig, generate, sample_tokens
from routes import (END, FONT, MAX_DIFFICULTY, MIN_DIFFICULTY, SPLITS, V_GRADE, DecodingRules, Grammar, grade_name,
                    load_meta)
from trainer import load_checkpoint

# -----------------------------------------------------------------------------
# config
dataset = 'kilter'
data_root = 'data'
gen_dir = ''  # default out/<dataset>/gen
grade_dir = ''  # default out/<dataset>/grade
report_dir = ''  # default out/<dataset>/report
num_samples = 1000
sample_batch = 500
temperature = 1.0
top_k = 0
top_p = 1.0
seed = 1337
device = 'cpu'
sheet_per_grade = 4  # routes drawn per requested grade
# -----------------------------------------------------------------------------
configure(globals())
t_start = time.time()
gen_dir = gen_dir or os.path.join('out', dataset, 'gen')
grade_dir = grade_dir or os.path.join('out', dataset, 'grade')
report_dir = report_dir or os.path.join('out', dataset, 'report')
folder = os.path.join(data_root, dataset)
meta = load_meta(os.path.join(folder, 'meta.pkl'))
grammar = Grammar(meta)
torch.manual_seed(seed)
rng = random.Random(seed)


def log(message):
    print(f"[{time.time() - t_start:5.1f}s] {message}", flush=True)


def read_split(split):
    """Decoded routes of a split, each with its board, angle, grade and difficulty."""
    data = np.fromfile(os.path.join(folder, f'{split}.bin'), dtype=np.uint16).tolist()
    arrays = meta['splits'][split]
    o = arrays['offset']
    out = []
    for i in range(len(o) - 1):
        r = grammar.decode(data[o[i]:o[i + 1]])
        r.update(tokens=data[o[i]:o[i + 1]], difficulty=arrays['difficulty'][i], ascents=arrays['ascents'][i])
        out.append(r)
    return out


routes = {s: read_split(s) for s in SPLITS}
boards = [b['name'] for b in meta['boards']]
report = dict(dataset=dataset, boards=boards)

# -----------------------------------------------------------------------------
# the generator: val loss, then samples from the GPT and from the frequency baseline
ckpt = load_checkpoint(os.path.join(gen_dir, 'best.pt'), device)
gpt = GPT(ModelConfig(**ckpt['model_args']))
gpt.load_state_dict(ckpt['model'])
gpt.to(device).eval()
log(f"generator: {gen_dir}/best.pt, iteration {ckpt['iter_num']}, {gpt.num_params() / 1e6:.2f}M parameters")


@torch.no_grad()
def route_losses(model, rs):
    """Summed NLL of each route's holds and <end>, given its board, angle and grade tokens."""
    out = []
    for i in range(0, len(rs), 256):
        chunk = [r['tokens'] for r in rs[i:i + 256]]
        T = max(len(t) for t in chunk)
        x = torch.tensor([t[:-1] + [0] * (T - len(t)) for t in chunk], device=device)
        y = torch.tensor([[-1, -1] + t[3:] + [-1] * (T - len(t)) for t in chunk], device=device)
        logits, _ = model(x)
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y, ignore_index=-1, reduction='none')
        out += nll.sum(1).tolist()
    return out


val_nll = route_losses(gpt, routes['val'])
val_tokens = sum(len(r['holds']) + 1 for r in routes['val'])
report['generator'] = dict(val_loss_per_token=sum(val_nll) / val_tokens, val_loss_per_route=sum(val_nll) / len(val_nll),
                           iteration=ckpt['iter_num'])
log(f"val loss {report['generator']['val_loss_per_token']:.4f} per token, "
    f"{report['generator']['val_loss_per_route']:.2f} per route ({len(val_nll):,} routes)")

# prompts drawn like the real test routes: their (board, angle, grade) with replacement
prompts = [(r['board'], r['angle'], r['grade']) for r in (rng.choice(routes['test']) for _ in range(num_samples))]


def sample_gpt(prompts, generator):
    out = []
    for i in range(0, len(prompts), sample_batch):
        chunk = prompts[i:i + sample_batch]
        prefix = torch.tensor([grammar.prefix(*p) for p in chunk], device=device)
        rules = DecodingRules(grammar, [(p[0], []) for p in chunk], device=device)
        tokens = generate(gpt, prefix, rules, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        out += [row[:row.index(END) + 1] for row in tokens.tolist()]
    return out


class FrequencyBaseline:
    """Holds drawn from how often each hold-and-role token appears in training routes of the same
    board, angle and grade (backing off to board and grade, then board), and <end> from how often
    training routes of that grade stop at each length. Sampled under the same grammar."""

    def __init__(self, train):
        V = grammar.vocab_size
        counts = defaultdict(lambda: np.zeros(V))
        lengths = defaultdict(Counter)
        for r in train:
            for key in ((r['board'], r['angle'], r['grade']), (r['board'], r['grade']), (r['board'],)):
                counts[key][r['tokens'][3:-1]] += 1
            lengths[(r['board'], r['grade'])][len(r['holds'])] += 1
            lengths[(r['board'],)][len(r['holds'])] += 1
        self.counts, self.lengths = counts, lengths

    def log_probs(self, board, angle, grade):
        p = np.zeros(grammar.vocab_size)
        for weight, key in ((0.5, (board, angle, grade)), (0.3, (board, grade)), (0.2, (board,))):
            c = self.counts.get(key)
            if c is not None and c.sum() > 0:
                p += weight * c / c.sum()
        return np.log(p + 1e-12)

    def stop_hazard(self, board, grade, max_len):
        """P(route ends at n holds | it has n), for n = 0..max_len."""
        hist = self.lengths.get((board, grade)) or self.lengths[(board,)]
        total = sum(hist.values())
        h, left = np.zeros(max_len + 2), total
        for n in range(max_len + 2):
            h[n] = hist.get(n, 0) / left if left > 0 else 1.0
            left -= hist.get(n, 0)
        return np.clip(h, 1e-6, 1 - 1e-6)

    @torch.no_grad()
    def sample(self, prompts, generator):
        B, max_len = len(prompts), max(b['max_holds'] for b in meta['boards'])
        lp = torch.tensor(np.stack([self.log_probs(*p) for p in prompts]), dtype=torch.float32)
        hz = torch.tensor(np.stack([self.stop_hazard(p[0], p[2], max_len) for p in prompts]), dtype=torch.float32)
        rules = DecodingRules(grammar, [(p[0], []) for p in prompts])
        seqs = [grammar.prefix(*p) for p in prompts]
        for _ in range(max_len + 1):
            n = rules.count.sum(1).clamp(max=hz.size(1) - 1)
            h = hz.gather(1, n[:, None]).squeeze(1)
            logits = lp + torch.log1p(-h)[:, None]
            logits[:, END] = torch.log(h)
            logits = logits.masked_fill(~rules.mask(), float('-inf'))
            nxt = sample_tokens(logits.softmax(-1), generator)
            done_before = rules.done.clone()
            rules.update(nxt)
            for s, t, d in zip(seqs, nxt.view(-1).tolist(), done_before.tolist()):
                if not d:
                    s.append(t)
            if rules.done.all():
                break
        return seqs


baseline = FrequencyBaseline(routes['train'])
samples = {}
for name, sampler in (('gpt', sample_gpt), ('frequency baseline', baseline.sample)):
    t0 = time.time()
    samples[name] = sampler(prompts, torch.Generator().manual_seed(seed))
    log(f"sampled {len(prompts):,} routes from the {name} in {time.time() - t0:.1f}s")

# -----------------------------------------------------------------------------
# the grade model (optional): test metrics, and grades of the samples
grader = None
grade_ckpt = os.path.join(grade_dir, 'best.pt')
if os.path.isfile(grade_ckpt):
    import grade as G
    grader = G.load_grader(grade_ckpt, meta, device)
    log(f"grade model: {grade_ckpt}")
else:
    log(f"no grade model at {grade_ckpt}: grade consistency and embedding distances are skipped "
        f"(train one with python train_grade.py config/{dataset}.py)")


@torch.no_grad()
def grade_routes(rs):
    """Predicted difficulty and pooled embedding of decoded routes (<board> <angle> holds in)."""
    preds, embs = [], []
    for i in range(0, len(rs), 512):
        chunk = rs[i:i + 512]
        inputs = [G.encoder_input(r['tokens']) for r in chunk]
        T = max(len(t) for t in inputs)
        x = torch.tensor([t + [0] * (T - len(t)) for t in inputs], device=device)
        a = torch.tensor([math.nan if r['angle'] is None else float(r['angle']) for r in chunk], device=device)
        e = grader.embed(x, a)
        preds += grader.median(grader.log_probs(e).exp()).tolist()
        embs += list(e.float().cpu().numpy())
    return preds, embs


# -----------------------------------------------------------------------------
# generator metrics, per sampler and board
train_sets = defaultdict(list)
for r in routes['train']:
    train_sets[r['board']].append(frozenset(r['holds']))
real = defaultdict(list)
for r in routes['test']:
    real[r['board']].append(r)
if grader is not None:
    for b in boards:
        if real[b]:
            _, emb = grade_routes(real[b])
            for r, e in zip(real[b], emb):
                r['embedding'] = e

gen_metrics, decoded_by_sampler = {}, {}
for name, seqs in samples.items():
    decoded, invalid = [], 0
    for s, p in zip(seqs, prompts):
        try:
            r = grammar.decode(s)
            grammar.validate(r['board'], r['holds'])
        except Exception:  # noqa: BLE001  (counted: validity is what is being measured)
            invalid += 1
            continue
        r.update(tokens=s, asked=p)
        decoded.append(r)
    decoded_by_sampler[name] = decoded
    if grader is not None and decoded:
        pred, emb = grade_routes(decoded)
        for r, d, e in zip(decoded, pred, emb):
            r['predicted'], r['embedding'] = d, e
    per_board = {}
    for b in boards:
        mine = [r for r in decoded if r['board'] == b]
        if not mine:
            continue
        sets = [frozenset(r['holds']) for r in mine]
        real_sets = [frozenset(r['holds']) for r in real[b]]
        xy = grammar.xy[b]
        m = dict(samples=len(mine), distinct=M.distinct_rate(sets), copies=M.copy_rate(sets, train_sets[b]),
                 nearest_jaccard=float(np.mean(M.nearest_jaccard(sets, train_sets[b]))),
                 js_hold_usage=M.js_divergence(M.hold_usage(sets), M.hold_usage(real_sets)),
                 js_role_counts=M.js_divergence(M.role_counts(sets), M.role_counts(real_sets)),
                 js_hold_counts=M.js_divergence(M.hold_counts(sets), M.hold_counts(real_sets)),
                 shape=M.shape_stats(sets, xy), real_shape=M.shape_stats(real_sets, xy) if real_sets else None)
        graded = [r for r in mine if r['grade'] is not None and 'predicted' in r]
        if graded:
            err = np.array([r['predicted'] - r['grade'] for r in graded])
            dv = np.array([G.v_number(r['predicted']) - G.v_number(r['grade']) for r in graded])
            m.update(grade_mae=float(np.abs(err).mean()), grade_exact_v=float((dv == 0).mean()),
                     grade_within1_v=float((np.abs(dv) <= 1).mean()))
            with_emb = [r for r in real[b] if 'embedding' in r]
            if len(with_emb) > 2:
                m['frechet_embedding'] = M.frechet_distance(np.stack([r['embedding'] for r in graded]),
                                                            np.stack([r['embedding'] for r in with_emb]))
        per_board[b] = m
    gen_metrics[name] = dict(valid=(len(seqs) - invalid) / len(seqs), boards=per_board)
    log(f"{name}: {100 * gen_metrics[name]['valid']:.1f}% valid; " + '; '.join(
        f"{b}: distinct {100 * m['distinct']:.1f}%, copies {100 * m['copies']:.1f}%, "
        f"nearest Jaccard {m['nearest_jaccard']:.3f}" for b, m in per_board.items()))
report['generation'] = gen_metrics

# -----------------------------------------------------------------------------
# grade model metrics on the test split, beside the ridge baseline fitted on the same train split
grade_plots = {}
if grader is not None:
    token_xy, token_role = G.encoder_tables(meta)
    data = {s: G.load_split(meta, folder, s) for s in SPLITS}
    data = {s: G.select(d, ~np.isnan(d['difficulty'])) for s, d in data.items()}
    weights = G.ascent_weights(data['train']['ascents'], 10)  # train_grade.py's default cap
    coef, _, _ = G.ridge_baseline(data['train'], data['val'], token_role, weights)
    test = data['test']
    predictions = dict(model=G.predict(grader, test['inputs'], test['angle']),
                       ridge=G.ridge_predict(coef, G.ridge_features(test['inputs'], test['angle'], token_role)))
    report['grade'] = {}
    for b in sorted(set(test['board'])):
        rows = test['board'] == b
        many = rows & (test['ascents'] >= 5)  # NaN (unknown ascents) compares False
        entry = {name: dict(all=G.grade_metrics(p[rows], test['difficulty'][rows]),
                            **({'min5': G.grade_metrics(p[many], test['difficulty'][many])} if many.any() else {}))
                 for name, p in predictions.items()}
        true, pred = test['difficulty'][rows], predictions['model'][rows]
        font_true = G.font_grade(true)
        entry['calibration'] = {int(f): float(pred[font_true == f].mean()) for f in sorted(set(font_true))}
        vt, vp = G.v_number(true), G.v_number(pred)
        entry['v_confusion'] = {int(v): {int(w): int(((vt == v) & (vp == w)).sum()) for w in sorted(set(vp))}
                                for v in sorted(set(vt))}
        report['grade'][b] = entry
        grade_plots[b] = (true, pred)
    log('grade model on test: ' + '; '.join(
        f"{b}: MAE {v['model']['all']['mae']:.2f} (ridge {v['ridge']['all']['mae']:.2f})"
        for b, v in report['grade'].items()))

# -----------------------------------------------------------------------------
# the report
os.makedirs(report_dir, exist_ok=True)
json_path = os.path.join(report_dir, 'report.json')
with open(json_path + '.tmp', 'w') as f:
    json.dump(report, f, indent=1, default=float)
os.replace(json_path + '.tmp', json_path)


def pct(x):
    return '' if x is None else f'{100 * x:.1f}%'


def num(x, digits=3):
    return '' if x is None else f'{x:.{digits}f}'


def table(header, rows):
    h = ''.join(f'<th>{escape(str(c))}</th>' for c in header)
    body = ''.join('<tr>' + ''.join(f'<td>{escape(str(c))}</td>' for c in row) + '</tr>' for row in rows)
    return f'<table><tr>{h}</tr>{body}</table>'


html = [f'<h1>boardgpt report: {escape(dataset)}</h1>',
        f"<p>Generator val loss: {report['generator']['val_loss_per_token']:.4f} per token, "
        f"{report['generator']['val_loss_per_route']:.2f} per route (iteration {report['generator']['iteration']}). "
        f"{num_samples:,} prompts drawn like the real test routes.</p>"]
rows = []
for name, g in gen_metrics.items():
    for b, m in g['boards'].items():
        rows.append([name, b, pct(g['valid']), pct(m['distinct']), pct(m['copies']), num(m['nearest_jaccard']),
                     num(m.get('grade_mae'), 2), pct(m.get('grade_exact_v')), pct(m.get('grade_within1_v')),
                     num(m['js_hold_usage']), num(m['js_role_counts']), num(m['js_hold_counts']),
                     num(m.get('frechet_embedding'), 2)])
html.append('<h2>Generated routes</h2>' + table(
    ['sampler', 'board', 'valid', 'distinct', 'copies', 'nearest Jaccard', 'grade MAE', 'exact V', 'within 1 V',
     'JS holds', 'JS roles', 'JS hold count', 'Fréchet'], rows))
shape_rows, shape_keys = [], ('top', 'height_span', 'width_span')
for b in boards:
    for name, g in gen_metrics.items():
        if b in g['boards']:
            m = g['boards'][b]
            shape_rows.append([name, b] + [num(m['shape'][k], 1) for k in shape_keys])
    if real[b]:
        real_shape = M.shape_stats([frozenset(r['holds']) for r in real[b]], grammar.xy[b])
        shape_rows.append(['real test routes', b] + [num(real_shape[k], 1) for k in shape_keys])
html.append('<h3>Shape (board units)</h3>' + table(['routes', 'board', 'top hold', 'height span', 'width span'], shape_rows))


def scatter_svg(true, pred, size=320):
    """Predicted against true difficulty, with the diagonal a perfect model would sit on."""
    lo, hi = MIN_DIFFICULTY - 1, MAX_DIFFICULTY + 1
    px = lambda v: 30 + (v - lo) / (hi - lo) * (size - 40)  # noqa: E731
    py = lambda v: size - 30 - (v - lo) / (hi - lo) * (size - 40)  # noqa: E731
    dots = ''.join(f'<circle cx="{px(t):.1f}" cy="{py(p):.1f}" r="1.6" fill="#1f77b4" fill-opacity="0.35"/>'
                   for t, p in zip(true, pred))
    ticks = ''.join(f'<text x="{px(d):.1f}" y="{size - 14}" font-size="9" text-anchor="middle">{FONT[d]}</text>'
                    f'<text x="26" y="{py(d) + 3:.1f}" font-size="9" text-anchor="end">{FONT[d]}</text>'
                    for d in range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1, 3))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
            f'<line x1="{px(lo)}" y1="{py(lo)}" x2="{px(hi)}" y2="{py(hi)}" stroke="#aaa"/>{dots}{ticks}'
            f'<text x="{size / 2}" y="{size - 2}" font-size="10" text-anchor="middle">true</text>'
            f'<text x="8" y="12" font-size="10">predicted</text></svg>')


if 'grade' in report:
    html.append('<h2>Grade model (test split)</h2>')
    keys = [('n', 'routes', '{:,}'), ('mae', 'MAE', '{:.2f}'), ('rmse', 'RMSE', '{:.2f}'), ('r2', 'R²', '{:.3f}'),
            ('v_exact', 'exact V', '{:.1%}'), ('v_within1', 'within 1 V', '{:.1%}'), ('v_within2', 'within 2 V', '{:.1%}'),
            ('font_exact', 'exact Font', '{:.1%}'), ('font_within1', 'within 1 Font', '{:.1%}')]
    for b, entry in report['grade'].items():
        rows = []
        for part in ('all', 'min5'):
            for name in ('model', 'ridge'):
                if part in entry[name]:
                    m = entry[name][part]
                    label = f'{name} ({"all rows" if part == "all" else "≥5 ascents"})'
                    rows.append([label] + [fmt.format(m[k]) for k, _, fmt in keys])
        html.append(f'<h3>{escape(b)}</h3>' + table(['predictor'] + [name for _, name, _ in keys], rows))
        cal = [[f'{FONT[f]}/{V_GRADE[f]}', f'{m:.2f}', FONT[int(G.font_grade(m))]]
               for f, m in entry['calibration'].items()]
        vs = sorted({w for row in entry['v_confusion'].values() for w in row})
        conf = [[f'V{v}'] + [row.get(w, 0) for w in vs] for v, row in entry['v_confusion'].items()]
        html.append('<div style="display:flex;gap:2em;align-items:flex-start">'
                    f'<div><h4>predicted vs true</h4>{scatter_svg(*grade_plots[b])}</div>'
                    f'<div><h4>calibration: mean prediction per true grade</h4>'
                    f"{table(['true grade', 'mean predicted', 'as Font'], cal)}</div>"
                    f"<div><h4>V grades: true (rows) vs predicted (columns)</h4>{table([''] + [f'V{w}' for w in vs], conf)}</div>"
                    '</div>')

# a sheet of generated routes per requested grade
board_specs = {b['name']: b for b in meta['boards']}
by_grade = defaultdict(list)
for r in decoded_by_sampler['gpt']:  # valid routes only (all of them, by construction)
    if len(by_grade[(r['board'], r['grade'])]) < sheet_per_grade:
        by_grade[(r['board'], r['grade'])].append(r)
html.append('<h2>Generated routes by requested grade</h2>')
sheets = defaultdict(list)  # per board, the first route of every requested grade: one standalone SVG
for (b, g) in sorted(by_grade, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
    cells = []
    for i, r in enumerate(by_grade[(b, g)]):
        sub = f"{'?' if r['angle'] is None else r['angle']}°, {len(r['holds'])} holds"
        cells.append(board_svg(board_specs[b], r['holds'], title=grade_name(g), subtitle=sub, size=160))
        if i == 0:
            sheets[b].append(dict(holds=r['holds'], title=grade_name(g), subtitle=sub))
    html.append(f'<div class="row"><h3>{escape(b)} {escape(grade_name(g))}</h3>' + ''.join(cells) + '</div>')
for b, sheet in sheets.items():
    write_sheet(os.path.join(report_dir, f'sheet_{b}.svg'), board_specs[b], sheet, columns=6)

style = ('body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0} '
         'td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#f4f4f4} '
         '.row svg{margin:4px} h3{margin:0.8em 0 0.2em}')
html_path = os.path.join(report_dir, 'report.html')
with open(html_path + '.tmp', 'w') as f:
    f.write(f'<!doctype html><html><head><meta charset="utf-8"><title>boardgpt report</title>'
            f'<style>{style}</style></head><body>' + '\n'.join(html) + '</body></html>')
os.replace(html_path + '.tmp', html_path)


def headline():
    """The report's key figures as a markdown table (printed, and saved as headline.md)."""
    lines = ['| sampler | board | valid | distinct | copies | nearest Jaccard | grade MAE | within 1 V '
             '| JS holds | JS hold count | Fréchet |', '|' + '---|' * 11]
    for name, g in gen_metrics.items():
        for b, m in g['boards'].items():
            cells = [name, b, pct(g['valid']), pct(m['distinct']), pct(m['copies']), num(m['nearest_jaccard']),
                     num(m.get('grade_mae'), 2), pct(m.get('grade_within1_v')), num(m['js_hold_usage']),
                     num(m['js_hold_counts']), num(m.get('frechet_embedding'), 2)]
            lines.append('| ' + ' | '.join(cells) + ' |')
    if 'grade' in report:
        lines += ['', '| grade predictor (test) | board | routes | MAE | within 1 V | exact Font | within 1 Font |',
                  '|' + '---|' * 7]
        for b, entry in report['grade'].items():
            for part, rows in (('all', 'all rows'), ('min5', '≥5 ascents')):
                for name in ('model', 'ridge'):
                    if part in entry[name]:
                        m = entry[name][part]
                        lines.append(f"| {name}, {rows} | {b} | {m['n']:,} | {m['mae']:.2f} | {pct(m['v_within1'])} "
                                     f"| {pct(m['font_exact'])} | {pct(m['font_within1'])} |")
    return '\n'.join(lines) + '\n'


md_path, summary = os.path.join(report_dir, 'headline.md'), headline()
with open(md_path, 'w') as f:
    f.write(summary)
print(summary, end='')
log(f"wrote {json_path}, {html_path}, {md_path} and " + ', '.join(f'sheet_{b}.svg' for b in sheets))
