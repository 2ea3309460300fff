"""
The two models of boardgpt, on one set of transformer blocks:

- GPT: a causal language model over route tokens (<board> <angle> <grade> holds <end>), in the
  nanoGPT manner: pre-norm blocks, attention through scaled_dot_product_attention, the output
  head tied to the token embedding. Each row of a batch is one route, padded at the end, so no
  token can attend to another route's tokens, and padded targets are -1 (ignored by the loss).
  A key/value cache makes sampling one forward pass of one token per step.
- GradeEncoder: a bidirectional encoder over a route's holds (no grade token in its input),
  each hold carrying its token (hold and role), its (x, y) on the board and its role; the angle
  enters as a token and as a number. A pooled head scores every grade; its median is the
  predicted difficulty. MaskedHolds pretrains it on routes alone, naming the holds it hides.
- loading them: checkpoints read with torch.load(weights_only=True), a grade model's folder of
  seeds as one GradeEnsemble, each checked against the dataset's vocabulary.

Using them (sampling, guided search, grading, grade curves) is engine.py's job.
"""

import functools
import inspect
import json
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from routes import MAX_DIFFICULTY, MIN_DIFFICULTY, ROLES, InputError


@dataclass
class ModelConfig:
    vocab_size: int = 2048
    block_size: int = 48  # longest route, in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linears and LayerNorms; without is a little better and faster


class Dropout(nn.Module):
    """nn.Dropout, its mask drawn from random bytes on a CPU: there torch's bernoulli_ costs about 20 ns
    an element (a fifth of a grade-model training step), while one 64-bit draw gives 8 bytes. p is
    rounded to a multiple of 1/256 there (0.1 drops 26 in 256); elsewhere it is F.dropout."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if x.device.type != 'cpu':
            return F.dropout(x, self.p, True)
        cut = round(self.p * 256)
        n = x.numel()
        bits = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-2 ** 63, 2 ** 63 - 1)  # all 64 bits
        keep = bits.view(torch.uint8)[:n].view(x.shape) >= cut
        return x * keep.to(x.dtype) * (256 / (256 - cut))


class SelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.attn_dropout = Dropout(config.dropout)  # on a CPU (short_attention); sdpa drops its own elsewhere
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x, causal, mask=None, cache=None):
        """mask: (B, 1, 1, T) True where a key may be attended to (the encoder's padding).
        cache: (k, v, pos) of this layer; the new keys/values are written at pos.."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k_cache, v_cache, pos = cache
            k_cache[:, :, pos:pos + T] = k
            v_cache[:, :, pos:pos + T] = v
            k, v = k_cache[:, :, :pos + T], v_cache[:, :, :pos + T]
            causal = causal and T > 1  # one new token may see every cached one
            assert pos == 0 or T == 1, 'the cache takes a prompt at position 0, then one token at a time'
        if q.device.type == 'cpu':
            y = self.short_attention(q, k, v, causal, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))

    def short_attention(self, q, k, v, causal, mask):
        """What scaled_dot_product_attention computes, as plain matmuls, for a CPU and rows of < 50
        tokens: there the fused kernel's bfloat16 backward took 52 ms a call, and its math backend
        (a float mask built per call, torch's bernoulli_ for the dropout) about 15% more time a grade-model
        step than this, whose dropout mask comes from model.Dropout. In float32 it matches sdpa to rounding."""
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
        if mask is not None:
            att = att.masked_fill(~mask, float('-inf'))
        elif causal:  # a prompt from position 0 (the cache asserts it): query i sees keys 0..i
            T, S = att.shape[-2:]
            att = att.masked_fill(torch.ones(T, S, dtype=torch.bool, device=q.device).triu(1), float('-inf'))
        return self.attn_dropout(att.softmax(-1)) @ v


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, causal, mask=None, cache=None):
        x = x + self.attn(self.ln_1(x), causal, mask, cache)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """What both models share: blocks, final norm, initialisation, optimizer groups."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)

    def init_weights(self):
        self.apply(self._init)
        # residual projections scaled down with depth (GPT-2), so the residual stream starts calm
        for name, p in self.named_parameters():
            if name.endswith('proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    @staticmethod
    def _init(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def configure_optimizer(self, weight_decay, learning_rate, betas, device_type):
        """AdamW, with weight decay on matrices only (not on norms, biases or 1-d gains)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **(dict(fused=True) if fused else {}))

    def flops_per_token(self, T):
        """Forward + backward FLOPs per token (6N for the matmuls, plus attention), as in PaLM."""
        N, L, H, C = self.num_params(), self.config.n_layer, self.config.n_head, self.config.n_embd
        return 6 * N + 12 * L * H * (C // H) * T


class GPT(Transformer):

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying: a hold's input and output vectors are one
        self.init_weights()

    def forward(self, idx, targets=None, cache=None, pos=0):
        """idx (B, T) -> logits (B, T, V), and the mean loss over targets that are not -1.
        With a cache (from new_cache), idx continues the cached sequences from position pos and
        only the last position's logits are computed."""
        x = self.hidden(idx, cache, pos)
        if targets is None:
            return self.lm_head(x[:, -1:] if cache is not None else x), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def hidden(self, idx, cache=None, pos=0):
        """idx (B, T) -> the last block's normed output (B, T, C), what lm_head reads."""
        B, T = idx.shape
        assert pos + T <= self.config.block_size, f'{pos + T} tokens, block_size is {self.config.block_size}'
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(pos, pos + T, device=idx.device)))
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, cache=None if cache is None else (*cache[i], pos))
        return self.ln_f(x)

    def sequence_nll(self, x, y, blocked=None):
        """Each row's summed negative log-likelihood of its targets y (B, T) (-1: none) after inputs
        x (B, T) -> (B,) float32. Logits only where a target is: padding and the given conditioning
        tokens cost no pass through the vocabulary (a quarter of the time of scoring routes on a CPU).
        blocked: (V,) bool, tokens taken out of every distribution, the rest renormalized."""
        keep = y != -1
        logits = self.lm_head(self.hidden(x)[keep]).float()  # (N, V): one row per target
        if blocked is not None:
            logits = logits.masked_fill(blocked, float('-inf'))
        nll = F.cross_entropy(logits, y[keep], reduction='none')
        return torch.zeros(len(x), device=x.device).index_add_(0, keep.nonzero()[:, 0], nll)

    def new_cache(self, batch_size, device, dtype=torch.float32):
        config = self.config
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        return [(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
                for _ in range(config.n_layer)]


def grade_quantile(probs, q, grade_min):
    """(B, n_grades) grade distributions (a tensor) -> (B,) the difficulty at quantile q, each
    grade g spread evenly over [g - 0.5, g + 0.5] so that it is continuous: q 0.5 is the grade
    model's prediction, its median."""
    cdf = probs.cumsum(-1)
    k = (cdf < q).sum(-1, keepdim=True).clamp(max=probs.size(-1) - 1)  # the grade the quantile falls in
    before = (cdf - probs).gather(-1, k)  # probability of the grades below it
    inside = probs.gather(-1, k).clamp(min=1e-9)
    return (grade_min + k - 0.5 + (q - before) / inside).squeeze(-1)


class GradeEncoder(Transformer):
    """Bidirectional encoder: route in, a distribution over grades and a continuous difficulty out.

    Input rows are <board> <angle> holds..., padded with 0. Each hold's embedding is the sum of
    its token's (hold and role), its role's, and a projection of Fourier features of its (x, y),
    so holds close on the wall start out close in the model. No position embedding: a route is a
    set of holds, and its meaning does not depend on the order they are listed in.

    The head scores every integer grade grade_min..grade_max (Font resolution). It is trained
    with two-hot targets (difficulty 20.3 is 70% grade 20 and 30% grade 21, so the continuous
    label loses nothing) and predicts the distribution's median, the point that minimises the
    expected absolute error. On Kilter it varied less from run to run than regressing the number
    with a smooth L1 loss, and it says how sure the model is."""

    def __init__(self, config, token_xy, token_role, grade_min=10, grade_max=33, n_fourier=8):
        super().__init__(config)
        self.register_buffer('token_xy', torch.as_tensor(token_xy, dtype=torch.float32))  # (V, 2) in [0, 1]
        self.register_buffer('token_role', torch.as_tensor(token_role, dtype=torch.long))  # (V,) 0 = not a hold
        self.register_buffer('freqs', math.pi * 2.0 ** torch.arange(n_fourier, dtype=torch.float32))
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.role = nn.Embedding(int(self.token_role.max()) + 1, config.n_embd)
        self.xy = nn.Linear(4 * n_fourier, config.n_embd, bias=False)
        self.angle = nn.Linear(1, config.n_embd, bias=False)
        self.grade_min, self.n_grades = grade_min, grade_max - grade_min + 1
        self.head = nn.Sequential(nn.Linear(config.n_embd, config.n_embd), nn.GELU(),
                                  nn.Linear(config.n_embd, self.n_grades))
        self.temperature = 1.0  # the head's logits are divided by it: chosen on val after training (calibration)
        self.init_weights()

    def embed(self, idx, angle):
        """idx (B, T) tokens, angle (B,) in degrees (NaN where unknown) -> pooled (B, C)."""
        x = self.states(idx, angle)
        w = (idx != 0).unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1)  # mean over the route's tokens

    def states(self, idx, angle, hide=None, hidden=None):
        """-> (B, T, C), every token's final state. hide (B, T) bool: holds shown as the vector
        hidden (C,) plus their role only, their hold and position unseen (MaskedHolds)."""
        keep = idx != 0
        xy = self.token_xy[idx]  # (B, T, 2)
        f = xy.unsqueeze(-1) * self.freqs  # (B, T, 2, F)
        fourier = torch.cat([f.sin(), f.cos()], dim=-1).flatten(2)  # (B, T, 4F)
        is_hold = (self.token_role[idx] > 0).unsqueeze(-1)
        x = self.wte(idx) + self.role(self.token_role[idx]) + self.xy(fourier) * is_hold
        if hide is not None:
            x = torch.where(hide.unsqueeze(-1), hidden + self.role(self.token_role[idx]), x)
        known = ~torch.isnan(angle)
        a = torch.where(known, angle, torch.zeros_like(angle)) / 45.0
        at_angle = torch.arange(idx.size(1), device=idx.device) == 1  # position 1 is the angle token
        x = x + self.angle(a.unsqueeze(-1).to(x.dtype)).unsqueeze(1) * at_angle[:, None]
        x = self.drop(x)
        mask = keep[:, None, None, :]
        for block in self.blocks:
            x = block(x, causal=False, mask=mask)
        return self.ln_f(x)

    def median(self, probs):
        """(B, n_grades) probabilities -> (B,) median difficulty (grade_quantile at 0.5)."""
        return grade_quantile(probs, 0.5, self.grade_min)

    def log_probs(self, pooled):
        """pooled (B, C) from embed() -> (B, n_grades) log-probability of each grade."""
        return (self.head(pooled).float() / self.temperature).log_softmax(-1)

    def grades(self, idx, angle):
        """-> (log-probabilities (B, n_grades), pooled (B, C)), as GradeEnsemble.grades."""
        pooled = self.embed(idx, angle)
        return self.log_probs(pooled), pooled

    def forward(self, idx, angle, targets=None, weights=None):
        """-> (difficulty (B,), loss or None). Targets (B,) are continuous difficulties; weights
        (B,) weigh each route's loss."""
        logp = self.log_probs(self.embed(idx, angle))
        pred = self.median(logp.exp())
        if targets is None:
            return pred, None
        grade = (targets - self.grade_min).clamp(0, self.n_grades - 1)
        low = grade.floor().long().clamp(max=self.n_grades - 2)[:, None]
        upper = (grade - low.squeeze(-1))[:, None]  # the two-hot target's weight on grade low + 1
        err = -((1 - upper) * logp.gather(-1, low) + upper * logp.gather(-1, low + 1)).squeeze(-1)
        loss = err.mean() if weights is None else (err * weights).sum() / weights.sum()
        return pred, loss


class MaskedHolds(nn.Module):
    """Pretraining a GradeEncoder on routes alone, graded or not: some holds of each route are
    hidden (hide, drawn by hide_holds), each seen only as its role and one learned vector, and the
    encoder names the hold it was, scored against its own embeddings of every hold token (tied,
    as in the GPT). Fine-tuning on grades then starts from an encoder that knows which holds go
    together; on Kilter val it beat training from scratch (docs/grade.md)."""

    configure_optimizer = Transformer.configure_optimizer  # what trainer.py asks of a model
    num_params = Transformer.num_params

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.hidden = nn.Parameter(0.02 * torch.randn(encoder.config.n_embd))
        holds = torch.nonzero(encoder.token_role > 0).squeeze(1)
        index = torch.full_like(encoder.token_role, -1)
        index[holds] = torch.arange(len(holds))
        self.register_buffer('holds', holds, persistent=False)
        self.register_buffer('hold_index', index, persistent=False)  # token -> its column among holds

    def forward(self, idx, angle, hide):
        """-> (logits over hold tokens (N, H) of the N hidden holds, mean cross-entropy)."""
        h = self.encoder.states(idx, angle, hide, self.hidden)[hide]
        logits = h @ self.encoder.wte.weight[self.holds].T
        return logits, F.cross_entropy(logits.float(), self.hold_index[idx[hide]])


def hide_holds(idx, token_role, rate, generator=None):
    """(B, T) bool: each hold of idx hidden with probability rate, and at least one per route."""
    is_hold = token_role[idx] > 0
    u = torch.rand(idx.shape, generator=generator).masked_fill(~is_hold, 2.0)
    hide = u < rate
    hide[torch.arange(len(idx)), u.argmin(1)] = True
    return hide & is_hold


def build_masked_holds(model_args):
    """model_args of a grade model -> a fresh MaskedHolds around a fresh GradeEncoder."""
    return MaskedHolds(build_grader(model_args))


# -----------------------------------------------------------------------------
# checkpoints: where they live, and loading them safely

def checkpoint_dir(dataset, model):
    """Where a dataset's trained models live: out/<dataset>/<model>, model one of 'gen' (the
    generator), 'grade' (the grade model or ensemble), 'judge' (a grade model kept apart to
    judge routes another grade model picked)."""
    return os.path.join('out', dataset, model)


HISTORY = 'history.json'  # beside a run's checkpoints: one entry per evaluation (trainer.py writes it)


def read_history(folder):
    """A run's loss history: [{iter, batch_loss, val_loss, ..., best}] per evaluation, or [] for a
    run that has none (trained before histories were kept) or a file that is not one."""
    try:
        with open(os.path.join(folder, HISTORY), encoding='utf-8') as f:
            history = json.load(f)
    except (OSError, ValueError):
        return []
    return history if isinstance(history, list) and all(isinstance(h, dict) and 'iter' in h for h in history) else []


def load_checkpoint(path, device='cpu'):
    """A checkpoint's dict. weights_only=True, always: a checkpoint from elsewhere cannot run code
    on load, and one that needs more than tensors and plain values is refused, not trusted."""
    if not os.path.isfile(path):
        raise InputError(f"no checkpoint at {path}: train one first (train_gen.py or train_grade.py)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(e))
        if not unsafe:  # a damaged file trips the safe unpickler too
            raise InputError(f"{path} is truncated or not a checkpoint: train it again") from None
        raise InputError(f"{path} cannot be loaded safely (it holds a {unsafe.group(1)}): boardgpt loads only "
                         f"checkpoints of tensors and plain values, as train_gen.py and train_grade.py write them") from None
    except Exception as e:  # noqa: BLE001  (torch's safe unpickler fails many ways on a damaged file)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise InputError(f"{path} is truncated or not a checkpoint ({first}): train it again") from None
    if not isinstance(ckpt, dict) or not {'model', 'model_args'} <= set(ckpt):
        raise InputError(f"{path} is not a boardgpt checkpoint (no model and model_args): train it again")
    return ckpt


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device):
    """Whether bfloat16 autocast speeds training up here: on GPUs that have it, and on CPUs with AMX
    bf16 matrix units, where a training step took half the time of float32 (bench.py); elsewhere on a
    CPU bfloat16 is emulated and slower. Asked once per device (the grade posterior asks every call)."""
    if device.startswith('cuda'):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device == 'cpu' and bool(getattr(torch.cpu, 'get_capabilities', dict)().get('amx_bf16'))


def check_device(device):
    """A device torch can use here, or a one-line error that says which ones it can."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if kind == 'cuda' and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: this machine has no CUDA GPU torch can use; use --device=cpu")
    if kind not in ('cpu', 'cuda', 'mps'):
        raise InputError(f"device {device!r} is not supported: use cpu or cuda")
    if kind == 'mps' and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r}: MPS is not available here; use --device=cpu")
    return device


def _state(model, ckpt, path):
    try:
        model.load_state_dict(ckpt['model'])
    except (RuntimeError, KeyError, TypeError) as e:
        raise InputError(f"{path} does not match the model it says it is ({str(e).splitlines()[0][:100]}): "
                         f"train it again") from None
    return model


def build_generator(model_args):
    return GPT(ModelConfig(**model_args))


def load_generator(path, meta, device='cpu'):
    """The GPT of a checkpoint written by train_gen.py, in eval mode, checked against the dataset."""
    ckpt = load_checkpoint(path, device)
    args = ckpt['model_args']
    if 'token_role' in args:
        raise InputError(f"{path} is a grade model, not a route generator: give a checkpoint of train_gen.py")
    if args.get('vocab_size') != len(meta['itos']):
        raise InputError(f"{path} was trained on another vocabulary ({args.get('vocab_size')} tokens, dataset "
                         f"{meta['dataset']} has {len(meta['itos'])}): prepare and train on the same config")
    try:
        model = build_generator(args)
    except TypeError as e:
        raise InputError(f"{path} is not a route generator checkpoint ({e})") from None
    model = _state(model, ckpt, path).to(device).eval()
    model.iteration = ckpt.get('iter_num')  # how far it was trained, for reports
    model.path = path
    return model


def encoder_tables(meta):
    """GradeEncoder's per-token tables as plain lists (they travel in a checkpoint's model_args):
    token_xy (V, 2), each hold's (x, y) scaled to [0, 1] by its board's edges, and token_role (V,),
    1 + the role's index in routes.ROLES for hold tokens, 0 for every other token."""
    edges = {b['name']: b['edges'] for b in meta['boards']}
    token_xy, token_role = [], []
    for t, kind in enumerate(meta['kind']):
        if kind != 'hold':
            token_xy.append([0.0, 0.0])
            token_role.append(0)
            continue
        left, right, bottom, top = edges[meta['hold_board'][t]]
        token_xy.append([(meta['hold_x'][t] - left) / (right - left), (meta['hold_y'][t] - bottom) / (top - bottom)])
        token_role.append(1 + ROLES.index(meta['hold_role'][t]))
    return token_xy, token_role


def build_grader(model_args):
    """model_args (plain Python, as in a checkpoint) -> a fresh GradeEncoder."""
    args = dict(model_args)
    tables = {k: args.pop(k) for k in ('token_xy', 'token_role', 'grade_min', 'grade_max')}
    return GradeEncoder(ModelConfig(**args), **tables)


def grader_args(meta, **config):
    """A GradeEncoder's model_args for a dataset: its token tables and the app's grade range."""
    token_xy, token_role = encoder_tables(meta)
    return dict(config, vocab_size=len(meta['itos']), token_xy=token_xy, token_role=token_role,
                grade_min=MIN_DIFFICULTY, grade_max=MAX_DIFFICULTY)


class _Method(nn.Module):
    """module.<method> as a module's forward, for torch.func.functional_call."""

    def __init__(self, module, method):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args):
        return getattr(self.module, self.method)(*args)


class GradeEnsemble(nn.Module):
    """Several grade models (seeds) as one: the mean of their grade distributions, and its
    median. It answers grades / embed / log_probs / median like a single GradeEncoder
    (engine.JoinedGrades adds the generator's opinion to either).
    batched: the members run as one call (torch.func.vmap over their stacked weights), which
    saves the launches of a call per member on a GPU; on a 2-core CPU, five Kilter-size members
    one by one were as fast or faster (15 routes: 95 vs 136 ms; 512: 4.7 vs 5.0 s), so there
    they run one by one. Both give the same grades."""

    def __init__(self, members, batched=False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.grade_min, self.n_grades = members[0].grade_min, members[0].n_grades
        self.batched = batched and len({json.dumps(vars(m.config), sort_keys=True) for m in members}) == 1
        self._stack = None  # (device, stacked weights), built on first use: members do not train here

    def stacked(self):
        device = next(self.members.parameters()).device
        if self._stack is None or self._stack[0] != device:
            params, buffers = torch.func.stack_module_state(list(self.members))
            self._stack = (device, {'module.' + k: v for k, v in {**params, **buffers}.items()})
        return self._stack[1]

    def run(self, method, *args):
        """(M, ...) every member's method(*args), in one vmapped call."""
        call = _Method(self.members[0], method)
        with warnings.catch_warnings():  # attention has no batching rule on a CPU: a loop there, said once is enough
            warnings.filterwarnings('ignore', message='There is a performance drop')
            return torch.func.vmap(lambda state: torch.func.functional_call(call, state, args))(self.stacked())

    def embed(self, idx, angle):
        if not self.batched:
            return torch.cat([m.embed(idx, angle) for m in self.members], -1)  # every member's view of the route
        pooled = self.run('embed', idx, angle)  # (M, B, C)
        return pooled.transpose(0, 1).flatten(1)  # (B, M * C): member by member, as the loop lays it out

    def log_probs(self, pooled):
        """The members' mean distribution."""
        parts = pooled.chunk(len(self.members), -1)
        if self.batched:
            head = _Method(self.members[0], 'head')
            state = {k: v for k, v in self.stacked().items() if k.startswith('module.head.')}
            logits = torch.func.vmap(lambda s, p: torch.func.functional_call(head, s, (p,)))(state, torch.stack(parts))
            t = torch.tensor([m.temperature for m in self.members], device=logits.device)[:, None, None]
            probs = (logits.float() / t).softmax(-1).mean(0)
        else:
            probs = torch.stack([m.log_probs(p).exp() for m, p in zip(self.members, parts)]).mean(0)
        return probs.clamp(min=1e-12).log()

    def grades(self, idx, angle):
        """-> (log-probabilities (B, n_grades), pooled (B, C)): the members' mean."""
        pooled = self.embed(idx, angle)
        return self.log_probs(pooled), pooled

    def median(self, probs):
        return self.members[0].median(probs)

    def forward(self, idx, angle, targets=None, weights=None):
        return self.median(self.grades(idx, angle)[0].exp()), None


def member_dir(folder, k):
    """Where member k of a grade ensemble in folder lives (train_grade.py --ensemble=K)."""
    return os.path.join(folder, f'member{k}')


def member_indices(folder):
    """The k of every member<k> folder in folder, in order (member10 after member9)."""
    if not os.path.isdir(folder):
        return []
    return sorted(int(d[len('member'):]) for d in os.listdir(folder) if re.fullmatch(r'member\d+', d))


def grade_checkpoints(folder):
    """The checkpoints of a grade model folder: folder/best.pt for one model, or
    folder/member<k>/best.pt for an ensemble (train_grade.py --ensemble=K), in the order of k."""
    single = os.path.join(folder, 'best.pt')
    if os.path.isfile(single):
        return [single]
    paths = [os.path.join(member_dir(folder, k), 'best.pt') for k in member_indices(folder)]
    return [p for p in paths if os.path.isfile(p)]


def load_grader(path, meta, device='cpu'):
    """A grade model in eval mode: path is a checkpoint (.pt) or a folder of them (one model, or
    an ensemble). Each must have been trained on this dataset's vocabulary: its token tables are
    checked against meta's."""
    device = str(device)  # a torch.device too (train_grade.py passes its model's)
    paths = [path] if path.endswith('.pt') else grade_checkpoints(path)
    if not paths or not os.path.isfile(paths[0]):
        raise InputError(f"no grade model at {path}: train one first (python train_grade.py config/{meta['dataset']}.py)")
    token_xy, token_role = encoder_tables(meta)
    members = []
    for p in paths:
        ckpt = load_checkpoint(p, device)
        args = ckpt['model_args']
        if 'token_role' not in args:
            raise InputError(f"{p} is a route generator, not a grade model: give a checkpoint of train_grade.py")
        if args['token_role'] != token_role or not np.allclose(args['token_xy'], token_xy):
            raise InputError(f"{p} was trained on another vocabulary than dataset {meta['dataset']}: "
                             f"retrain it, or pass the matching dataset")
        members.append(_state(build_grader(args), ckpt, p))
        members[-1].temperature = float(ckpt.get('temperature', 1.0))  # train_grade.py's calibration, if any
    # members batched on a GPU, where a small call costs its launches; on a CPU one by one was as fast
    model = members[0] if len(members) == 1 else GradeEnsemble(members, batched=device.startswith('cuda'))
    model.paths = paths
    return model.to(device).eval()
