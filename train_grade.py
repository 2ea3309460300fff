"""
Train the grade predictor, a bidirectional transformer encoder from a route's holds and angle to
its continuous difficulty, with the training loop train_gen.py uses (trainer.py).

    python train_grade.py config/kilter.py                     # two seeds, graded together
    python train_grade.py config/kilter.py --member=1 &        # the same two, at once
    python train_grade.py config/kilter.py --member=0
    python train_grade.py config/kilter.py --seed=2 --out_dir=out/kilter/judge   # seeds 2, 3: a judge
    python train_grade.py config/kilter.py --init_from=resume --max_iters=8000
    python train_grade.py config/kilter.py --pretrain_epochs=8.5 --learning_rate=3e-4   # pretrained first

Reads data/<dataset>/ (written by prepare.py) and writes K = ensemble models with seeds
seed..seed+K-1 in out/<dataset>/grade/member<k>/{last,best}.pt (one model: out/<dataset>/grade/),
which grade.py, sample.py and evaluate.py use together (the mean of their grade distributions).
Each route enters as <board> <angle> holds... (the prepared sequence without its grade and <end>
tokens), with the angle also as a number; rows without a known difficulty are skipped. The loss
is the cross-entropy of the model's grade distribution against two-hot targets, weighted by
min(ascents, ascent_weight_cap) where the data counts ascents, since a grade logged once is much
noisier than one agreed by many. best.pt is the checkpoint with the lowest weighted MAE on a fixed
sample of eval_rows val routes. The schedule is epochs passes over the training routes, or fewer
to end within max_minutes (shared by the models this process trains), stopped early after
patience evaluations without a better val MAE. With --pretrain_epochs each model first learns, in <its folder>/pretrain/,
to name the holds hidden from the training routes, graded or not (model.MaskedHolds), and trains
on grades from that encoder.
At the end each model trained here is calibrated on all of val, and they (the ensemble and its first
member alone, or --member's model alone) and a ridge baseline on hold-and-angle features are
scored on the test split, per board.
"""

import os
import time

import numpy as np
import torch

from configurator import configure
from engine import grade_routes
from metrics import (ascent_weights, calibration, fit_temperature, grade_classes, grade_metrics_by_board, grade_report,
                     ridge_baseline, ridge_design, ridge_predict)
from model import (build_grader, build_masked_holds, checkpoint_dir, grader_args, hide_holds, load_checkpoint,
                   load_grader, member_dir, member_indices)
from routes import SPLITS, InputError, block_size, encoder_input, load_meta, load_split, pad, sample_rows, select
from trainer import EVAL_ROWS, budget_share, format_seconds, sized_schedule, save_atomic, similar_length_batch, train

# -----------------------------------------------------------------------------
# config
dataset = 'kilter'
data_root = 'data'
out_dir = ''  # default out/<dataset>/grade
ensemble = 2  # models (seeds) to train; more than 1: out_dir/member<k>/, used together (2 of 12.75 epochs
#              beat 3 of 8.5 on Kilter val at the same cost: docs/grade.md)
member = -1  # >= 0: train member k of the ensemble alone (seed + k), so that members can train at once,
#              one process each
init_from = 'scratch'  # or 'resume' (from out_dir/last.pt)
eval_interval = 250
log_interval = 100
# data and loss
min_ascents_train = 1  # train on rows with at least this many ascents (where the data counts them)
ascent_weight_cap = 10  # weight a row's loss by min(ascents, cap) where ascents are known; 0: all rows 1
# model
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.1  # without: val MAE 1.75-1.79 at 1,500 iterations against 1.71-1.74 (docs/grade.md)
bias = False
# optimizer: AdamW, warmup then cosine decay
batch_size = 128  # routes per micro-step (128 beat 64 on Kilter val: the labels are noisy)
length_pool = 8  # draw each batch from length_pool * batch_size routes of similar length: almost no
#                  padding to compute; 0: from all routes
gradient_accumulation_steps = 1
max_iters = 0  # 0: sized by the data, epochs passes over the training routes, within max_minutes
max_minutes = 13.0  # this process's wall time at most, shared by the models it trains (0: no limit): the page in 15
epochs = 12.75  # 2,252 iterations on Kilter's 22,600 graded routes (docs/grade.md)
patience = 4  # stop after this many evaluations without a better val MAE (0: run to max_iters)
eval_rows = EVAL_ROWS  # val routes an evaluation scores (and as many train routes): its cost does not grow with the data
learning_rate = 1e-3  # after pretraining 3e-4 (docs/grade.md)
min_lr = 1e-5
warmup_iters = 100
lr_decay_iters = 0  # 0: max_iters
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
# masked-hold pretraining (model.MaskedHolds): each model first learns to name the holds hidden from
# every training route, graded or not, then trains on grades from there. On Kilter val, with
# --learning_rate=3e-4, 8.5 epochs (1,501 iterations, 3-4 minutes a model) bought MAE 1.690 -> 1.654
pretrain_epochs = 0.0  # passes over the training routes; 0: none, the grade model starts from scratch
pretrain_mask = 0.15  # the share of each route's holds hidden (at least one)
pretrain_lr = 1e-3
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'auto'  # bfloat16 on GPUs and CPUs (AMX) that have it fast, else float32; or 'float32', 'bfloat16', 'float16'
compile = False  # torch.compile: worth it on a GPU; on a CPU it costs a minute or two of compiling
seed = 1337
wandb_log = False
wandb_project = 'boardgpt'
wandb_run_name = 'grade'
# -----------------------------------------------------------------------------
configure(globals())
config = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))}
config['out_dir'] = out_dir = out_dir or checkpoint_dir(dataset, 'grade')
if not 1 <= ensemble <= 16:
    raise InputError(f"ensemble must be 1..16 models, got {ensemble}")
if pretrain_epochs < 0 or not 0 < pretrain_mask <= 1 or not pretrain_lr > 0:
    raise InputError(f"pretraining needs pretrain_epochs >= 0, pretrain_mask in (0, 1] and pretrain_lr > 0, "
                     f"got {pretrain_epochs}, {pretrain_mask}, {pretrain_lr}")
if not -1 <= member < ensemble or (member >= 0 and ensemble == 1):
    raise InputError(f"member must be one of the ensemble's 0..{ensemble - 1} (of --ensemble=K, K > 1), or -1, got {member}")
# what grade.py and the page will load from out_dir must be these models only: no model of another
# layout or an earlier, larger ensemble left beside them to be averaged in
others = [k for k in member_indices(out_dir) if ensemble == 1 or k >= ensemble]
extra = [os.path.basename(member_dir(out_dir, k)) for k in others]
extra += ['best.pt'] if ensemble > 1 and os.path.isfile(os.path.join(out_dir, 'best.pt')) else []
if extra:
    raise InputError(f"{out_dir} already holds {', '.join(extra)} of another grade model, which would be "
                     f"used with these: remove {'them' if len(extra) > 1 else 'it'} or choose another --out_dir")

# data: every graded route of a split as one padded row, built once, so a batch is a gather
def padded(rows):
    """The encoder inputs of rows (a split's columns) as padded rows, with what a batch draws by."""
    inputs = [encoder_input(t) for t in rows['tokens']]
    lengths = torch.tensor([len(t) for t in inputs])
    return dict(inputs=inputs, x=torch.from_numpy(pad(inputs)), lengths=lengths, by_length=torch.argsort(lengths, stable=True),
                angle_t=torch.tensor(rows['angle'], dtype=torch.float32))


def graded_rows(rows):
    """rows with their padded inputs, grade targets and loss weights."""
    return dict(rows, **padded(rows), target=torch.tensor(rows['difficulty'], dtype=torch.float32),
                weight=torch.tensor(ascent_weights(rows['ascents'], ascent_weight_cap), dtype=torch.float32))


folder = os.path.join(data_root, dataset)
meta = load_meta(folder)
# all_routes: every route of train and val (val: its sample), graded or not, for the pretraining
splits, graded_only, all_routes = {}, {}, {}  # graded_only: each split's graded rows before padding
for split in SPLITS:
    rows = load_split(folder, meta, split)
    if pretrain_epochs and split != 'test':
        all_routes[split] = padded(rows if split == 'train' else select(rows, sample_rows(rows, eval_rows)))
    graded = ~np.isnan(rows['difficulty'])
    keep = graded if split != 'train' else graded & ~(rows['ascents'] < min_ascents_train)  # NaN: unknown, kept
    if (~graded).any():
        print(f"{split}: skipping {int((~graded).sum()):,} of {len(graded):,} routes without a known difficulty")
    if split == 'train' and (graded & ~keep).any():
        print(f"train: skipping {int((graded & ~keep).sum()):,} graded routes with fewer than {min_ascents_train} ascents")
    graded_only[split] = select(rows, keep)
    splits[split] = graded_rows(graded_only[split])
# the rows an evaluation during training scores, the same each time: the val sample, and a train
# sample as large, at least 256, to see overfitting by
samples = {'val': graded_rows(select(graded_only['val'], sample_rows(graded_only['val'], eval_rows)))}
samples['train'] = graded_rows(select(graded_only['train'],
                                      sample_rows(graded_only['train'], max(len(samples['val']['target']), 256))))
if not len(splits['train']['target']):
    raise InputError(f"no graded training routes in {folder}: train_grade.py needs routes with a known grade")
print(f"{dataset}: " + ', '.join(f"{s} {len(splits[s]['target']):,} graded routes" for s in SPLITS)
      + f"; vocabulary {len(meta['itos']):,}")
config = sized_schedule(config, len(splits['train']['target']))


def draw(rows, generator):
    """A batch of rows (padded()'s) of similar length: its indices and its inputs, less the padding they all share."""
    i = similar_length_batch(rows['by_length'], batch_size, length_pool, generator)
    return i, rows['x'][i, :int(rows['lengths'][i].max())]


def get_batch(split, generator):
    rows = splits[split]
    i, x = draw(rows, generator)
    return x, rows['angle_t'][i], rows['target'][i], rows['weight'][i]


def evaluate(model):
    """On the val sample: val_loss, the ascent-weighted MAE, what best.pt is chosen by (on Kilter the
    cross-entropy the model is trained on turned up while the MAE was still falling), and its
    standard error; val_ce: that cross-entropy; MAE on val, on val routes with >= 5 ascents where
    ascents are known, and on the train sample."""
    val, device = samples['val'], next(model.parameters()).device
    total, weight = 0.0, 0.0
    for i in range(0, len(val['target']), 512):
        batch = (val['x'][i:i + 512], val['angle_t'][i:i + 512], val['target'][i:i + 512], val['weight'][i:i + 512])
        _, loss = model(*(t.to(device) for t in batch))
        total += loss.item() * float(batch[3].sum())
        weight += float(batch[3].sum())
    err = np.abs(grade_routes(model, val['inputs'], val['angle'])['difficulty'] - val['difficulty'])
    w = val['weight'].numpy()
    out = dict(val_loss=float((err * w).sum() / w.sum()), val_ce=total / max(weight, 1e-9))
    out['val_loss_se'] = float(np.sqrt((w ** 2 * (err - out['val_loss']) ** 2).sum()) / w.sum())
    out['val_mae'] = float(err.mean())
    many = val['ascents'] >= 5
    if many.any():
        out['val_mae_5asc'] = float(err[many].mean())
    train_rows = samples['train']
    predicted = grade_routes(model, train_rows['inputs'], train_rows['angle'])['difficulty']
    out['train_mae'] = float(np.abs(predicted - train_rows['difficulty']).mean())
    return out


def pretrain_batch(split, generator):
    rows = all_routes[split]
    i, x = draw(rows, generator)
    return x, rows['angle_t'][i], hide_holds(x, roles, pretrain_mask, generator)


def pretrain_evaluate(model):
    """val_loss: the cross-entropy of naming the hidden holds of every val route (the same holds
    hidden at every evaluation); val_top1: the share named right."""
    val, device = all_routes['val'], next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    total, right, n = 0.0, 0, 0
    for i in range(0, len(val['x']), 512):
        x = val['x'][i:i + 512, :int(val['lengths'][i:i + 512].max())]
        hide = hide_holds(x, roles, pretrain_mask, g)
        x, hide = x.to(device), hide.to(device)
        logits, loss = model(x, val['angle_t'][i:i + 512].to(device), hide)
        total, n = total + loss.item() * len(logits), n + len(logits)
        right += int((logits.argmax(-1) == model.hold_index[x[hide]]).sum())
    return dict(val_loss=total / n, val_top1=right / n)


model_args = grader_args(meta, block_size=block_size(meta), n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                         dropout=dropout, bias=bias)
ks = [member] if member >= 0 else range(ensemble)
folders = [out_dir] if ensemble == 1 else [member_dir(out_dir, k) for k in ks]
roles = torch.tensor(model_args['token_role'])  # token -> its role (0: not a hold), what hide_holds reads
# after the last model: calibration (val graded twice a model) and the test split, in evaluations' worth of
# time (an evaluation grades the val sample twice and the train sample once), and one more for the ridge baseline
reserve = 1 + len(folders) * (2 * len(splits['val']['target']) + 2 * len(splits['test']['target'])) / \
    (3 * len(samples['val']['target']))
t0 = time.time()
for i, (k, folder) in enumerate(zip(ks, folders)):
    if ensemble > 1:
        print(f"\nensemble member {k + 1} of {ensemble}: seed {seed + k}, {folder}")
    build = build_grader
    resuming = init_from == 'resume' and os.path.isfile(os.path.join(folder, 'last.pt'))  # past its pretraining
    if pretrain_epochs and not resuming:
        pre_dir = os.path.join(folder, 'pretrain')
        n = len(all_routes['train']['x'])
        print(f"pretraining on the {n:,} training routes, {pretrain_mask:.0%} of their holds hidden: {pre_dir}")
        again = init_from == 'resume' and os.path.isfile(os.path.join(pre_dir, 'last.pt'))
        share = budget_share(max_minutes, len(folders) - i) * pretrain_epochs / (pretrain_epochs + epochs)
        pre = dict(config, seed=seed + k, out_dir=pre_dir, max_iters=0, lr_decay_iters=0, epochs=pretrain_epochs,
                   learning_rate=pretrain_lr, patience=0, init_from='resume' if again else 'scratch', max_minutes=share)
        train(sized_schedule(pre, n), model_args, build_masked_holds, pretrain_batch, pretrain_evaluate)
        best_pre = build_masked_holds(model_args)
        best_pre.load_state_dict(load_checkpoint(os.path.join(pre_dir, 'best.pt'))['model'])
        state = {name: v for name, v in best_pre.encoder.state_dict().items() if not name.startswith('head.')}

        def build(args, state=state):  # the pretrained encoder, with a fresh grade head
            model = build_grader(args)
            missing = model.load_state_dict(state, strict=False).missing_keys
            assert all(name.startswith('head.') for name in missing), missing
            return model
    model, metrics = train(dict(config, seed=seed + k, out_dir=folder, max_minutes=budget_share(max_minutes, len(folders) - i)),
                           model_args, build, get_batch, evaluate, reserve if i == len(folders) - 1 else 0.0)
print(f"trained {len(folders)} model(s) in {format_seconds(time.time() - t0)}")

# -----------------------------------------------------------------------------
# the test split: the best checkpoints by val MAE, beside the ridge baseline fitted on the same rows
if int(os.environ.get('RANK', 0)) == 0:
    device = next(model.parameters()).device
    t0 = time.time()
    token_role = model_args['token_role']
    coef, l2, val_mae = ridge_baseline(splits['train'], splits['val'], token_role, splits['train']['weight'].numpy())
    print(f"ridge baseline: l2 {l2:g} (val MAE {val_mae:.3f}), fitted in {time.time() - t0:.1f}s")
    # calibration: each best.pt's temperature chosen on val (the least NLL of the val grades), saved in it
    val = splits['val']
    for path in [os.path.join(f, 'best.pt') for f in folders]:  # this run's: another process may be training the rest
        member = load_grader(path, meta, device)
        raw = grade_routes(member, val['inputs'], val['angle'])
        classes = grade_classes(val['difficulty'], member.grade_min, member.n_grades)
        member.temperature = fit_temperature(np.log(np.clip(raw['probs'], 1e-12, None)), classes)
        tuned = grade_routes(member, val['inputs'], val['angle'])
        ckpt = load_checkpoint(path, device)
        save_atomic(dict(ckpt, temperature=member.temperature), path)
        mae = [float(np.abs(r['difficulty'] - val['difficulty']).mean()) for r in (raw, tuned)]
        ece = [calibration(r['probs'], classes)['ece'] for r in (raw, tuned)]
        print(f"calibrated {path}: temperature {member.temperature:.3f}, val ECE {ece[0]:.3f} -> {ece[1]:.3f}, "
              f"val MAE {mae[0]:.3f} -> {mae[1]:.3f}")
    test = splits['test']
    best = load_grader(out_dir if len(folders) > 1 else folders[0], meta, device)
    graded = grade_routes(best, test['inputs'], test['angle'])
    predictions = dict(model=graded['difficulty'])
    if len(folders) > 1:
        predictions['member0'] = grade_routes(best.members[0], test['inputs'], test['angle'])['difficulty']
    predictions['ridge'] = ridge_predict(coef, ridge_design(test['inputs'], test['angle'], token_role))
    print(f"\ntest split, best.pt of {len(folders)} model(s):\n" + grade_report(grade_metrics_by_board(test, predictions)))
    classes = grade_classes(test['difficulty'], best.grade_min, best.n_grades)
    print('expected calibration error of the grade distribution on test: ' + ', '.join(
        f"{b} {calibration(graded['probs'][test['board'] == b], classes[test['board'] == b])['ece']:.3f}"
        for b in sorted(set(test['board']))))
