"""
Train the route generator, a causal GPT over route tokens.

    python train_gen.py config/kilter.py
    python train_gen.py config/kilter.py --init_from=resume --max_iters=6000
    torchrun --standalone --nproc_per_node=2 train_gen.py config/kilter.py

Reads data/<dataset>/ (written by prepare.py) and writes out/<dataset>/gen/{last,best}.pt.
Each row of a batch is one whole route, padded at the end; the loss counts the hold and end
tokens only (the board, angle and grade tokens are given, never predicted). The schedule is
epochs passes over the training routes, or fewer to end within max_minutes, stopped early after
patience evaluations without a better val loss. Evaluations score a fixed sample of eval_rows val
routes; best.pt is scored on all of val and test at the end.
"""

import os

import torch

from configurator import configure
from engine import route_nll
from model import build_generator, checkpoint_dir, load_generator
from routes import CONDITIONING, SPLITS, block_size, load_meta, load_split, pad, sample_rows
from trainer import EVAL_ROWS, budget_share, sized_schedule, similar_length_batch, train

# -----------------------------------------------------------------------------
# config
dataset = 'kilter'
data_root = 'data'
out_dir = ''  # default out/<dataset>/gen
init_from = 'scratch'  # or 'resume' (from out_dir/last.pt)
eval_interval = 500
log_interval = 100
# model
n_layer = 4
n_head = 4
n_embd = 192
dropout = 0.1
bias = False
# optimizer: AdamW, warmup then cosine decay
batch_size = 64  # routes per micro-step
length_pool = 8  # draw each batch from length_pool * batch_size routes of similar length: almost no
#                  padding to compute; 0: from all routes
gradient_accumulation_steps = 1
max_iters = 0  # 0: sized by the data, epochs passes over the training routes, within max_minutes
max_minutes = 13.0  # the run's wall time at most (0: no limit): with the grade models beside it, the page in 15
epochs = 8.5  # 3,002 iterations on Kilter's 22,600 training routes, where more stopped helping on val (docs/generator.md)
patience = 2  # stop after this many evaluations without a better val loss (0: run to max_iters)
eval_rows = EVAL_ROWS  # val routes an evaluation scores (and as many train routes): its cost does not grow with the data
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 100
lr_decay_iters = 0  # 0: max_iters
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'auto'  # bfloat16 on GPUs and CPUs (AMX) that have it fast, else float32; or 'float32', 'bfloat16', 'float16'
compile = False  # torch.compile: worth it on a GPU; on a CPU it costs a minute or two of compiling
seed = 1337
wandb_log = False
wandb_project = 'boardgpt'
wandb_run_name = 'gen'
# -----------------------------------------------------------------------------
configure(globals())
config = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))}
config['out_dir'] = out_dir = out_dir or checkpoint_dir(dataset, 'gen')

# data: every route of a split as one padded row, built once, so a batch is a gather
folder = os.path.join(data_root, dataset)
meta = load_meta(folder)
block_size = block_size(meta)


def load_rows(split):
    """(tokens, inputs, targets, lengths, sample) of a split: inputs are route[:-1], targets route[1:]
    with -1 where the target is a conditioning token or padding (given, never predicted); sample the
    tokens of the eval_rows routes an evaluation scores."""
    rows = load_split(folder, meta, split)
    tokens = rows['tokens']
    x = pad([t[:-1] for t in tokens], block_size - 1)
    y = pad([[-1] * (CONDITIONING - 1) + t[CONDITIONING:] for t in tokens], block_size - 1, fill=-1)
    lengths = torch.tensor([len(t) - 1 for t in tokens])
    sample = [t for t, keep in zip(tokens, sample_rows(rows, eval_rows)) if keep]
    return tokens, torch.from_numpy(x), torch.from_numpy(y), lengths, sample


splits = {s: load_rows(s) for s in SPLITS}
by_length = torch.argsort(splits['train'][3], stable=True)
print(f"{dataset}: " + ', '.join(f"{s} {len(splits[s][0]):,} routes" for s in SPLITS)
      + f"; vocabulary {len(meta['itos']):,}; block_size {block_size}")
config = sized_schedule(config, len(splits['train'][0]))


def get_batch(split, generator):
    _, x, y, lengths, _ = splits[split]
    i = similar_length_batch(by_length, batch_size, length_pool, generator)
    T = int(lengths[i].max())  # trim the padding every row of this batch shares
    if compile:  # round up to a multiple of 8: a few shapes, so few recompiles
        T = min(x.size(1), -(-T // 8) * 8)
    return x[i, :T], y[i, :T]


def losses(model, tokens):
    """Loss per predicted token and per route of routes, and the per-route figure's standard error."""
    nll = route_nll(model, tokens)
    return (float(nll.sum() / sum(len(t) - CONDITIONING for t in tokens)), float(nll.mean()),
            float(nll.std() / len(nll) ** 0.5))


def evaluate(model):
    """Loss per predicted token and per route on the val sample, and on as many train routes."""
    out = {}
    for split in ('val', 'train'):
        tokens = splits[split][4][:len(splits['val'][4])]
        out[f'{split}_loss'], out[f'{split}_loss_per_route'], se = losses(model, tokens)
        if split == 'val':
            out['val_loss_per_route_se'] = se
    return out


model_args = dict(vocab_size=len(meta['itos']), block_size=block_size, n_layer=n_layer, n_head=n_head,
                  n_embd=n_embd, dropout=dropout, bias=bias)
# after training: best.pt on all of val and test, about this many evaluations' worth of time
reserve = sum(len(splits[s][0]) for s in ('val', 'test')) / max(1, 2 * len(splits['val'][4]))
model, metrics = train(dict(config, max_minutes=budget_share(max_minutes)), model_args, build_generator, get_batch,
                       evaluate, reserve)
if int(os.environ.get('RANK', 0)) == 0:
    best = load_generator(os.path.join(out_dir, 'best.pt'), meta, next(model.parameters()).device)
    for split in ('val', 'test'):
        per_token, per_route, se = losses(best, splits[split][0])
        print(f"best.pt on all {len(splits[split][0]):,} {split} routes: loss {per_token:.4f} per token, "
              f"{per_route:.2f} per route (standard error {se:.2f})")
