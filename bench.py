"""
Speed, measured on this machine in one run, printed as one table.

    python bench.py                       # the default Kilter config; needs data/kilter (prepare.py)
    python bench.py --compile_modes=[False] --train_iters=100

- matmul peak: the best fp32 (and on a GPU, bf16) matrix-multiply rate torch reaches here;
- training: train_gen.py itself, run as a user runs it (eager and compiled), its tokens/s read
  from its own progress lines after warm-up, and model FLOPs utilisation (MFU) against that
  peak, counting only real tokens (padding is wasted work, not utilisation);
- sampling: routes/s of the batched, key/value-cached, grammar-constrained sampler against a
  naive loop that samples one route at a time and recomputes the whole sequence every step; and
  of grade-guided sampling (best_of candidates a route, graded by the dataset's grade model,
  known climbs dropped), as sample.py runs it;
- prepare.py's wall time on the Kilter database.

    python bench.py --scale=27 --snapshot=../shared/data/boardsesh/board-snapshots

instead times every step from prepare to serve, with its peak memory, on a Kilter snapshot as it
is and grown that many times (each copy of a climb moves one hand hold, its grades jittered),
as big as the real layout-1 snapshot is to ours.

    python bench.py --page=True --db=../shared/data/kilter.db

instead times the README's database-to-page block at the default settings (prepare, the generator
and the grade models trained at once, the page up), with the matmul peak of the machine, the
generator's val loss and the test figures of the grade model (the grade models joined by the
generator's grade posterior) and of the grade models alone.
"""

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from configurator import configure
from engine import (ACCEPT, AT_ONCE, BEST_OF, candidate_rounds, grade_routes, guide_rule, join_generator, sample_routes,
                    sample_tokens)
from metrics import REPORT_ROWS, ClimbIndex, grade_metrics_by_board, grade_report
from model import (bf16_is_fast, build_generator, check_device, checkpoint_dir, grade_checkpoints, load_checkpoint,
                   load_generator, load_grader, read_history)
from routes import (END, SPLITS, DecodingRules, Grammar, InputError, encoder_input, load_meta, load_split, sample_split,
                    select)
from trainer import format_seconds

# -----------------------------------------------------------------------------
# config
config = 'config/kilter.py'
db = ''  # the database prepare.py reads (default: the config's path)
data_root = 'data'
device = 'cuda' if torch.cuda.is_available() else 'cpu'
train_iters = 300  # per mode; tokens/s is read from the progress lines after the first 100
compile_modes = [False, True]
batched_routes = 1000
sample_batch = 500
naive_routes = 40
checkpoint = ''  # a generator checkpoint to sample from; default out/kilter/gen/best.pt, else random weights
grade_dir = ''  # the grade model guided sampling uses; default out/kilter/grade (skipped if absent)
best_of = BEST_OF  # guided sampling as sample.py does it by default
at_once = AT_ONCE
accept = ACCEPT
guided_routes = 400
seed = 1337
scale = 0  # > 0: time and peak memory of every step, on --snapshot as it is and grown this many times
snapshot = ''  # a boardsesh snapshot folder with a Kilter layout-1 file (docs/data.md)
page = False  # True: the README's database-to-page block at the default settings, each step timed (minutes)
page_dir = ''  # --page: keep its data and models in this new folder (data/, out/gen, out/grade); default: a temporary one, removed
# -----------------------------------------------------------------------------
configure(globals())
check_device(device)
if not os.path.isfile(config):
    raise InputError(f"config file {config} not found (e.g. --config=config/kilter.py)")
dataset = os.path.basename(config)[:-3]  # the folder prepare.py writes it into
torch.manual_seed(seed)
rows = []  # (what, figure, unit, note)


def grow_snapshot(src, dest, times):
    """dest: a copy of src's Kilter layout-1 snapshot (and catalogue) with times - 1 perturbed copies
    of every climb and its stats rows: a hand hold moved to another placement climbs use, the
    grades moved by up to one difficulty step."""
    rng = random.Random(seed)
    with open(os.path.join(src, 'v1-gzip', 'manifest.json')) as f:
        manifest = json.load(f)
    entry = next(e for e in manifest['entries'] if e['boardType'] == 'kilter' and e['layoutId'] == 1)
    rel = entry['key'][len('board-snapshots/'):]
    plain = os.path.join(dest, 'climbs.sqlite')
    os.makedirs(dest, exist_ok=True)
    with gzip.open(os.path.join(src, rel)) as f_in, open(plain, 'wb') as f_out:
        shutil.copyfileobj(f_in, f_out, 1 << 20)
    con = sqlite3.connect(plain)
    climbs = con.execute("SELECT * FROM board_climbs").fetchall()
    c_cols = [r[1] for r in con.execute("PRAGMA table_info(board_climbs)")]
    stats = {}
    s_cols = [r[1] for r in con.execute("PRAGMA table_info(board_climb_stats)")]
    for row in con.execute("SELECT * FROM board_climb_stats"):
        stats.setdefault(row[s_cols.index('climb_uuid')], []).append(row)
    ui, fi, si, di = c_cols.index('uuid'), c_cols.index('frames'), s_cols.index('climb_uuid'), s_cols.index('display_difficulty')
    hands = sorted({int(p) for c in climbs for p, r in re.findall(r'p(\d+)r(13)', c[fi] or '')})
    for k in range(1, times):
        new_climbs, new_stats = [], []
        for c in climbs:
            holds = re.findall(r'p(\d+)r(\d+)', c[fi] or '')
            moved = [i for i, (_, r) in enumerate(holds) if r == '13']
            if moved:
                i, used = rng.choice(moved), {int(p) for p, _ in holds}
                holds[i] = (str(rng.choice([h for h in rng.sample(hands, 8) if h not in used] or [holds[i][0]])), '13')
            uuid = hashlib.md5(f'{c[ui]}:{k}'.encode()).hexdigest().upper()  # Aurora-like: 32 hex digits
            new_climbs.append(c[:ui] + (uuid,) + c[ui + 1:fi] + (''.join(f'p{p}r{r}' for p, r in holds),) + c[fi + 1:])
            for st in stats.get(c[ui], []):
                d = st[di] if st[di] is None else st[di] + rng.uniform(-1, 1)
                new_stats.append(st[:si] + (uuid,) + st[si + 1:di] + (d,) + st[di + 1:])
        con.executemany(f"INSERT INTO board_climbs VALUES ({','.join('?' * len(c_cols))})", new_climbs)
        con.executemany(f"INSERT INTO board_climb_stats VALUES ({','.join('?' * len(s_cols))})", new_stats)
    con.commit()
    n = con.execute("SELECT count(*) FROM board_climbs").fetchone()[0], con.execute("SELECT count(*) FROM board_climb_stats").fetchone()[0]
    con.close()
    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
    plain_size = os.path.getsize(plain)
    with open(plain, 'rb') as f_in, gzip.open(os.path.join(dest, rel), 'wb', compresslevel=1) as f_out:
        shutil.copyfileobj(f_in, f_out, 1 << 20)
    os.remove(plain)
    size = os.path.getsize(os.path.join(dest, rel))
    tables = dict(entry.get('tables', {}), board_climbs=dict(entry.get('tables', {}).get('board_climbs', {}), rowCount=n[0]),
                  board_climb_stats=dict(entry.get('tables', {}).get('board_climb_stats', {}), rowCount=n[1]))
    with open(os.path.join(dest, 'v1-gzip', 'manifest.json'), 'w') as f:  # as boardsesh would describe the grown file
        json.dump(dict(manifest, entries=[dict(entry, bytes=size, uncompressedBytes=plain_size, tables=tables)]), f)
    shutil.copytree(os.path.join(src, 'v1-catalog'), os.path.join(dest, 'v1-catalog'))
    return n, size


def step(what, cmd, until=None):
    """Run a script as a user would: (wall seconds, its peak resident memory in MB). until: the
    first words a server prints when it is up: stop it there, after it has served its page once."""
    with tempfile.TemporaryFile('w+') as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE if until else log, stderr=log, text=True)
        up = None
        if until:
            line = proc.stdout.readline()
            up = re.search(r'http://\S+/', line) if line.startswith(until) else None
            if up:
                with urllib.request.urlopen(up.group(0), timeout=300) as res:
                    res.read()
            proc.terminate()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory, not the largest child's so far
        wall = time.perf_counter() - t0
        if (status and not until) or (until and not up):
            log.seek(0)
            print(log.read()[-3000:])
            raise SystemExit(f"error: {what} failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


if scale:
    if not isinstance(scale, int) or scale < 2:
        raise InputError(f"--scale is how many times to grow the snapshot: a whole number of at least 2, got {scale!r}")
    if not os.path.isdir(os.path.join(snapshot, 'v1-gzip')):
        raise InputError(f"--scale needs --snapshot=<a boardsesh snapshot folder>, got {snapshot!r}")
if scale and not page:
    import urllib.request  # only this section needs it
    tmp = tempfile.mkdtemp(prefix='boardgpt-scale-')
    results = {}
    for times in (1, scale):
        src = snapshot
        if times > 1:
            t0 = time.perf_counter()
            (n_climbs, n_stats), size = grow_snapshot(snapshot, os.path.join(tmp, f'x{times}'), times)
            src = os.path.join(tmp, f'x{times}')
            print(f"grew the snapshot {times}x: {n_climbs:,} climbs, {n_stats:,} stats rows, {size / 1e6:.0f} MB gzip "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        data, out = os.path.join(tmp, f'data{times}'), os.path.join(tmp, f'out{times}')
        common = [f'--data_root={data}']
        steps = [
            ('prepare', ['prepare.py', config, f'--db={src}', *common], None),
            ('train_gen (200 iters)', ['train_gen.py', config, *common, f'--out_dir={out}/gen', '--max_iters=200',
                                       '--eval_interval=100', '--warmup_iters=20', '--lr_decay_iters=200'], None),
            ('train_grade (200 iters)', ['train_grade.py', config, *common, f'--out_dir={out}/grade', '--max_iters=200',
                                         '--eval_interval=100', '--warmup_iters=20'], None),
            ('sample (10 routes, guided)', ['sample.py', config, *common, f'--out_dir={out}/gen', f'--grade_dir={out}/grade',
                                            '--num_samples=10'], None),
            ('grade (one route, every angle)', ['grade.py', config, *common, f'--checkpoint={out}/grade',
                                                '--frames=p1145r12p1160r13p1201r14', '--angle=all'], None),
            ('evaluate', ['evaluate.py', config, *common, f'--gen_dir={out}/gen', f'--grade_dir={out}/grade',
                          f'--report_dir={out}/report', '--num_samples=200'], None),
            ('serve (up, one page)', ['serve.py', config, *common, f'--gen_dir={out}/gen', f'--grade_dir={out}/grade',
                                      '--port=0', '--log_requests=False'], 'serving'),
        ]
        for what, cmd, until in steps:
            results[(what, times)] = step(what, cmd, until)
            print(f"{times:>3}x {what:32} {results[(what, times)][0]:8.1f}s {results[(what, times)][1]:8,.0f} MB", flush=True)
    print(f"\n{'step':34} {'1x s':>8} {'1x MB':>8} {f'{scale}x s':>8} {f'{scale}x MB':>8}")
    for what, _, _ in steps:
        (t1, m1), (tn, mn) = results[(what, 1)], results[(what, scale)]
        print(f"{what:34} {t1:8.1f} {m1:8,.0f} {tn:8.1f} {mn:8,.0f}")
    shutil.rmtree(tmp)
    raise SystemExit


def timed(fn, repeat):
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def matmul_peak(dtype):
    best = 0.0
    for n in ((1024, 2048, 4096) if device == 'cpu' else (4096, 8192)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        timed(lambda: a @ b, 2)  # warm-up
        repeat = max(2, int(2e10 / (2 * n ** 3)))  # about 20 GFLOP per size
        best = max(best, 2 * n ** 3 / timed(lambda: a @ b, repeat))
    return best


def together(commands, threads):
    """Run scripts at once, each on threads cores (OMP_NUM_THREADS): [(wall seconds, peak MB, output)]
    in the order given, each wall time up to that script's own end."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0, runs = time.perf_counter(), {}
    for k, cmd in enumerate(commands):
        log = tempfile.TemporaryFile('w+')
        runs[subprocess.Popen([sys.executable, *cmd], stdout=log, stderr=subprocess.STDOUT, env=env, text=True).pid] = k, log
    done = {}
    while len(done) < len(commands):
        pid, status, usage = os.wait4(-1, 0)
        if pid not in runs:
            continue
        k, log = runs[pid]
        log.seek(0)
        done[k] = (time.perf_counter() - t0, usage.ru_maxrss / 1024, log.read())
        if status:
            print(done[k][2][-3000:])
            raise SystemExit(f"error: {' '.join(commands[k])} failed")
    return [done[k] for k in range(len(commands))]


if page:
    # What a newcomer runs, timed: prepare; the generator and the two grade models trained at once, a
    # process each (models this small use the cores better apart than together: docs/speed.md); the
    # page up. Into a temporary folder, so the user's data/ and out/ are left alone.
    import resource  # only this section (and step) needs these
    import urllib.request
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # what a forked step's peak starts from
    if page_dir and os.path.exists(page_dir):
        raise InputError(f"{page_dir} already exists: --page_dir must be a new folder")
    tmp = page_dir or tempfile.mkdtemp(prefix='boardgpt-page-')
    os.makedirs(tmp, exist_ok=True)
    common = [f'--data_root={tmp}/data', f'--device={device}']
    gen_dir, grade_dir = f'{tmp}/out/gen', f'{tmp}/out/grade'
    if scale:  # at a real snapshot's size: the snapshot grown scale times is the database
        (n_climbs, _), size = grow_snapshot(snapshot, os.path.join(tmp, 'snapshot'), scale)
        db = os.path.join(tmp, 'snapshot')
        print(f"grew the snapshot {scale}x: {n_climbs:,} climbs, {size / 1e6:.0f} MB gzip", flush=True)
    times = {'prepare': step('prepare', ['prepare.py', config, f'--data_root={tmp}/data', *([f'--db={db}'] if db else [])])}
    print(f"prepare: {times['prepare'][0]:.1f}s", flush=True)
    threads = max(1, (os.cpu_count() or 1) // 3)
    runs = together([['train_gen.py', config, *common, f'--out_dir={gen_dir}'],
                     *[['train_grade.py', config, *common, f'--out_dir={grade_dir}', '--ensemble=2', f'--member={k}']
                       for k in (1, 0)]],
                    threads)
    for what, (wall, mb, log) in zip(('train_gen', 'train_grade --member=1', 'train_grade --member=0'), runs):
        times[what] = (wall, mb)
        for line in log.splitlines():  # what each run's time budget chose, and how it ended
            if line.startswith(('budget ', 'stopping at', 'best.pt on all')):
                print(f"{what}: {line}")
    times['the trainings, at once'] = (max(r[0] for r in runs), sum(r[1] for r in runs))
    times['serve (up, one page)'] = step('serve', ['serve.py', config, f'--data_root={tmp}/data', f'--gen_dir={gen_dir}',
                                         f'--grade_dir={grade_dir}', '--port=0', '--log_requests=False'], 'serving')
    # the models' figures: the generator's best val loss, the grade ensemble on the test split
    peak = {'float32': matmul_peak(torch.float32)}  # after the steps: its buffers would count in their memory
    if bf16_is_fast(device):
        peak['bfloat16'] = matmul_peak(torch.bfloat16)
    best = min(read_history(gen_dir), key=lambda h: h['val_loss'])
    meta = load_meta(os.path.join(tmp, 'data', dataset))
    guide = load_grader(grade_dir, meta)
    grader = join_generator(guide, load_generator(os.path.join(gen_dir, 'best.pt'), meta), meta)  # what the page grades with
    scored = {}  # split -> (its graded rows, as evaluate.py counts them; the predictions; how many of how many)
    for split in ('val', 'test'):
        rows = load_split(os.path.join(tmp, 'data', dataset), meta, split, lists=False)
        rows = sample_split(rows, REPORT_ROWS)
        rows = select(rows, ~np.isnan(rows['difficulty']))
        inputs = [encoder_input(t) for t in rows['tokens']]
        scored[split] = (rows, {name: grade_routes(m, inputs, rows['angle'])['difficulty']
                                for name, m in (('model', grader), ('grade models', guide))})
    print(f"\n{config}: {os.cpu_count()} cores, {threads} thread(s) a training; matmul peak "
          + ', '.join(f'{k} {v / 1e9:,.0f} GFLOP/s' for k, v in peak.items()))
    print(f"{'step':26} {'wall':>8} {'peak MB':>8}   (a step's peak counts bench's own {floor:,.0f} MB, forked from it)")
    for what, (wall, mb) in times.items():
        print(f"{what:26} {format_seconds(wall):>8} {mb:8,.0f}")
    total = times['prepare'][0] + times['the trainings, at once'][0] + times['serve (up, one page)'][0]
    print(f"{'database to page':26} {format_seconds(total):>8}")
    print(f"\ngenerator: val loss {best.get('val_loss_per_route', best['val_loss']):.2f} per route (iteration {best['iter']})")
    for split, (rows, predicted) in scored.items():
        print(f"grade model ({len(guide.paths)} grade models joined by the generator; and those alone), {split} split"
              f" ({len(rows['board']):,} graded routes of at most {REPORT_ROWS:,}, a fixed sample):\n"
              + grade_report(grade_metrics_by_board(rows, predicted)))
    if page_dir:
        print(f"\nkept in {page_dir}: serve it with python serve.py {config} --data_root={page_dir}/data "
              f"--gen_dir={gen_dir} --grade_dir={grade_dir}")
    else:
        shutil.rmtree(tmp)
    raise SystemExit


peak = {'float32': matmul_peak(torch.float32)}
rows.append(('matmul peak fp32', peak['float32'] / 1e9, 'GFLOP/s', f'{torch.get_num_threads()} threads on {device}'))
if bf16_is_fast(device):  # what dtype='auto' trains in here
    peak['bfloat16'] = matmul_peak(torch.bfloat16)
    rows.append(('matmul peak bf16', peak['bfloat16'] / 1e9, 'GFLOP/s',
                 torch.cuda.get_device_name() if device.startswith('cuda') else 'AMX'))
print("matmul peak: " + ', '.join(f'{k} {v / 1e9:,.0f} GFLOP/s' for k, v in peak.items()), flush=True)

# -----------------------------------------------------------------------------
# prepare.py on the database, and training through train_gen.py itself
tmp = tempfile.mkdtemp(prefix='boardgpt-bench-')
t0 = time.perf_counter()
proc = subprocess.run([sys.executable, 'prepare.py', config, f'--data_root={tmp}', *([f'--db={db}'] if db else [])],
                      capture_output=True, text=True)
if proc.returncode:  # its own error line says what is wrong (most often: no database at the config's path)
    raise InputError(f"prepare.py {config} failed: {proc.stderr.strip().splitlines()[-1]}")
rows.append(('prepare.py', time.perf_counter() - t0, 's', f'{config}, wall time incl. start-up'))
meta = load_meta(os.path.join(tmp, dataset))
lengths = np.diff(meta['splits']['train']['offset']) - 1
print(f"prepare.py: {rows[-1][1]:.1f}s", flush=True)

for compiled in compile_modes:
    out_dir = os.path.join(tmp, f'gen-{compiled}')
    cmd = [sys.executable, 'train_gen.py', config, f'--data_root={tmp}', f'--out_dir={out_dir}',
           f'--max_iters={train_iters}', f'--eval_interval={10 * train_iters}', '--log_interval=100',
           f'--compile={compiled}', f'--device={device}']
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr)
        raise SystemExit(f"error: train_gen.py failed (compile={compiled})")
    wall = time.perf_counter() - t0
    rates = [float(m.replace(',', '')) for m in re.findall(r'([\d,]+) tok/s', proc.stdout)][1:]  # after warm-up
    tok_s = float(np.mean(rates))
    args = load_checkpoint(os.path.join(out_dir, 'last.pt'))['model_args']
    model = build_generator(args)
    flops = model.flops_per_token(float(lengths.mean()))
    dtype = 'bfloat16' if 'bfloat16' in proc.stdout.split('parameters')[1].split('\n')[0] else 'float32'
    mfu = tok_s * flops / peak.get(dtype, peak['float32'])
    mode = 'compiled' if compiled else 'eager'
    rows.append((f'training tokens/s ({mode})', tok_s, 'tok/s', f'{model.num_params() / 1e6:.2f}M params, {dtype}'))
    rows.append((f'training MFU ({mode})', 100 * mfu, '%', f'{flops / 1e6:.1f} MFLOP/token vs {dtype} peak'))
    print(f"train_gen.py {mode}: {tok_s:,.0f} tok/s, MFU {100 * mfu:.1f}% ({wall:.0f}s wall)", flush=True)

# -----------------------------------------------------------------------------
# sampling: batched + cached + constrained, against one route at a time with full recompute
grammar = Grammar(meta)
ckpt_path = checkpoint or os.path.join(checkpoint_dir(dataset, 'gen'), 'best.pt')
if os.path.isfile(ckpt_path):
    gpt, weights = load_generator(ckpt_path, meta, device), ckpt_path
else:
    gpt, weights = build_generator(args).to(device).eval(), 'random weights'
board = meta['boards'][0]
angle = 40 if board['angle_known'] else None
prompt = grammar.prefix(board['name'], angle, 20)


def batched(n):
    routes = 0
    for i in range(0, n, sample_batch):
        b = min(sample_batch, n - i)
        generator = torch.Generator(device=device).manual_seed(seed + i)
        routes += len(sample_routes(gpt, grammar, [(board['name'], angle, 20)] * b, generator=generator)[0])
    return routes


@torch.no_grad()
def naive(n):
    gen = torch.Generator(device=device).manual_seed(seed)
    for _ in range(n):
        seq = torch.tensor([prompt], device=device)
        rules = DecodingRules(grammar, [(board['name'], [])], device=device)
        while seq[0, -1].item() != END and seq.size(1) < gpt.config.block_size:
            logits, _ = gpt(seq)  # the whole sequence, every step
            logits = logits[:, -1].masked_fill(~rules.mask(), float('-inf'))
            nxt = sample_tokens(logits.softmax(-1), gen)  # the same draw: only batching and the cache differ
            rules.update(nxt)
            seq = torch.cat([seq, nxt], 1)
    return n


batched(min(sample_batch, 50))  # warm-up
t = timed(lambda: batched(batched_routes), 1)
fast = batched_routes / t
t = timed(lambda: naive(naive_routes), 1)
slow = naive_routes / t
rows.append(('sampling, batched + KV cache', fast, 'routes/s', f'{batched_routes} routes, batches of {sample_batch}, {weights}'))
rows.append(('sampling, naive loop', slow, 'routes/s', 'one route at a time, full recompute per step'))
rows.append(('sampling speed-up', fast / slow, 'x', 'batched over naive, measured in this run'))

grade_dir = grade_dir or checkpoint_dir(dataset, 'grade')
if grade_checkpoints(grade_dir):
    grader = load_grader(grade_dir, meta, device)
    known = ClimbIndex(grammar, [load_split(os.path.join(tmp, dataset), meta, s, lists=False) for s in SPLITS])

    drawn = []

    def guided(n):
        per_call = sample_batch // candidate_rounds(best_of, at_once)[0]  # prompts: the first round fills a batch
        for i in range(0, n, per_call):
            b = min(per_call, n - i)
            generator = torch.Generator(device=device).manual_seed(seed + i)
            routes, stats = sample_routes(gpt, grammar, [(board['name'], angle, 20)] * b, generator=generator,
                                          grader=grader, best_of=best_of, known=known, at_once=at_once, accept=accept)
            drawn.append((stats['drawn'], np.mean([len(r['tokens']) for r in routes])))
    t = timed(lambda: guided(guided_routes), 1)
    rows.append(('sampling, guided', guided_routes / t, 'routes/s', f'{guided_routes} routes, '
                 f'{guide_rule(best_of, at_once, accept)}, {len(grader.paths)} grade model(s), known climbs dropped'))
    rows.append(('guided share of plain', 100 * guided_routes / t / fast, '%', 'guided routes/s over batched plain, this run'))
    def forward_flops(model, T):  # a route of T tokens: 2 FLOPs per matmul weight a token, plus attention
        weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        return T * (2 * weights + 4 * model.config.n_layer * model.config.n_embd * T)

    # how close to the machine's limit that is: every candidate's tokens through the generator, and
    # through each grade model (its input has no grade token and no <end>)
    candidates, length = sum(d for d, _ in drawn), float(np.mean([n for _, n in drawn]))
    flops = forward_flops(gpt, length) + sum(forward_flops(m, length - 2) for m in getattr(grader, 'members', [grader]))
    rows.append(('guided sampling, work per route', candidates / guided_routes * flops / 1e6, 'MFLOP',
                 f'{candidates / guided_routes:.1f} candidates a route, generated and graded'))
    rows.append(('guided sampling, share of peak', 100 * candidates / t * flops / peak['float32'], '%',
                 'those FLOPs at the rate measured, against the fp32 matmul peak'))

    # grading: the grade models alone (the guide) against the grade model the page and grade.py use
    val = load_split(os.path.join(tmp, dataset), meta, 'val')
    inputs, angles = [encoder_input(t) for t in val['tokens'][:256]], val['angle'][:256]
    joined = join_generator(grader, gpt, meta)
    for name, m in (('grading, grade models', grader), ('grading, joined by the generator', joined)):
        t = timed(lambda: grade_routes(m, inputs, angles), 1)
        rows.append((name, len(inputs) / t, 'routes/s', f'{len(inputs)} val routes, {len(m.paths)} model(s)'))

# -----------------------------------------------------------------------------
# serve.py under load: 1, 8 and 32 clients at once over HTTP, half generate (one guided route) and
# half grade requests; once as it serves by default (requests batched) and once one at a time under
# one lock (--batch=False, as it served before), same models and load
if os.path.basename(ckpt_path) == 'best.pt' and os.path.isfile(ckpt_path) and grade_checkpoints(grade_dir):
    import json  # only this section needs them
    import threading
    import urllib.request
    per_client = 25
    served = {}  # (batched, clients) -> (requests/s, p50, p99)
    for batched in (False, True):
        server = subprocess.Popen([sys.executable, 'serve.py', config, f'--data_root={tmp}', f'--device={device}',
                                   f'--gen_dir={os.path.dirname(ckpt_path)}', f'--grade_dir={grade_dir}', '--port=0',
                                   '--log_requests=False', f'--batch={batched}'],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            address = re.search(r'http://\S+/', server.stdout.readline())
            if not address:
                raise SystemExit("error: serve.py did not start")

            def request(path, body):
                req = urllib.request.Request(address.group(0) + path, data=json.dumps(body).encode(),
                                             headers={'Content-Type': 'application/json'})
                with urllib.request.urlopen(req, timeout=300) as res:
                    return json.loads(res.read())

            route = request('api/generate', dict(board=board['name'], angle=angle, grade=20, count=1, seed=seed))
            work = [('api/generate', dict(board=board['name'], angle=angle, grade=20, count=1)),
                    ('api/grade', dict(board=board['name'], route=route['routes'][0]['route'], angle=angle))]
            for clients in (1, 8, 32):  # one climber, a room, a gym
                latency, failed = [], []

                def client(k):
                    for i in range(per_client):
                        t = time.perf_counter()
                        try:
                            request(*work[(k + i) % len(work)])
                            latency.append(time.perf_counter() - t)
                        except Exception as e:  # noqa: BLE001  (counted, and the run goes on)
                            failed.append(e)
                threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
                how = 'batched' if batched else 'one lock'
                note = f'{clients} client(s) x {per_client}, half generate (1 route, guided), half grade'
                note += f', {len(failed)} failed' if failed else ', none failed'
                served[batched, clients] = (len(latency) / wall, *(1000 * float(np.percentile(latency, q)) for q in (50, 99)))
                rows.append((f'serve.py {how}, {clients} clients', served[batched, clients][0], 'req/s', note))
                rows.append((f'  latency p50 / p99', served[batched, clients][1], 'ms',
                             f'p99 {served[batched, clients][2]:,.0f} ms, per request as a client sees it'))
                print(f"serve.py {how}, {clients} clients: {served[batched, clients][0]:.1f} requests/s, "
                      f"p50 {served[batched, clients][1]:.0f} ms, p99 {served[batched, clients][2]:.0f} ms", flush=True)
        finally:
            server.terminate()
            server.wait()
    rows.append(('serve.py batched over one lock', served[True, 8][0] / served[False, 8][0], 'x',
                 'requests/s at 8 clients, this run'))
    rows.append(('serve.py p99 at 8 over p50 at 1', served[True, 8][2] / served[True, 1][1], 'x',
                 'batched: the wait of a room against one climber alone'))

print(f"\n{'what':40} {'figure':>12} {'unit':9} note")
for what, figure, unit, note in rows:
    print(f"{what:40} {figure:>12,.1f} {unit:9} {note}")
