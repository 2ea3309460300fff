"""
Train the route generator, a causal GPT over route tokens.

    python train_gen.py config/kilter.py
    python train_gen.py config/kilter.py --init_from=resume --max_iters=6000
    torchrun --standalone --nproc_per_node=2 train_gen.py config/kilter.py

Reads data/<dataset>/ (written by prepare.py) and writes out/<dataset>/gen/{last,best}.pt.
Each row of a batch is one whole route, padded at the end; the loss counts the hold and end
tokens only (the board, angle and grade tokens are given, never predicted).
"""

import os

import numpy as np
import torch

from configurator import configure
from model import GPT, ModelConfig
from routes import SPLITS, load_meta
from trainer import train

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
length_buckets = True  # draw each batch from routes of similar length: almost no padding to compute
gradient_accumulation_steps = 1
max_iters = 5000
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 100
lr_decay_iters = 5000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'auto'  # bfloat16 on GPUs that have it, else float32; or 'float32', 'bfloat16', 'float16'
compile = False  # torch.compile: worth it on a GPU; on a CPU it costs a minute or two of compiling
seed = 1337
wandb_log = False
wandb_project = 'boardgpt'
wandb_run_name = 'gen'
# -----------------------------------------------------------------------------
configure(globals())
config = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))}
config['out_dir'] = out_dir = out_dir or os.path.join('out', dataset, 'gen')

# data: every route of a split as one padded row, built once, so a batch is a gather
meta = load_meta(os.path.join(data_root, dataset, 'meta.pkl'))
block_size = max(b['max_holds'] for b in meta['boards']) + 4  # the longest route a board allows
N_CONDITIONING = 3  # <board> <angle> <grade>: given, not predicted


def load_split(split):
    """(inputs, targets, lengths) of a split: inputs are route[:-1], targets route[1:], with -1
    where the target is a conditioning token or padding."""
    data = np.fromfile(os.path.join(data_root, dataset, f'{split}.bin'), dtype=np.uint16).astype(np.int64)
    offsets = np.array(meta['splits'][split]['offset'])
    lengths = np.diff(offsets) - 1  # inputs per route
    n, T = len(lengths), block_size - 1
    col = np.arange(T)
    inside = col[None, :] < lengths[:, None]
    gather = np.minimum(offsets[:-1, None] + col[None, :], len(data) - 1)
    x = np.where(inside, data[gather], 0)
    y = np.where(inside & (col[None, :] >= N_CONDITIONING - 1), data[np.minimum(gather + 1, len(data) - 1)], -1)
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths)


splits = {s: load_split(s) for s in SPLITS}
by_length = torch.argsort(splits['train'][2], stable=True)
print(f"{dataset}: " + ', '.join(f"{s} {len(splits[s][2]):,} routes" for s in SPLITS)
      + f"; vocabulary {len(meta['itos']):,}; block_size {block_size}")


def get_batch(split, generator):
    x, y, lengths = splits[split]
    if length_buckets and split == 'train':  # a random window of the routes sorted by length
        window = min(len(lengths), 8 * batch_size)
        start = torch.randint(len(lengths) - window + 1, (1,), generator=generator)
        i = by_length[start + torch.randint(window, (batch_size,), generator=generator)]
    else:
        i = torch.randint(len(lengths), (batch_size,), generator=generator)
    T = int(lengths[i].max())  # trim the padding every row of this batch shares
    if compile:  # round up to a multiple of 8: a few shapes, so few recompiles
        T = min(x.size(1), -(-T // 8) * 8)
    return x[i, :T], y[i, :T]


@torch.no_grad()
def evaluate(model):
    """Loss per predicted token and per route, on all of val and on as many train routes."""
    out = {}
    for split in ('val', 'train'):
        x, y, lengths = splits[split]
        n = min(len(lengths), len(splits['val'][2]))
        total, count = 0.0, 0
        device = model.lm_head.weight.device
        for i in range(0, n, 256):
            j = min(i + 256, n)
            T = int(lengths[i:j].max())
            xb, yb = x[i:j, :T].to(device), y[i:j, :T].to(device)
            logits, _ = model(xb)
            nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), yb, ignore_index=-1,
                                                    reduction='sum')
            total += nll.item()
            count += int((yb != -1).sum())
        out[f'{split}_loss'] = total / count
        out[f'{split}_loss_per_route'] = total / n
    return out


model_args = dict(vocab_size=len(meta['itos']), block_size=block_size, n_layer=n_layer, n_head=n_head,
                  n_embd=n_embd, dropout=dropout, bias=bias)
model, metrics = train(config, model_args, lambda args: GPT(ModelConfig(**args)), get_batch, evaluate)
