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
- GeneratorGrades: the GPT read backwards as a grade model, by Bayes' rule over its grade tokens;
  join_generator sets it beside the encoders, and that is what routes are graded with.
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

from routes import (CONDITIONING, END, GRADES, MAX_DIFFICULTY, MIN_DIFFICULTY, ROLES, DecodingRules, Grammar, InputError,
                    encoder_input, font_grade, pad)


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
    together; on Kilter val it beat training from scratch (README)."""

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


def sample_tokens(probs, generator=None, u=None):
    """One token per row of probs (B, V) -> (B, 1), by inverse CDF with one uniform per row: the
    same distribution as torch.multinomial, an order of magnitude faster on a (500, 2000) batch
    on a CPU. u: (B,) the uniforms, if the caller drew them. A token of probability 0 is never drawn."""
    cdf = probs.cumsum(-1)
    if u is None:
        u = torch.rand(probs.size(0), device=probs.device, generator=generator)
    u = u[:, None].to(cdf.dtype) * cdf[:, -1:]
    nxt = torch.searchsorted(cdf, u, right=True).clamp(max=probs.size(-1) - 1)
    # a u rounded up onto the total would pick the last token, maybe one the rules forbid
    return torch.where(probs.gather(1, nxt) > 0, nxt, probs.argmax(-1, keepdim=True))


class RowRandom:
    """The uniforms of each decoding step, drawn per stream: rows are split into contiguous runs
    (one per request), each with its own torch.Generator, and a run draws one uniform for each of
    its rows at every step while any of them is still decoding. A run's draws depend only on its
    own rows, so a request decoded in a batch with others gets exactly the routes it gets alone."""

    def __init__(self, generators, B, device):
        generators = list(generators) if isinstance(generators, (list, tuple)) else [generators] * B
        assert len(generators) == B, f'{len(generators)} generators for {B} rows'
        self.runs, start = [], 0
        for i in range(1, B + 1):
            if i == B or generators[i] is not generators[start]:
                self.runs.append((start, i, generators[start]))
                start = i
        self.device = device

    def draw(self, finished):
        """finished: (B,) bool over every row -> (B,) uniforms (0 in runs that have finished)."""
        u = torch.zeros(len(finished), device=self.device)
        for start, end, g in self.runs:
            if not finished[start:end].all():
                u[start:end] = torch.rand(end - start, device=self.device, generator=g)
        return u


@torch.no_grad()
def generate(model, prefix, rules=None, temperature=1.0, top_k=0, top_p=1.0, end_token=1, generator=None):
    """Sample continuations of prefix (B, T0), all rows of one length, with the key/value cache:
    one full forward for the prefix, then one token per step. rules (routes.DecodingRules)
    masks every step to what the grammar allows; finished rows continue with padding (0).
    Routes differ in length, so once half of the rows still decoding have finished, they are
    dropped from the batch (and from the cache and the rules): the long routes do not keep the
    short ones computing. temperature: one for all rows, or one per row (0: the likeliest token);
    generator: one torch.Generator, or one per row (contiguous runs, see RowRandom), so several
    requests share a batch and each still gets the routes it gets alone. Returns (B, T0 + steps)."""
    B, T0 = prefix.shape
    weight = model.lm_head.weight
    dev = prefix.device
    cache = model.new_cache(B, weight.device, weight.dtype)
    logits, _ = model(prefix, cache=cache, pos=0)
    out = torch.zeros(B, model.config.block_size, dtype=torch.long, device=dev)
    out[:, :T0] = prefix
    temps = torch.as_tensor(temperature, dtype=torch.float32, device=dev).expand(B).clone()
    rand = RowRandom(generator, B, dev)
    rows = torch.arange(B, device=dev)  # the rows of out still being decoded
    finished = torch.zeros(B, dtype=torch.bool, device=dev)  # over every row of out
    done, pos = torch.zeros(B, dtype=torch.bool, device=dev), T0
    while pos < model.config.block_size:
        logits = logits[:, -1].float()
        if rules is not None:
            logits = logits.masked_fill(~rules.mask(), float('-inf'))
        t = temps[rows]
        greedy = logits.argmax(-1, keepdim=True) if (t == 0).any() else None
        if greedy is None or (t > 0).any():
            logits = logits / t.masked_fill(t == 0, 1.0)[:, None]  # greedy rows take argmax below
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float('-inf'))
            if top_p < 1.0:  # nucleus: the smallest set of tokens whose probability reaches top_p
                sorted_logits, order = torch.sort(logits, descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop = cum - sorted_logits.softmax(-1) >= top_p  # keeps the first token always
                logits = logits.masked_fill(drop.scatter(1, order, drop), float('-inf'))
            u = rand.draw(finished)[rows]
            nxt = sample_tokens(logits.softmax(-1), u=u)
            nxt = nxt if greedy is None else torch.where((t > 0)[:, None], nxt, greedy)
        else:
            nxt = greedy
        nxt = torch.where(done[:, None], torch.zeros_like(nxt), nxt)
        if rules is not None:
            rules.update(nxt)
        done |= nxt.squeeze(1) == end_token
        finished[rows] = done
        out[rows, pos] = nxt.squeeze(1)
        pos += 1
        if done.all():
            break
        if done.sum() * 2 >= len(done) and cache is not None:  # compact: keep the unfinished rows only
            keep = ~done
            rows, nxt, done = rows[keep], nxt[keep], done[keep]
            cache = [(k[keep], v[keep]) for k, v in cache]
            if rules is not None:
                rules.keep(keep)
        logits, _ = model(nxt, cache=cache, pos=pos - 1)
    return out[:, :pos]


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


# the generator's grade posterior joins the encoders' as a geometric mean of the two, log-weight
# GENERATOR_WEIGHT each way, over the grades the encoders give at least GENERATOR_FLOOR (the generator is
# asked 11 of the 24 grades on Kilter val, not all, for the same figures): chosen on Kilter val (README)
GENERATOR_WEIGHT, GENERATOR_FLOOR = 0.5, 0.01


class GeneratorGrades(nn.Module):
    """The route generator read backwards, as a grade model, by Bayes' rule:
    p(grade | holds, board, angle) is proportional to p(holds | board, angle, grade), the GPT's
    likelihood of the route with that grade token in its prefix, times p(grade | board, angle), the
    grades of the training split at that board and angle (add-one counts). It learns from every
    route, graded or not, and from another objective than the encoder, so the two err apart."""

    def __init__(self, gpt, meta, chunk=1024, fast=True):
        super().__init__()
        self.gpt, self.chunk = gpt, chunk
        # fast: its matmuls in bfloat16 where that is fast (bf16_is_fast): half the time on an AMX CPU, the
        # val figures of both boards unchanged (README); False: float32, exactly route_nll's numbers
        self.fast = fast
        grammar = Grammar(meta)  # the one home of the board, angle and grade tokens
        self.grade_min, self.n_grades = MIN_DIFFICULTY, len(GRADES)
        self.register_buffer('grade_token', torch.tensor([grammar.grade_token[d] for d, _, _ in GRADES]))
        # log_prior[index[board token], index[angle token]]: the tokens at positions 0 and 1 of the encoder's input
        boards, angles = list(grammar.token_board), list(grammar.token_angle)
        index = np.full(grammar.vocab_size, -1)
        index[boards], index[angles] = np.arange(len(boards)), np.arange(len(angles))
        train = meta['splits']['train']
        rows = [(grammar.board_token[b], grammar.angle_token.get(None if a is None else int(a), grammar.angle_token[None]), d)
                for b, a, d in zip(train['board'], train['angle'], train['difficulty']) if d is not None]
        counts = np.ones((len(boards), len(angles), self.n_grades))
        if rows:  # counted at once, not row by row: this runs at every start of the page
            board_t, angle_t, d = (np.array(column) for column in zip(*rows))
            np.add.at(counts, (index[board_t], index[angle_t], font_grade(d) - MIN_DIFFICULTY), 1)
        self.register_buffer('index', torch.from_numpy(index))
        self.register_buffer('log_prior', torch.tensor(np.log(counts / counts.sum(-1, keepdims=True)), dtype=torch.float32))

    @torch.no_grad()
    def log_probs(self, idx, asked):
        """idx (B, T) the encoder's inputs (<board> <angle> holds, padded with 0), asked (B, n_grades)
        bool: the grades to weigh -> (B, n_grades) log-posterior over the asked grades (-inf elsewhere)."""
        B, T = idx.shape
        length = (idx != 0).sum(1)
        seq = torch.zeros(B, T + 2, dtype=torch.long, device=idx.device)  # <board> <angle> <grade> holds <end>
        seq[:, :2], seq[:, 3:T + 1] = idx[:, :2], idx[:, 2:]
        seq[torch.arange(B, device=idx.device), length + 1] = END
        y = seq[:, 1:].masked_fill(seq[:, 1:] == 0, -1)
        y[:, :CONDITIONING - 1] = -1  # the conditioning tokens are given, not predicted
        with torch.autocast(idx.device.type, dtype=torch.bfloat16, enabled=self.fast and bf16_is_fast(str(idx.device))):
            loglik = self.loglik(seq, y, length, asked)
        out = torch.full((B, self.n_grades), float('-inf'), device=idx.device)
        row, grade = asked.nonzero(as_tuple=True)
        out[row, grade] = loglik + self.log_prior[self.index[idx[row, 0]], self.index[idx[row, 1]], grade]
        return out.log_softmax(-1)

    def loglik(self, seq, y, length, asked):
        """log p(holds | board, angle, grade) of every asked (route, grade) pair, in asked.nonzero()'s order."""
        row, grade = asked.nonzero(as_tuple=True)
        order = length[row].argsort(stable=True)  # chunks of routes of like length share little padding
        row, grade = row[order], grade[order]
        loglik = torch.empty(len(row), device=seq.device)
        for i in range(0, len(row), self.chunk):  # one (route, grade) pair per row
            r, g = row[i:i + self.chunk], grade[i:i + self.chunk]
            x = seq[r, :-1].clone()
            x[:, 2] = self.grade_token[g]
            n = int(length[r].max()) + 1  # trim the padding the chunk shares
            loglik[i:i + self.chunk] = -self.gpt.sequence_nll(x[:, :n], y[r, :n])
        return torch.empty_like(loglik).scatter_(0, order, loglik)  # back to asked's order


class GradeEnsemble(nn.Module):
    """Several grade models (seeds) as one: the mean of their grade distributions, and its
    median; with a generator (GeneratorGrades), that mean joined with the generator's posterior
    (GENERATOR_WEIGHT, GENERATOR_FLOOR). It answers grades / embed / log_probs / median like a
    single GradeEncoder; embed is the encoders' alone.
    batched: the members run as one call (torch.func.vmap over their stacked weights), which
    saves the launches of a call per member on a GPU; on a 2-core CPU, five Kilter-size members
    one by one were as fast or faster (15 routes: 95 vs 136 ms; 512: 4.7 vs 5.0 s), so there
    they run one by one. Both give the same grades."""

    def __init__(self, members, batched=False, generator=None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.generator = generator
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
        """The encoders' mean distribution (no generator: it reads the route, not pooled)."""
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
        """-> (log-probabilities (B, n_grades), pooled (B, C)): the encoders' mean, joined with
        the generator's posterior where there is one."""
        pooled = self.embed(idx, angle)
        logp = self.log_probs(pooled)
        if self.generator is None:
            return logp, pooled
        asked = logp.exp() >= GENERATOR_FLOOR
        asked[torch.arange(len(asked)), logp.argmax(-1)] = True  # never none
        # the generator shares out the encoders' mass on the asked grades; the others keep the encoders' own
        mass = logp.masked_fill(~asked, float('-inf')).logsumexp(-1, keepdim=True)
        gen = self.generator.log_probs(idx, asked) + mass
        joined = torch.where(asked, (1 - GENERATOR_WEIGHT) * logp + GENERATOR_WEIGHT * gen, logp)
        return joined.log_softmax(-1), pooled

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


def join_generator(grader, gpt, meta):
    """A grader (load_grader) joined by the grade posterior of gpt (load_generator, trained on the
    same dataset): the grade model grade.py, the page and evaluate.py grade with. The members are
    shared, not copied; paths lists the generator's checkpoint after theirs. Guided sampling
    keeps the grader alone: the generator's posterior costs a forward pass per grade asked."""
    members = list(grader.members) if isinstance(grader, GradeEnsemble) else [grader]
    device = next(grader.parameters()).device
    joined = GradeEnsemble(members, batched=getattr(grader, 'batched', False), generator=GeneratorGrades(gpt, meta))
    joined.paths = grader.paths + [gpt.path]
    return joined.to(device).eval()


# -----------------------------------------------------------------------------
# batched use of trained models

@torch.no_grad()
def grade_routes(model, inputs, angles, batch_size=128):
    """Grade many routes at once. inputs: token lists, <board> <angle> holds (routes.encoder_input);
    angles: degrees, NaN or None where unknown. -> dict of numpy arrays: difficulty (N,), the
    predicted median; probs (N, n_grades) over grades grade_min..; embedding (N, C), the pooled
    vector (what Fréchet distances compare). Routes are batched by length, so that little
    padding is computed. The model is left in the mode it was in."""
    angles = torch.tensor([math.nan if a is None else float(a) for a in angles], dtype=torch.float32)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in inputs], kind='stable')
    out = dict(difficulty=[], probs=[], embedding=[])
    for i in range(0, len(inputs), batch_size):
        chunk = order[i:i + batch_size]
        x = torch.from_numpy(pad([inputs[j] for j in chunk])).to(device)
        logp, pooled = model.grades(x, angles[chunk].to(device))
        probs = logp.exp()
        for key, value in (('difficulty', model.median(probs)), ('probs', probs), ('embedding', pooled)):
            out[key].append(value.float().cpu().numpy())
    model.train(was_training)
    if not out['difficulty']:
        return dict(difficulty=np.zeros(0), probs=np.zeros((0, model.n_grades)), embedding=np.zeros((0, 0)))
    result = {}
    for key, parts in out.items():
        values = np.concatenate(parts).astype(np.float64)
        result[key] = np.empty_like(values)
        result[key][order] = values  # back to the order the routes came in
    return result


@torch.no_grad()
def route_nll(model, sequences, batch_size=256, blocked=None):
    """Each route's summed negative log-likelihood of its holds and <end> given its conditioning
    tokens (the generator's loss, per route) -> numpy (N,). blocked: (V,) bool, tokens taken out of
    every step's distribution (a wall's missing holds), the rest renormalized, as the decoder's
    mask does when sampling."""
    device = model.lm_head.weight.device
    blocked = None if blocked is None else torch.as_tensor(blocked, device=device)
    order = np.argsort([len(s) for s in sequences], kind='stable')  # batches of similar length: little padding
    out = np.zeros(len(sequences))
    for i in range(0, len(sequences), batch_size):
        chunk = [sequences[j] for j in order[i:i + batch_size]]
        x = torch.from_numpy(pad([s[:-1] for s in chunk])).to(device)
        y = torch.from_numpy(pad([[-1] * (CONDITIONING - 1) + s[CONDITIONING:] for s in chunk], fill=-1)).to(device)
        out[order[i:i + batch_size]] = model.sequence_nll(x, y, blocked).cpu().numpy()
    return out


# guided sampling's defaults, for every script that guides: up to best_of candidates a route, at_once
# first and then doubled (candidate_rounds), a route stopping once one is within accept grades of the
# asked grade (chosen on Kilter val prompts, judged by a second grade model: README, Speed)
BEST_OF, AT_ONCE, ACCEPT = 8, 1, 0.5


def candidate_rounds(best_of, at_once):
    """The candidates a guided prompt draws round by round within its best_of: at_once first, then
    as many again as it has (1, 1, 2, 4 for 1 of 8); all best_of in one round where at_once is 0 or
    not below best_of. The first is what a batch of prompts is sized by."""
    sizes = [at_once if 0 < at_once < best_of else best_of]
    while sum(sizes) < best_of:
        sizes.append(min(sum(sizes), best_of - sum(sizes)))
    return sizes


def guide_rule(best_of, at_once, accept):
    """The guided rule in words, as the scripts print it."""
    sizes = candidate_rounds(best_of, at_once)
    return f"best of {best_of}" + (f", drawn {'+'.join(map(str, sizes))} until one is within {accept:g} grades"
                                   if len(sizes) > 1 else '')


def check_sampling(temperature, top_k, top_p, best_of=1, tolerance=1.0, at_once=0, accept=0.5):
    """Sampling settings sample_routes() can use, or a one-line error (scripts call it before
    loading a model, so a mistake costs nothing)."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise InputError(f"temperature must be a number >= 0 (0: always the likeliest hold), got {temperature!r}")
    if not (isinstance(top_k, int) and top_k >= 0):
        raise InputError(f"top_k must be a whole number >= 0 (0: off), got {top_k!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise InputError(f"top_p must be in (0, 1] (1: off), got {top_p!r}")
    if not (isinstance(best_of, int) and 1 <= best_of <= 64):
        raise InputError(f"best_of must be a whole number 1..64, got {best_of!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise InputError(f"tolerance must be a number of grades >= 0 (a large one: never draw again), got {tolerance!r}")
    if not (isinstance(at_once, int) and 0 <= at_once <= 64):
        raise InputError(f"at_once must be a whole number 0..64 (0: all best_of candidates at once), got {at_once!r}")
    if not (isinstance(accept, (int, float)) and accept >= 0):
        raise InputError(f"accept must be a number of grades >= 0, got {accept!r}")


def sample_routes(model, grammar, prompts, required=None, temperature=1.0, top_k=0, top_p=1.0, generator=None,
                  grader=None, best_of=1, known=None, max_rounds=4, tolerance=1.0, walls=None, at_once=0, accept=0.5):
    """Routes for prompts (board, angle, grade), one each: angle None where the board's data has no
    angles, grade an integer difficulty or None. required: per prompt, holds [(placement, role)]
    the route must contain (a partial route to complete), or None. Every route is decoded under its
    board's grammar, so every one is valid. walls: per prompt, the routes.Wall whose holds alone
    its route may use (None: the whole board), kept by the decoder's mask at every step.

    Guided (grader given, best_of K > 1): candidates are drawn for every prompt, graded, and the one
    the grader puts closest to the asked grade is kept (ties: the first drawn; with no grade asked:
    the first drawn). The work goes where it pays: a prompt draws at_once A candidates first (0 or
    A >= K: all K at once), then as many again as it has (A, A, 2A, 4A, ... up to K in all), and
    stops as soon as its closest is within accept of the asked grade (difficulty units, one Font
    grade each): only the prompts still missing draw again, and few rounds are run. A prompt whose
    closest of those K is still more than tolerance from it gets K more, up to max_rounds rounds of
    K in all: rare grades need more tries, common ones never pay for them. known (anything with
    contains(board, holds), e.g. metrics.ClimbIndex): candidates that are known climbs are dropped and, where a prompt has none
    left, drawn again, also up to max_rounds rounds; after that the copy is kept with copy=True.
    -> (routes, stats): routes are dicts of board, angle, grade, holds, tokens, copy, and
    predicted (the grader's difficulty) where graded; stats counts candidates drawn, copies
    (candidates dropped as known climbs), more (times a prompt drew again within its K: none of its
    candidates within accept) and redrawn (prompts given another round of K)."""
    job = dict(prompts=prompts, required=required, walls=walls, temperature=temperature, generator=generator,
               best_of=best_of, at_once=at_once, accept=accept)
    return sample_batch(model, grammar, [job], top_k, top_p, grader, known, max_rounds, tolerance)[0]


def sample_batch(model, grammar, jobs, top_k=0, top_p=1.0, grader=None, known=None, max_rounds=4, tolerance=1.0):
    """sample_routes for several requests at once: each job is a dict of sample_routes'
    per-request arguments (prompts; optional required, walls, temperature, generator, best_of,
    at_once, accept). -> [(routes, stats)], one per job, each what sample_routes gives it alone."""
    sampler = Sampler(model, grammar, top_k, top_p, grader, known, max_rounds, tolerance)
    for job in jobs:
        sampler.add(job)
    done = {}
    while sampler.jobs:
        done.update((id(job), result) for job, result in sampler.step())
    return [done[id(job)] for job in jobs]


class Sampler:
    """Guided sampling for requests that come and go (serve.py's continuous batching): add() a
    job at any time; step() runs one round of every job in it, each at its own round, drawing all
    their candidates in one batch (each job's rows from its own generator) and grading them in
    one call, and returns the jobs that finished, with their (routes, stats). A job's rounds depend
    on its own candidates only, so it gets exactly what sample_routes gives it alone, whoever
    shares its rounds (up to the last bits of floating point in batches of another shape)."""

    def __init__(self, model, grammar, top_k=0, top_p=1.0, grader=None, known=None, max_rounds=4, tolerance=1.0):
        self.model, self.grammar, self.top_k, self.top_p = model, grammar, top_k, top_p
        self.grader, self.known, self.max_rounds, self.tolerance = grader, known, max_rounds, tolerance
        self.jobs = []  # the jobs not finished, each with its state

    def add(self, job):
        """Check a job (an InputError names what is wrong with it, and nothing is added) and take it in."""
        k, f, accept = job.get('best_of', 1), job.get('at_once', 0), job.get('accept', 0.5)
        check_sampling(job.get('temperature', 1.0), self.top_k, self.top_p, k, self.tolerance, f, accept)
        if k > 1 and self.grader is None:
            raise InputError("best_of > 1 needs a grade model to choose with")
        n = len(job['prompts'])
        required, walls = job.get('required') or [[] for _ in range(n)], job.get('walls') or [None] * n
        for (board, _, _), holds, wall in zip(job['prompts'], required, walls):
            self.grammar.check_prompt(board, holds)
            self.grammar.check_on_wall(wall, holds)
        sizes = candidate_rounds(k, f)
        plan = [(m, accept) for m in sizes[:-1]] + [(sizes[-1], self.tolerance)] + [(k, self.tolerance)] * (self.max_rounds - 1)
        self.jobs.append(dict(job=job, required=required, walls=walls, plan=plan, first_k=len(sizes), round=0,
                              candidates=[[] for _ in range(n)], fallback=[None] * n, pending=list(range(n)),
                              stats=dict(drawn=0, copies=0, more=0, redrawn=0)))

    def closest(self, state, i):  # prompt i's candidate nearest its asked grade (min: the first of ties), how far
        asked = state['job']['prompts'][i][2]
        if asked is None:
            return state['candidates'][i][0], 0.0
        best = min(state['candidates'][i], key=lambda r: abs(r['predicted'] - asked))
        return best, abs(best['predicted'] - asked)

    def grade(self, routes):  # the grader's difficulty of each route, kept on it
        if self.grader is not None and routes:
            inputs, angles = [encoder_input(r['tokens']) for r in routes], [r['angle'] for r in routes]
            for r, d in zip(routes, grade_routes(self.grader, inputs, angles)['difficulty']):
                r['predicted'] = float(d)

    def step(self):
        rows, fresh = [], []  # rows: (state, prompt) for every candidate of this round, each job's together
        for state in self.jobs:
            if state['round'] and state['pending']:  # the rounds before first_k make up the first K
                state['stats']['more' if state['round'] < state['first_k'] else 'redrawn'] += len(state['pending'])
            rows += [(state, i) for i in state['pending'] for _ in range(state['plan'][state['round']][0])]
        drawn = _draw(self.model, self.grammar, [s['job']['prompts'][i] for s, i in rows],
                      [s['required'][i] for s, i in rows], [float(s['job'].get('temperature', 1.0)) for s, _ in rows],
                      self.top_k, self.top_p, [s['job'].get('generator') for s, _ in rows],
                      [s['walls'][i] for s, i in rows]) if rows else []
        for (state, i), route in zip(rows, drawn):
            state['stats']['drawn'] += 1
            if self.known is not None and self.known.contains(route['board'], route['holds']):
                state['stats']['copies'] += 1
                state['fallback'][i] = state['fallback'][i] or dict(route, copy=True)
            else:
                fresh.append(dict(route, copy=False))
                state['candidates'][i].append(fresh[-1])
        self.grade(fresh)
        finished = []
        for state in self.jobs:
            within, guided = state['plan'][state['round']][1], self.grader is not None and state['job'].get('best_of', 1) > 1
            state['pending'] = [i for i in state['pending'] if not state['candidates'][i] or
                                (guided and self.closest(state, i)[1] > within)]
            state['round'] += 1
            state['done'] = not state['pending'] or state['round'] == len(state['plan'])
            finished += [state] if state['done'] else []
        self.jobs = [s for s in self.jobs if not s['done']]
        copies = [(s, i) for s in finished for i, c in enumerate(s['candidates']) if not c]
        for s, i in copies:  # every candidate was a known climb: keep one, marked
            s['candidates'][i].append(s['fallback'][i])
        self.grade([s['fallback'][i] for s, i in copies])
        results = []
        for s in finished:
            routes = [c[0] for c in s['candidates']] if self.grader is None else \
                [self.closest(s, i)[0] for i in range(len(s['candidates']))]
            results.append((s['job'], (routes, s['stats'])))
        return results


def _draw(model, grammar, prompts, required, temperature, top_k, top_p, generator, walls=None):
    """One batch of constrained samples, decoded and checked."""
    device = model.lm_head.weight.device
    prefix = torch.tensor([grammar.prefix(*p) for p in prompts], device=device)
    rules = DecodingRules(grammar, [(p[0], list(holds)) for p, holds in zip(prompts, required)], device=device,
                          walls=walls)
    tokens = generate(model, prefix, rules, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    routes = []
    for row, wall in zip(tokens.tolist(), walls or [None] * len(prompts)):
        row = row[:row.index(END) + 1]
        route = grammar.decode(row)
        grammar.validate(route['board'], route['holds'])  # valid by construction; checked anyway, it is cheap
        grammar.check_on_wall(wall, route['holds'])
        routes.append(dict(route, tokens=row))
    return routes


def curve_angles(grammar, board):
    """The angles a grade curve covers: the board's, or [None] on a board whose data has none."""
    spec = grammar.board(board)
    return spec['angles'] if spec['angle_known'] else [None]


def grade_curves(grader, grammar, routes):
    """Routes [(board, holds)] each graded at every angle of its board (curve_angles), in one
    batched call -> per route [(angle, difficulty, probs)], most climbs being logged at a few
    angles only."""
    inputs, angles, sizes = [], [], []
    for board, holds in routes:
        mine = curve_angles(grammar, board)
        inputs += [encoder_input(grammar.encode(board, a, None, holds)) for a in mine]
        angles += mine
        sizes.append(len(mine))
    graded = grade_routes(grader, inputs, angles)
    rows = list(zip(angles, graded['difficulty'].tolist(), graded['probs']))
    ends = np.cumsum(sizes)
    return [rows[end - size:end] for size, end in zip(sizes, ends)]


def grade_curve(grader, grammar, board, holds):
    """One route's grade_curves."""
    return grade_curves(grader, grammar, [(board, holds)])[0]
