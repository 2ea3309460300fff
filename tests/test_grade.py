"""The grade predictor: train_grade.py on the tiny board, grade.py's command line, its metrics and
ridge baseline on cases worked out by hand."""
import json
import math
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import error_line, run
from fixtures import ROLE_IDS
from engine import GENERATOR_FLOOR, GENERATOR_WEIGHT, GeneratorGrades, grade_routes, join_generator, route_nll
from metrics import (fit_ridge, grade_metrics, grade_metrics_by_board, grade_report, metrics_table, ridge_features,
                     ridge_predict)
from model import (MaskedHolds, build_grader, encoder_tables, grader_args, hide_holds, load_generator, load_grader,
                   read_history)
from routes import GRADES, SPLITS, Grammar, encoder_input, font_grade, load_meta, load_split, pad, v_number


def predict(model, inputs, angles):
    return grade_routes(model, inputs, angles)['difficulty']


def route_inputs(grammar, board, route, angle):
    """What grade.py feeds the model for a route typed by a user."""
    holds, a = grammar.route(board, route, angle)
    return encoder_input(grammar.encode(board, a, None, holds)), a

TRAIN_ARGS = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--dropout=0.0', '--batch_size=32', '--max_iters=400',
              '--lr_decay_iters=400', '--warmup_iters=5', '--learning_rate=3e-3', '--min_lr=3e-4', '--eval_interval=50',
              '--log_interval=25', '--device=cpu', '--dtype=float32', '--compile=False']


def learnable_difficulty(meta, tokens, angle):
    """A grade the tiny routes can be graded by (the fixture's own grades are random): harder with
    more hand holds and a steeper wall."""
    hands = sum(1 for t in tokens if meta['hold_role'][t] == 'middle')
    return 12.0 + 2.0 * hands + (angle - 20) / 5.0


@pytest.fixture(scope='module')
def trained(tiny, tmp_path_factory):
    """The tiny dataset with learnable grades (every 9th train row left ungraded), and a grade model
    trained on it by train_grade.py."""
    root = tmp_path_factory.mktemp('grade')
    src, dst = os.path.join(tiny['root'], 'tiny'), root / 'tiny'
    shutil.copytree(src, dst)
    meta = load_meta(dst)
    ungraded = 0
    for split in SPLITS:
        data = np.fromfile(dst / f'{split}.bin', dtype=np.uint16)
        arrays, offsets = meta['splits'][split], meta['splits'][split]['offset']
        for i in range(len(offsets) - 1):
            seq = [int(t) for t in data[offsets[i] + 3:offsets[i + 1] - 1]]
            unknown = split == 'train' and i % 9 == 0
            ungraded += unknown
            arrays['difficulty'][i] = None if unknown else learnable_difficulty(meta, seq, arrays['angle'][i])
    with open(dst / 'meta.pkl', 'wb') as f:
        pickle.dump(meta, f)
    out = root / 'out'
    proc = run('train_grade.py', 'config/tiny.py', f'--data_root={root}', f'--out_dir={out}', *TRAIN_ARGS)
    return dict(root=str(root), meta=meta, checkpoint=str(out / 'best.pt'), stdout=proc.stdout, ungraded=ungraded)


def cli(trained, *args, check=False):
    """grade.py with the grade model alone (the generator's posterior has tests of its own below)."""
    return run('grade.py', 'config/tiny.py', f"--data_root={trained['root']}", f"--checkpoint={trained['checkpoint']}",
               '--generator=none', *args, check=check)


@pytest.fixture(scope='module')
def generator(trained):
    """A tiny generator trained on the same data, for the grade posterior it gives."""
    out = os.path.join(trained['root'], 'gen')
    run('train_gen.py', 'config/tiny.py', f"--data_root={trained['root']}", f'--out_dir={out}', '--max_iters=40')
    return os.path.join(out, 'best.pt')


# -----------------------------------------------------------------------------
# training

def test_training_loss_falls_and_beats_the_mean(trained):
    out = trained['stdout']
    assert f"train: skipping {trained['ungraded']:,} of" in out  # ungraded rows are counted, not trained on
    losses = [float(m) for m in re.findall(r'^iter \d+/\d+: loss ([\d.]+)', out, re.M)]
    evals = [dict(re.findall(r'(\w+) ([\d.]+)', line)) for line in re.findall(r'^eval at iteration .*$', out, re.M)]
    assert len(losses) == 16 and len(evals) == 8
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2])  # cross-entropy starts near log(24)
    assert float(evals[-1]['val_ce']) < 0.6 * float(evals[0]['val_ce'])
    # the model beats predicting the training mean on val
    meta = trained['meta']
    train_d = [d for d in meta['splits']['train']['difficulty'] if d is not None]
    val_d = np.array(meta['splits']['val']['difficulty'])
    assert float(evals[-1]['val_mae']) < 0.7 * np.abs(val_d - np.mean(train_d)).mean()
    ckpt = torch.load(trained['checkpoint'], map_location='cpu', weights_only=True)
    assert ckpt['iter_num'] > 0 and ckpt['model_args']['vocab_size'] == len(meta['itos'])
    # the test report: model and ridge baseline, all rows and >= 5 ascents
    report = out[out.index('test split'):]
    for word in ('model (all)', 'ridge (all)', 'model (>=5 asc)', 'ridge (>=5 asc)', 'MAE', 'RMSE', 'R2',
                 'V within 1', 'Font exact', 'expected calibration error of the grade distribution on test: tiny 0.'):
        assert word in report
    # calibrated on val: the temperature of the least val NLL, kept in best.pt, used by the loaded model
    t = float(re.search(r'calibrated \S+: temperature ([\d.]+), val ECE ([\d.]+) -> ([\d.]+)', out).group(1))
    assert ckpt['temperature'] == pytest.approx(t, abs=5e-4) and load_grader(trained['checkpoint'], meta).temperature == ckpt['temperature']


def test_an_ensemble_trains_calibrates_and_is_scored_as_one(trained, tmp_path):
    """--ensemble=2: two seeds in member0/1, each calibrated on val, then scored on test together
    beside the first member alone (the run used to crash there, handing load_grader a torch.device)."""
    out = tmp_path / 'ens'
    args = [a for a in TRAIN_ARGS if not a.startswith(('--max_iters', '--lr_decay_iters'))]
    proc = run('train_grade.py', 'config/tiny.py', f"--data_root={trained['root']}", f'--out_dir={out}', *args,
               '--max_iters=20', '--lr_decay_iters=20', '--ensemble=2')
    assert 'ensemble member 2 of 2: seed 1338' in proc.stdout and 'trained 2 model(s)' in proc.stdout
    report = proc.stdout[proc.stdout.index('test split, best.pt of 2 model(s)'):]
    assert 'model (all)' in report and 'member0 (all)' in report and 'ridge (all)' in report
    ckpts = [torch.load(out / f'member{k}' / 'best.pt', map_location='cpu', weights_only=True) for k in range(2)]
    assert all(c['temperature'] > 0 for c in ckpts) and proc.stdout.count('calibrated ') == 2
    assert not torch.equal(ckpts[0]['model']['wte.weight'], ckpts[1]['model']['wte.weight'])  # two seeds, two models
    ensemble = load_grader(str(out), trained['meta'])
    assert len(ensemble.members) == 2
    # --member=1 alone (as a second process would) trains the same model as member 1 above
    alone = tmp_path / 'alone'
    proc = run('train_grade.py', 'config/tiny.py', f"--data_root={trained['root']}", f'--out_dir={alone}', *args,
               '--max_iters=20', '--lr_decay_iters=20', '--ensemble=2', '--member=1')
    assert 'ensemble member 2 of 2: seed 1338' in proc.stdout and 'test split, best.pt of 1 model(s)' in proc.stdout
    assert sorted(os.listdir(alone)) == ['member1']
    mine = torch.load(alone / 'member1' / 'best.pt', map_location='cpu', weights_only=True)
    for name, value in ckpts[1]['model'].items():
        assert torch.allclose(mine['model'][name], value, atol=1e-6), name
    # a single model is not written beside an ensemble's members (the two would be averaged), nor a member out of range
    for bad, message in [(['--ensemble=1'], f"{out} already holds member0, member1 of another grade model"),
                         (['--ensemble=2', '--member=2'], "member must be one of the ensemble's 0..1")]:
        proc = run('train_grade.py', 'config/tiny.py', f"--data_root={trained['root']}", f'--out_dir={out}', *args, *bad,
                   check=False)
        assert proc.returncode != 0 and message in error_line(proc)


def test_hidden_holds_are_only_holds_and_the_model_cannot_see_which(trained):
    """hide_holds hides holds only, at least one a route; a hidden hold's token and position do not
    reach the model (another hold of the same role in its place gives the same logits), its role does."""
    meta = trained['meta']
    args = grader_args(meta, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
    model = MaskedHolds(build_grader(args)).eval()
    rows = load_split(os.path.join(trained['root'], 'tiny'), meta, 'val')
    x = torch.from_numpy(pad([encoder_input(t) for t in rows['tokens'][:64]]))
    angle = torch.tensor(rows['angle'][:64], dtype=torch.float32)
    role = model.encoder.token_role
    hide = hide_holds(x, role, 0.15, torch.Generator().manual_seed(0))
    assert (role[x[hide]] > 0).all() and hide.any(1).all() and hide.sum() < 0.5 * (role[x] > 0).sum()
    r, c = [int(v) for v in torch.nonzero(hide)[0]]
    same_role = [t for t in range(len(role)) if role[t] == role[x[r, c]] and t not in x[r].tolist()]
    swapped = x.clone()
    swapped[r, c] = same_role[0]
    other_role = x.clone()
    other_role[r, c] = next(t for t in range(len(role)) if role[t] > 0 and role[t] != role[x[r, c]])
    with torch.no_grad():
        logits, loss = model(x, angle, hide)
        assert torch.allclose(model(swapped, angle, hide)[0], logits, atol=1e-5)
        assert not torch.allclose(model(other_role, angle, hide)[0], logits, atol=1e-4)
        assert not torch.allclose(model(x, angle, hide_holds(x, role, 0.15, torch.Generator().manual_seed(1)))[1], loss)
    assert logits.shape == (int(hide.sum()), int((role > 0).sum())) and loss.item() == pytest.approx(math.log(logits.shape[1]), abs=0.5)


def test_pretraining_learns_the_holds_and_grade_training_starts_from_it(trained, tmp_path):
    """--pretrain_epochs: each model first names hidden holds (below chance, in its own folder),
    then trains on grades from that encoder; a resumed run does not pretrain again."""
    args = [a for a in TRAIN_ARGS if not a.startswith(('--max_iters', '--lr_decay_iters'))] + ['--max_iters=20', '--lr_decay_iters=20']
    common = ['train_grade.py', 'config/tiny.py', f"--data_root={trained['root']}", *args]
    out, scratch = tmp_path / 'pre', tmp_path / 'scratch'
    proc = run(*common, f'--out_dir={out}', '--pretrain_epochs=30.5', '--pretrain_lr=3e-3')
    routes = len(load_split(os.path.join(trained['root'], 'tiny'), trained['meta'], 'train')['angle'])
    assert f'pretraining on the {routes:,} training routes' in proc.stdout  # graded or not
    history = read_history(out / 'pretrain')
    holds = sum(1 for k in trained['meta']['kind'] if k == 'hold')
    assert len(history) >= 2 and history[-1]['val_loss'] < math.log(holds) - 0.3 and history[-1]['val_top1'] > 2 / holds
    assert sorted(os.listdir(out / 'pretrain')) == ['best.pt', 'history.json', 'last.pt']
    run(*common, f'--out_dir={scratch}')
    pre, tuned, fresh = (torch.load(p, map_location='cpu', weights_only=True)['model']
                         for p in (out / 'pretrain' / 'best.pt', out / 'best.pt', scratch / 'best.pt'))
    assert 'hidden' in pre and 'head.0.weight' not in pre  # the pretraining's own vector and no grade head
    for name in ('wte.weight', 'blocks.0.attn.qkv.weight'):  # 20 steps from the pretrained encoder, not a new one
        assert (tuned[name] - pre['encoder.' + name]).norm() < 0.5 * (fresh[name] - pre['encoder.' + name]).norm()
    proc = run(*common, f'--out_dir={out}', '--pretrain_epochs=30.5', '--init_from=resume', '--max_iters=30', '--lr_decay_iters=30')
    assert 'pretraining on the' not in proc.stdout and 'resuming from' in proc.stdout


def test_prediction_depends_on_the_holds_not_the_padding(trained):
    meta = trained['meta']
    grammar = Grammar(meta)
    model = load_grader(trained['checkpoint'], meta)
    route = 'p1002r12p1014r13p1021r13p1027r13p1044r14'
    moved = route.replace('p1021r13', 'p1022r13')  # one hand hold one column over
    tokens, angle = route_inputs(grammar, 'tiny', route, 40)
    tokens_moved, _ = route_inputs(grammar, 'tiny', moved, 40)
    assert len(tokens) == 2 + 5 and tokens != tokens_moved
    long_route, _ = route_inputs(grammar, 'tiny', route + 'p1030r13p1033r13p1008r15', 40)
    alone, moved_pred, in_batch = (predict(model, [tokens], [angle])[0], predict(model, [tokens_moved], [angle])[0],
                                   predict(model, [tokens, long_route], [angle, 40])[0])
    assert abs(moved_pred - alone) > 1e-3
    assert abs(in_batch - alone) < 1e-4  # padding to a longer route changes nothing
    # the learnable grade rises by 4 from 25 to 45 degrees: so should the predictions, on average
    val = load_split(os.path.join(trained['root'], 'tiny'), meta, 'val')
    at = {}
    for a in (25, 45):
        x = [[t[0], grammar.angle_token[a]] + t[2:] for t in map(encoder_input, val['tokens'])]
        at[a] = predict(model, x, [a] * len(x))
    assert (at[45] - at[25]).mean() > 2
    assert not model.training


def test_cli_grades_one_route(trained):
    route = 'p1002r12p1014r13p1021r13p1027r13p1044r14'
    proc = cli(trained, f'--frames={route}', '--angle=40', check=True)
    m = re.fullmatch(r'tiny at 40 degrees: difficulty ([\d.]+), Font (\d[abc]\+?), (V\d+) '
                     r'\(likely: (\d[abc]\+?) (\d+)%, \d[abc]\+? (\d+)%, \d[abc]\+? (\d+)%\)\n', proc.stdout.splitlines(True)[0])
    assert m, proc.stdout
    assert re.fullmatch(r'nearest known climb: \S+ by setter-\w{3} \(distance [01]\.\d\d.*\)', proc.stdout.splitlines()[1]), proc.stdout
    assert 100 >= int(m.group(5)) >= int(m.group(6)) >= int(m.group(7))  # most likely first
    model, grammar = load_grader(trained['checkpoint'], trained['meta']), Grammar(trained['meta'])
    expected = predict(model, [route_inputs(grammar, 'tiny', route, 40)[0]], [40])[0]
    assert abs(float(m.group(1)) - expected) < 0.006
    assert m.group(3) == f'V{v_number(expected)}'


def test_stiff_or_soft(trained, tmp_path):
    """A known climb's logged grade against the model's 80% range, as a ranked listing of the
    dataset's climbs at one angle and on its own (grade.py --frames of that climb): two climbs
    regraded after training, one 8 grades up (soft for its grade) and one 8 down (stiff), lead."""
    root = tmp_path / 'data'
    shutil.copytree(trained['root'], root, ignore=shutil.ignore_patterns('out'))
    meta = load_meta(root / 'tiny')
    grammar = Grammar(meta)
    rows = [(s, i) for s in SPLITS for i, a in enumerate(meta['splits'][s]['angle'])
            if a == 40 and meta['splits'][s]['difficulty'][i] is not None]
    diffs = {(s, i): meta['splits'][s]['difficulty'][i] for s, i in rows}
    (soft_s, soft_i), (stiff_s, stiff_i) = min(rows, key=diffs.get), max(rows, key=diffs.get)
    meta['splits'][soft_s]['difficulty'][soft_i] = diffs[(soft_s, soft_i)] + 8  # logged far harder than it is
    meta['splits'][stiff_s]['difficulty'][stiff_i] = diffs[(stiff_s, stiff_i)] - 8
    with open(root / 'tiny' / 'meta.pkl', 'wb') as f:
        pickle.dump(meta, f)
    regraded = dict(trained, root=str(root))
    proc = cli(regraded, '--stiff_soft', '--angle=40', '--top=4', '--min_ascents=5', check=True)
    head, *lines = proc.stdout.splitlines()
    many = sum(meta['splits'][s]['ascents'][i] >= 5 for s, i in rows)
    assert head.startswith(f"tiny at 40 degrees: {len(rows):,} graded climbs, {many:,} with 5+ ascents")
    for kind, (s, i) in (('soft', (soft_s, soft_i)), ('stiff', (stiff_s, stiff_i))):
        first = lines[lines.index(f'most {kind} for their grade:') + 1]
        climb_id = meta['splits'][s]['climb_id'][i]
        assert re.fullmatch(rf'  1\. {climb_id} by setter-\w{{3}}: logged \S+ \(\d+ ascents\), model \S+ '
                            rf'\(80%: \S+ to \S+\) \[{s}\]', first), proc.stdout
        # the climb on its own: grade.py names it, and says the same of its grade
        data = np.fromfile(root / 'tiny' / f'{s}.bin', dtype=np.uint16)
        offset = meta['splits'][s]['offset']
        route = grammar.decode(data[offset[i]:offset[i + 1]].tolist())
        frames = ''.join(f'p{p}r{ROLE_IDS[r]}' for p, r in sorted(route['holds']))
        out = cli(regraded, f'--frames={frames}', '--angle=40', check=True).stdout
        assert f'{climb_id} by ' in out and 'distance 0.00' in out and f'its logged grade is {kind} for these holds' in out
    assert 'no graded climb' in error_line(cli(regraded, '--stiff_soft', '--angle=40', '--min_ascents=1000'))


@pytest.mark.parametrize('args, message', [
    (['--frames=p1002r12p10', '--angle=40'], 'malformed frames string'),
    (['--frames=p1002r12p9999r13p1044r14', '--angle=40'], 'unknown placement p9999'),
    (['--frames=p1002r12p1014r13p1044r14', '--angle=41'], 'angle 41 is impossible'),
    (['--frames=p1002r12p1014r13p1021r13'], 'need an angle'),
    (['--frames=p1002r12p1014r13p1021r13', '--angle=40'], 'route has 0 finish holds'),
])
def test_cli_bad_route_is_one_line_error(trained, args, message):
    proc = cli(trained, *args)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and proc.stdout == ''
    assert err[-1].startswith('error:') and message in err[-1], proc.stderr
    assert 'Traceback' not in proc.stderr and not any(line.startswith('error') for line in err[:-1])


def test_cli_batch_reports_bad_lines_and_grades_the_rest(trained, tmp_path):
    good = dict(board='tiny', frames='p1002r12p1014r13p1021r13p1027r13p1044r14', angle=40)
    lines = [json.dumps(good),
             json.dumps(dict(good, frames='p1002r12p10')),
             '',
             'not json',
             json.dumps(dict(good, frames='p1002r12p9999r13p1044r14')),
             json.dumps(dict(good, angle=72)),
             json.dumps(dict(good, frames='p1002r12p1014r13p1021r13')),
             json.dumps(dict(good, board='kilter')),
             json.dumps(dict(frames=good['frames'], angle=25))]  # board left out: the dataset's only one
    path = tmp_path / 'routes.jsonl'
    path.write_text('\n'.join(lines) + '\n')
    proc = cli(trained, f'--input={path}')
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == 'error: 6 of 8 routes could not be graded (lines 2, 4, 5, 6, 7, 8)'
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o['line'] for o in out] == [1, 2, 4, 5, 6, 7, 8, 9]
    errors = {o['line']: o['error'] for o in out if 'error' in o}
    for line, message in {2: 'malformed frames', 4: 'not a JSON object', 5: 'unknown placement p9999',
                          6: 'angle 72 is impossible', 7: '0 finish holds', 8: "unknown board 'kilter'"}.items():
        assert message in errors[line] and '\n' not in errors[line]
    first, last = out[0], out[-1]
    model, grammar = load_grader(trained['checkpoint'], trained['meta']), Grammar(trained['meta'])
    for o, angle in ((first, 40), (last, 25)):
        assert o['board'] == 'tiny' and o['angle'] == angle
        expected = predict(model, [route_inputs(grammar, 'tiny', good['frames'], angle)[0]], [angle])[0]
        assert abs(o['difficulty'] - expected) < 0.006 and o['v'] == f'V{v_number(expected)}'


# -----------------------------------------------------------------------------
# the generator as a grade model

def bayes_posterior(meta, gpt, tokens):
    """Bayes' rule worked out route by route: the GPT's log-likelihood of the route under every
    grade token, plus the log of the add-one counts of the train split's grades at its board and angle."""
    grammar = Grammar(meta)
    train = meta['splits']['train']
    out = []
    for t in tokens:
        board, angle = grammar.token_board[t[0]], grammar.token_angle[t[1]]
        counts = np.ones(len(GRADES))
        for b, a, d in zip(train['board'], train['angle'], train['difficulty']):
            if d is not None and b == board and a == angle:
                counts[font_grade(d) - GRADES[0][0]] += 1
        nll = route_nll(gpt, [t[:2] + [grammar.grade_token[g]] + t[3:] for g, _, _ in GRADES])
        score = -nll + np.log(counts / counts.sum())
        out.append(score - np.logaddexp.reduce(score))
    return np.array(out)


def test_the_generators_grades_are_bayes_rule(trained, generator):
    meta = trained['meta']
    gpt = load_generator(generator, meta)
    val = load_split(os.path.join(trained['root'], 'tiny'), meta, 'val')
    tokens = val['tokens'][:12]
    expected = bayes_posterior(meta, gpt, tokens)
    grades = GeneratorGrades(gpt, meta, chunk=50, fast=False)  # several chunks, so their seams are covered
    idx = torch.from_numpy(pad([encoder_input(t) for t in tokens]))
    everything = torch.ones(len(tokens), len(GRADES), dtype=torch.bool)
    np.testing.assert_allclose(grades.log_probs(idx, everything).numpy(), expected, atol=1e-4)
    # in bfloat16 where that is fast (the default): the same distribution to a few hundredths
    fast = GeneratorGrades(gpt, meta, chunk=50).log_probs(idx, everything).exp().numpy()
    assert np.abs(fast - np.exp(expected)).max() < 0.03
    # asked about some grades only: the same posterior, renormalized over them, and nothing elsewhere
    asked = torch.rand(len(tokens), len(GRADES), generator=torch.Generator().manual_seed(0)) < 0.4
    asked[:, 5] = True
    some = grades.log_probs(idx, asked).numpy()
    assert np.isneginf(some[~asked.numpy()]).all()
    restricted = np.where(asked.numpy(), expected, -np.inf)
    np.testing.assert_allclose(some[asked.numpy()], (restricted - np.logaddexp.reduce(restricted, 1, keepdims=True))[asked.numpy()],
                               atol=1e-4)


def test_a_grade_model_joined_by_the_generator(trained, generator):
    """Over the grades the grade model gives at least GENERATOR_FLOOR, the geometric mean of its
    distribution and the generator's posterior (scaled to the grade model's mass there); elsewhere
    the grade model's own; the members are shared, not copied."""
    meta = trained['meta']
    gpt, guide = load_generator(generator, meta), load_grader(trained['checkpoint'], meta)
    joined = join_generator(guide, gpt, meta)
    assert joined.members[0] is guide and joined.paths == [trained['checkpoint'], generator]
    joined.generator.fast = False  # the formula in float32, against the posterior worked out in float32
    val = load_split(os.path.join(trained['root'], 'tiny'), meta, 'val')
    tokens, angles = val['tokens'][:12], val['angle'][:12]
    alone = grade_routes(guide, [encoder_input(t) for t in tokens], angles)['probs']
    together = grade_routes(joined, [encoder_input(t) for t in tokens], angles)
    asked = (alone >= GENERATOR_FLOOR) | (alone == alone.max(1, keepdims=True))
    assert (~asked).any() and (asked.sum(1) > 1).any()  # both branches are exercised
    posterior = np.where(asked, bayes_posterior(meta, gpt, tokens), -np.inf)
    posterior -= np.logaddexp.reduce(posterior, 1, keepdims=True)  # over the asked grades
    mass = np.log(np.where(asked, alone, 0).sum(1, keepdims=True))
    score = np.where(asked, (1 - GENERATOR_WEIGHT) * np.log(alone) + GENERATOR_WEIGHT * (posterior + mass), np.log(alone))
    expected = np.exp(score - np.logaddexp.reduce(score, 1, keepdims=True))
    np.testing.assert_allclose(together['probs'], expected, atol=1e-4)
    assert not np.allclose(together['probs'], alone, atol=1e-3)  # the generator did move them
    median = np.array([joined.median(torch.tensor(p)[None]).item() for p in expected])
    np.testing.assert_allclose(together['difficulty'], median, atol=1e-4)


def test_cli_grades_with_the_generator(trained, generator):
    route = 'p1002r12p1014r13p1021r13p1027r13p1044r14'
    base = ['grade.py', 'config/tiny.py', f"--data_root={trained['root']}", f"--checkpoint={trained['checkpoint']}",
            f'--frames={route}', '--angle=40']
    proc = run(*base, f'--generator={generator}')
    printed = float(re.search(r'difficulty ([\d.]+)', proc.stdout).group(1))
    meta, grammar = trained['meta'], Grammar(trained['meta'])
    joined = join_generator(load_grader(trained['checkpoint'], meta), load_generator(generator, meta), meta)
    assert abs(printed - predict(joined, [route_inputs(grammar, 'tiny', route, 40)[0]], [40])[0]) < 0.006
    assert 'no checkpoint' in error_line(run(*base, f"--generator={trained['root']}/missing.pt", check=False))


def test_cli_without_a_model_is_one_line_error(trained, tmp_path):
    proc = run('grade.py', 'config/tiny.py', f"--data_root={trained['root']}", f'--checkpoint={tmp_path}/none.pt',
               '--frames=p1002r12p1014r13p1044r14', '--angle=40', check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith('error: no grade model at')


# -----------------------------------------------------------------------------
# data

def test_load_split_and_the_encoder_input_drops_only_the_grade_and_end_tokens(tiny):
    meta = load_meta(os.path.join(tiny['root'], 'tiny'))
    rows = load_split(os.path.join(tiny['root'], 'tiny'), meta, 'train')
    data = np.fromfile(os.path.join(tiny['root'], 'tiny', 'train.bin'), dtype=np.uint16)
    offsets = meta['splits']['train']['offset']
    assert len(rows['tokens']) == len(offsets) - 1
    for i in range(len(offsets) - 1):
        seq = [int(t) for t in data[offsets[i]:offsets[i + 1]]]
        assert rows['tokens'][i] == seq
        assert encoder_input(seq) == seq[:2] + seq[3:-1]
    assert rows['angle'][0] == meta['splits']['train']['angle'][0]
    assert np.array_equal(rows['difficulty'], np.array(meta['splits']['train']['difficulty'], dtype=float))


def test_encoder_tables(tiny):
    meta = load_meta(os.path.join(tiny['root'], 'tiny'))
    xy, role = encoder_tables(meta)
    assert len(xy) == len(role) == len(meta['itos'])
    t = meta['itos'].index('tiny:p1047r14')  # the top right hold (x 48, y 64 on edges 0..56 x 0..72), finish
    assert role[t] == 3 and xy[t] == pytest.approx([48 / 56, 64 / 72])
    assert all(r == 0 and p == [0.0, 0.0] for r, p, k in zip(role, xy, meta['kind']) if k != 'hold')
    assert all(0 <= v <= 1 for p in xy for v in p) and set(role) == {0, 1, 2, 3, 4}


# -----------------------------------------------------------------------------
# metrics, on cases worked out by hand

def test_metrics_of_perfect_predictions():
    target = np.array([10.0, 13.4, 20.0, 22.6, 33.0])
    m = grade_metrics(target, target)
    assert m['n'] == 5 and m['mae'] == 0 and m['rmse'] == 0 and m['r2'] == 1
    assert all(m[k] == 1.0 for k in ('v_exact', 'v_within1', 'v_within2', 'font_exact', 'font_within1'))


def test_metrics_of_a_constant_offset():
    target = np.array([10.0, 13.0, 20.0, 22.0])
    m = grade_metrics(target + 1.0, target)
    assert m['mae'] == pytest.approx(1.0) and m['rmse'] == pytest.approx(1.0)
    assert m['r2'] == pytest.approx(1 - 4 / 96.75)  # sum of squares about the mean 16.25: 96.75
    assert m['font_exact'] == 0 and m['font_within1'] == 1
    # V0 -> V0, V1 -> V1, V5 -> V5, V6 -> V7
    assert m['v_exact'] == 0.75 and m['v_within1'] == 1 and m['v_within2'] == 1


def test_metrics_round_and_clamp_grades():
    assert font_grade([20.4, 20.6, 5.0, 40.0]).tolist() == [20, 21, 10, 33]
    assert v_number([10.0, 15.0, 22.0, 23.0, 33.0, 50.0]).tolist() == [0, 2, 6, 7, 16, 16]
    m = grade_metrics([16.0, 30.0], [18.0, 24.0])  # V3 for V4 (1 off), V13 for V8 (5 off)
    assert m['v_exact'] == 0 and m['v_within1'] == 0.5 and m['v_within2'] == 0.5
    assert m['font_exact'] == 0 and m['font_within1'] == 0 and m['mae'] == 4 and m['rmse'] == pytest.approx(math.sqrt(20))


def test_metrics_table_and_report():
    text = metrics_table([('model', grade_metrics([20.0], [21.0])), ('empty', grade_metrics([], []))])
    mae = next(line for line in text.splitlines() if line.startswith('MAE')).split()
    assert mae == ['MAE', '1.000', '-']
    split = dict(board=np.array(['a', 'a', 'b'], dtype=object), difficulty=np.array([20.0, np.nan, 22.0]),
                 ascents=np.array([7.0, 9.0, np.nan]))
    report = grade_report(grade_metrics_by_board(split, dict(model=np.array([21.0, 0.0, 22.0]))))
    a, b = report.split('\n\n')
    assert a.startswith('a\n') and '>=5 asc' in a and 'routes' in a and a.splitlines()[2].split()[-2:] == ['1', '1']
    assert b.startswith('b\n') and '>=5 asc' not in b  # no ascents known on board b


def test_ridge_recovers_a_linear_rule():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(200, 3)), np.ones((200, 1))], 1)
    y = X @ np.array([1.5, -2.0, 0.5, 19.0])
    coef = fit_ridge(X, y, l2=1e-6)
    assert coef == pytest.approx([1.5, -2.0, 0.5, 19.0], abs=1e-3)
    assert ridge_predict(coef, X) == pytest.approx(y, abs=1e-3)
    # weights: a row of weight 0 does not count
    y_bad = y.copy()
    y_bad[0] += 100
    w = np.ones(200)
    w[0] = 0
    assert fit_ridge(X, y_bad, w, l2=1e-6) == pytest.approx(coef, abs=1e-3)


def test_ridge_features():
    role = [0, 0, 0, 1, 2, 3, 4]  # pad, end, board, then four hold tokens
    inputs = torch.tensor([[2, 0, 3, 5, 0], [2, 0, 4, 5, 6]])
    X = ridge_features(inputs, [45.0, float('nan')], role)
    assert X.shape == (2, 7 + 5)
    assert X[0, :7].tolist() == [0, 0, 1, 1, 0, 1, 0] and X[1, :7].tolist() == [0, 0, 1, 0, 1, 1, 1]
    assert X[0, 7:].tolist() == pytest.approx([1, 1, 0, 0.2, 1]) and X[1, 7:].tolist() == pytest.approx([0, 0, 1, 0.3, 1])
