"""
Train the route generator, a causal GPT over route tokens.

    python train_gen.py config/kilter.py
    python train_gen.py config/kilter.py --init_from=resume --max_iters=6000
    torchrun --standalone --nproc_per_node=2 train_gen.py config/kilter.py

Reads data/<dataset>/ (written by prepare.py) and writes out/<dataset>/gen/{last,best}.pt.
Each row of a batch is one whole route, padded at the end; the loss counts the hold and end
tokens only (the board, angle and grade tokens are given, never predicted). The schedule is
epochs passes over the training routes, stopped early after patience evaluations without a better
val loss.
"""

import os

import torch

from configurator import configure
from engine import route_nll
from model import build_generator, checkpoint_dir
from routes import CONDITIONING, SPLITS, block_size, load_meta, load_split, pad
from trainer import sized_schedule, similar_length_batch, train

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
max_iters = 0  # 0: sized by the data, epochs passes over the training routes
epochs = 8.5  # 3,002 iterations on Kilter's 22,600 training routes, where more stopped helping on val (docs/generator.md)
patience = 2  # stop after this many evaluations without a better val loss (0: run to max_iters)
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
    """(tokens, inputs, targets, lengths) of a split: inputs are route[:-1], targets route[1:] with
    -1 where the target is a conditioning token or padding (given, never predicted)."""
    tokens = load_split(folder, meta, split)['tokens']
    x = pad([t[:-1] for t in tokens], block_size - 1)
    y = pad([[-1] * (CONDITIONING - 1) + t[CONDITIONING:] for t in tokens], block_size - 1, fill=-1)
    lengths = torch.tensor([len(t) - 1 for t in tokens])
    return tokens, torch.from_numpy(x), torch.from_numpy(y), lengths


splits = {s: load_rows(s) for s in SPLITS}
by_length = torch.argsort(splits['train'][3], stable=True)
print(f"{dataset}: " + ', '.join(f"{s} {len(splits[s][0]):,} routes" for s in SPLITS)
      + f"; vocabulary {len(meta['itos']):,}; block_size {block_size}")
config = sized_schedule(config, len(splits['train'][0]))


def get_batch(split, generator):
    _, x, y, lengths = splits[split]
    i = similar_length_batch(by_length, batch_size, length_pool, generator)
    T = int(lengths[i].max())  # trim the padding every row of this batch shares
    if compile:  # round up to a multiple of 8: a few shapes, so few recompiles
        T = min(x.size(1), -(-T // 8) * 8)
    return x[i, :T], y[i, :T]


def evaluate(model):
    """Loss per predicted token and per route, on all of val and on as many train routes."""
    out = {}
    for split in ('val', 'train'):
        tokens = splits[split][0][:len(splits['val'][0])]
        nll = route_nll(model, tokens)
        out[f'{split}_loss'] = float(nll.sum() / sum(len(t) - CONDITIONING for t in tokens))
        out[f'{split}_loss_per_route'] = float(nll.mean())
    return out


model_args = dict(vocab_size=len(meta['itos']), block_size=block_size, n_layer=n_layer, n_head=n_head,
                  n_embd=n_embd, dropout=dropout, bias=bias)
model, metrics = train(config, model_args, build_generator, get_batch, evaluate)
