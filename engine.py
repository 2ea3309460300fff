"""
Inference with boardgpt's trained models (model.py builds and loads them; this file uses them):

- decoding: sample_tokens and generate, the GPT's batched, key/value-cached, grammar-constrained
  sampler, each request drawing from its own random stream (RowRandom);
- scoring: route_nll (the generator's loss per route) and grade_routes (a grade model's
  distribution, median and embedding for many routes);
- the generator as a grade model: GeneratorGrades, the GPT read backwards by Bayes' rule, and
  join_generator, which sets it beside the grade encoders (what routes are graded with);
- grade curves: a route graded at every angle of its board;
- guided sampling: candidates drawn round by round, graded, the closest to the asked grade kept,
  known climbs dropped (Sampler; sample_routes for one request, sample_batch for several).
"""

import math

import numpy as np
import torch
import torch.nn as nn

from model import GradeEnsemble, bf16_is_fast
from routes import CONDITIONING, END, GRADES, MIN_DIFFICULTY, DecodingRules, Grammar, InputError, encoder_input, font_grade, pad

# -----------------------------------------------------------------------------
# decoding

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
# scoring

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


# -----------------------------------------------------------------------------
# the generator as a grade model

# the generator's grade posterior joins the encoders' as a geometric mean of the two, log-weight
# GENERATOR_WEIGHT each way, over the grades the encoders give at least GENERATOR_FLOOR (the generator is
# asked 11 of the 24 grades on Kilter val, not all, for the same figures): chosen on Kilter val (docs/grade.md)
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
        # val figures of both boards unchanged (docs/grade.md); False: float32, exactly route_nll's numbers
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


class JoinedGrades(nn.Module):
    """A grade model (one GradeEncoder or a GradeEnsemble) joined by the generator's posterior
    (GeneratorGrades): over the grades the encoders give at least GENERATOR_FLOOR, the geometric
    mean of the two, log-weight GENERATOR_WEIGHT each way; every other grade keeps the encoders'
    own probability. It answers grades / embed / median like the grade model; embed is the
    encoders' alone (the generator reads the route, not the pooled vector)."""

    def __init__(self, grader, generator):
        super().__init__()
        self.grader, self.generator = grader, generator
        self.members = list(grader.members) if isinstance(grader, GradeEnsemble) else [grader]
        self.grade_min, self.n_grades = grader.grade_min, grader.n_grades

    def embed(self, idx, angle):
        return self.grader.embed(idx, angle)

    def grades(self, idx, angle):
        """-> (log-probabilities (B, n_grades), pooled (B, C)), the encoders' joined with the generator's."""
        logp, pooled = self.grader.grades(idx, angle)
        asked = logp.exp() >= GENERATOR_FLOOR
        asked[torch.arange(len(asked)), logp.argmax(-1)] = True  # never none
        # the generator shares out the encoders' mass on the asked grades; the others keep the encoders' own
        mass = logp.masked_fill(~asked, float('-inf')).logsumexp(-1, keepdim=True)
        gen = self.generator.log_probs(idx, asked) + mass
        joined = torch.where(asked, (1 - GENERATOR_WEIGHT) * logp + GENERATOR_WEIGHT * gen, logp)
        return joined.log_softmax(-1), pooled

    def median(self, probs):
        return self.grader.median(probs)

    def forward(self, idx, angle, targets=None, weights=None):
        return self.median(self.grades(idx, angle)[0].exp()), None


def join_generator(grader, gpt, meta):
    """A grader (load_grader) joined by the grade posterior of gpt (load_generator, trained on the
    same dataset): the grade model grade.py, the page and evaluate.py grade with. The members are
    shared, not copied; paths lists the generator's checkpoint after theirs. Guided sampling
    keeps the grader alone: the generator's posterior costs a forward pass per grade asked."""
    device = next(grader.parameters()).device
    joined = JoinedGrades(grader, GeneratorGrades(gpt, meta))
    joined.paths = grader.paths + [gpt.path]
    return joined.to(device).eval()


# -----------------------------------------------------------------------------
# grade curves

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


# -----------------------------------------------------------------------------
# guided sampling

# guided sampling's defaults, for every script that guides: up to best_of candidates a route, at_once
# first and then doubled (candidate_rounds), a route stopping once one is within accept grades of the
# asked grade (chosen on Kilter val prompts, judged by a second grade model: docs/speed.md)
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
