"""Grade-guided sampling, grade ensembles, the grade curve and the nearest known climb."""
import os

import numpy as np
import pytest
import torch

from fixtures import setter_of
from engine import _draw, grade_curve, grade_curves, grade_routes, sample_batch, sample_routes
from metrics import ClimbIndex, climb_label, jaccard_distance
from model import GPT, GradeEncoder, GradeEnsemble, ModelConfig, build_grader, grader_args
from routes import SPLITS, Grammar, load_meta, load_split


@pytest.fixture(scope='module')
def tiny_data(tiny):
    folder = os.path.join(tiny['root'], 'tiny')
    meta = load_meta(folder)
    return meta, Grammar(meta), [load_split(folder, meta, s) for s in SPLITS]


def random_gpt(grammar, seed=0):
    torch.manual_seed(seed)
    board = grammar.meta['boards'][0]
    return GPT(ModelConfig(vocab_size=grammar.vocab_size, block_size=board['max_holds'] + 4, n_layer=1, n_head=2,
                           n_embd=16)).eval()


class HoldCountGrader(torch.nn.Module):
    """A stand-in grade model whose opinion is easy to work out: difficulty = 10 + holds."""
    grade_min, n_grades = 10, 24

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def embed(self, idx, angle):
        return (idx[:, 2:] != 0).sum(1, keepdim=True).float()  # <board> <angle> holds: count the holds

    def log_probs(self, pooled):
        grade = (pooled[:, 0].long()).clamp(max=self.n_grades - 1)
        return torch.nn.functional.one_hot(grade, self.n_grades).float().clamp(min=1e-9).log()

    def median(self, probs):
        return self.grade_min + probs.argmax(-1).float()

    def grades(self, idx, angle):
        pooled = self.embed(idx, angle)
        return self.log_probs(pooled), pooled


def test_guided_sampling_keeps_the_candidate_nearest_the_asked_grade(tiny_data):
    meta, grammar, _ = tiny_data
    gpt, grader, K = random_gpt(grammar), HoldCountGrader(), 6
    prompt = grammar.parse('tiny', 'p1002r12p1044r14')
    prompts = [('tiny', 40, g) for g in (14, 17, 20, 25)]
    routes, stats = sample_routes(gpt, grammar, prompts, [prompt] * 4, generator=torch.Generator().manual_seed(3),
                                  grader=grader, best_of=K, tolerance=float('inf'))  # one round: no redraws
    assert stats == dict(drawn=4 * K, copies=0, more=0, redrawn=0)
    # the same generator state draws the same candidates: the chosen one must be nearest the asked grade
    candidates = _draw(gpt, grammar, [p for p in prompts for _ in range(K)], [prompt] * 4 * K, 1.0, 0, 1.0,
                       torch.Generator().manual_seed(3))
    for i, (route, (_, _, asked)) in enumerate(zip(routes, prompts)):
        grammar.validate('tiny', route['holds'])
        assert set(prompt) <= set(route['holds'])
        mine = candidates[i * K:(i + 1) * K]
        scores = [abs(10 + len(c['holds']) - asked) for c in mine]
        assert route['holds'] == mine[int(np.argmin(scores))]['holds']  # argmin: the first of ties
        assert route['predicted'] == 10 + len(route['holds'])
    spread = [abs(r['predicted'] - p[2]) for r, p in zip(routes, prompts)]
    plain, _ = sample_routes(gpt, grammar, prompts, [prompt] * 4, generator=torch.Generator().manual_seed(3))
    assert sum(spread) <= sum(abs(10 + len(r['holds']) - p[2]) for r, p in zip(plain, prompts))


def test_routes_far_from_the_asked_grade_are_drawn_again(tiny_data):
    """A prompt whose candidates all miss the asked grade by more than the tolerance gets another
    round (only that prompt: one without a grade never does), and the route kept is the nearest
    over every round."""
    meta, grammar, _ = tiny_data
    gpt, grader, K = random_gpt(grammar), HoldCountGrader(), 4
    prompts = [('tiny', 40, None), ('tiny', 40, 33)]  # 33 would need 23 holds: never within 0.5
    routes, stats = sample_routes(gpt, grammar, prompts, generator=torch.Generator().manual_seed(5), grader=grader,
                                  best_of=K, max_rounds=3, tolerance=0.5)
    assert stats == dict(drawn=4 * K, copies=0, more=0, redrawn=2)
    generator = torch.Generator().manual_seed(5)  # the same draws, round by round
    first = _draw(gpt, grammar, [p for p in prompts for _ in range(K)], [[]] * 2 * K, 1.0, 0, 1.0, generator)
    hard = first[K:] + [c for _ in range(2) for c in _draw(gpt, grammar, [prompts[1]] * K, [[]] * K, 1.0, 0, 1.0,
                                                             generator)]
    assert routes[0]['holds'] == first[0]['holds']  # no grade asked: the first drawn
    assert routes[1]['holds'] == max(hard, key=lambda c: len(c['holds']))['holds']  # nearest 33: the most holds
    assert routes[1]['predicted'] == 10 + len(routes[1]['holds'])


def test_candidates_come_a_few_at_a_time_until_one_is_within_accept(tiny_data):
    """at_once A of best_of K: a prompt draws A candidates, then as many again as it has, and stops
    as soon as its closest is within accept; only the prompts still missing draw again, K in all;
    the route kept is the nearest of all it drew."""
    meta, grammar, _ = tiny_data
    gpt, grader, K, A = random_gpt(grammar), HoldCountGrader(), 7, 2  # rounds of 2, 2, 3: each doubles, 7 in all
    prompts = [('tiny', 40, g) for g in (13, 14, 15, 16, 33, 33)]  # 33 needs 23 holds: never within 0.5
    routes, stats = sample_routes(gpt, grammar, prompts, generator=torch.Generator().manual_seed(4), grader=grader,
                                  best_of=K, at_once=A, accept=0.5, tolerance=float('inf'))
    generator = torch.Generator().manual_seed(4)  # the same draws, round by round
    drawn, pending, more = [[] for _ in prompts], list(range(len(prompts))), 0
    for r, size in enumerate((2, 2, 3)):
        more += len(pending) if r else 0  # the first round is not "more"
        batch = _draw(gpt, grammar, [prompts[i] for i in pending for _ in range(size)], [[]] * size * len(pending),
                      1.0, 0, 1.0, generator)
        for k, i in enumerate(pending):
            drawn[i] += batch[k * size:(k + 1) * size]
        pending = [i for i in pending if min(abs(10 + len(c['holds']) - prompts[i][2]) for c in drawn[i]) > 0.5]
    assert [len(d) for d in drawn][4:] == [K, K]  # the impossible grade drew all K
    assert min(len(d) for d in drawn) == A  # and some prompt stopped after its first A: the point of it
    assert stats == dict(drawn=sum(map(len, drawn)), copies=0, more=more, redrawn=0)
    for i, route in enumerate(routes):
        scores = [abs(10 + len(c['holds']) - prompts[i][2]) for c in drawn[i]]
        assert route['holds'] == drawn[i][int(np.argmin(scores))]['holds']


def test_a_batch_of_requests_gets_what_each_gets_alone(tiny_data):
    """sample_batch draws several requests' candidates in one batch; each request has its own
    seed, temperature, best_of and prompt, and gets exactly the routes sample_routes gives it alone."""
    meta, grammar, rows = tiny_data
    gpt, index = random_gpt(grammar), ClimbIndex(grammar, rows)
    torch.manual_seed(1)
    grader = build_grader(grader_args(meta, block_size=48, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = grammar.parse('tiny', 'p1002r12p1044r14')
    requests = [dict(prompts=[('tiny', 40, 18)] * 3, seed=7, temperature=1.0, best_of=4, at_once=0, required=None),
                dict(prompts=[('tiny', 30, 22), ('tiny', 30, 23)], seed=8, temperature=1.6, best_of=6, at_once=2,
                     required=[prompt] * 2),
                dict(prompts=[('tiny', 40, None)], seed=7, temperature=0.0, best_of=1, at_once=0, required=None),
                dict(prompts=[('tiny', 50, 26)] * 5, seed=9, temperature=1.2, best_of=3, at_once=1, required=None)]

    def job(r):
        return dict(prompts=r['prompts'], required=r['required'], temperature=r['temperature'], best_of=r['best_of'],
                    at_once=r['at_once'], accept=0.5, generator=torch.Generator().manual_seed(r['seed']))
    alone = [sample_routes(gpt, grammar, r['prompts'], r['required'], r['temperature'], 0, 1.0,
                           torch.Generator().manual_seed(r['seed']), grader, r['best_of'], index, at_once=r['at_once'],
                           accept=0.5) for r in requests]
    together = sample_batch(gpt, grammar, [job(r) for r in requests], grader=grader, known=index)
    assert len(together) == len(requests)
    for (routes_a, stats_a), (routes_b, stats_b) in zip(alone, together):
        assert stats_a == stats_b
        assert [r['holds'] for r in routes_a] == [r['holds'] for r in routes_b]
        assert [r['predicted'] for r in routes_a] == pytest.approx([r['predicted'] for r in routes_b], abs=1e-5)
    assert len({tuple(map(tuple, r['holds'])) for r in together[0][0] + together[3][0]}) > 1  # not one route over


def test_known_climbs_are_not_offered(tiny_data):
    meta, grammar, rows = tiny_data
    index = ClimbIndex(grammar, rows)
    known = grammar.decode(rows[0]['tokens'][0])['holds']

    class EverythingKnown:  # every candidate is a known climb: drawn again, then kept, marked
        def contains(self, board, holds):
            return True
    gpt = random_gpt(grammar)
    prompts = [('tiny', 40, 20)] * 3
    routes, stats = sample_routes(gpt, grammar, prompts, [known] * 3, generator=torch.Generator().manual_seed(0),
                                  known=index)
    assert all(r['holds'] != known or r['copy'] for r in routes)
    routes, stats = sample_routes(gpt, grammar, prompts, generator=torch.Generator().manual_seed(0),
                                  known=EverythingKnown(), max_rounds=2)
    assert stats == dict(drawn=6, copies=6, more=0, redrawn=3) and all(r['copy'] for r in routes)


def test_ensemble_averages_its_members(tiny_data):
    meta, grammar, rows = tiny_data
    args = grader_args(meta, block_size=48, n_layer=1, n_head=2, n_embd=16)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_grader(args).eval())
    ensemble = GradeEnsemble(members).eval()
    inputs = [t[:2] + t[3:-1] for t in rows[0]['tokens'][:20]]
    angles = rows[0]['angle'][:20]
    a, b, both = (grade_routes(m, inputs, angles) for m in (members[0], members[1], ensemble))
    assert np.allclose(both['probs'], (a['probs'] + b['probs']) / 2, atol=1e-6)
    assert not np.allclose(a['probs'], b['probs'])
    median = members[0].median(torch.tensor(both['probs'])).numpy()
    assert np.allclose(both['difficulty'], median, atol=1e-5)
    assert both['embedding'].shape[1] == 2 * a['embedding'].shape[1]


def test_batched_members_grade_as_the_members_one_by_one(tiny_data):
    """The ensemble's members in one vmapped call give each member's own grades (its own
    calibration temperature too), mean for mean, as when they run one after another."""
    meta, grammar, rows = tiny_data
    args = grader_args(meta, block_size=48, n_layer=2, n_head=2, n_embd=16)
    members = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        members.append(build_grader(args).eval())
        with torch.no_grad():  # a fresh head says almost nothing: make each member's opinion its own
            members[-1].head[2].weight.mul_(300)
        members[-1].temperature = 0.8 + 0.3 * seed
    inputs = [t[:2] + t[3:-1] for t in rows[0]['tokens'][:40]]
    angles = rows[0]['angle'][:40]
    one_by_one = grade_routes(GradeEnsemble(members, batched=False).eval(), inputs, angles, batch_size=16)
    batched = GradeEnsemble(members, batched=True).eval()
    assert batched.batched
    together = grade_routes(batched, inputs, angles, batch_size=16)
    for key in ('probs', 'difficulty', 'embedding'):
        assert np.allclose(together[key], one_by_one[key], atol=1e-5), key
    mean = np.mean([grade_routes(m, inputs, angles)['probs'] for m in members], 0)
    assert np.allclose(together['probs'], mean, atol=1e-5)
    assert not np.allclose(grade_routes(members[0], inputs, angles)['probs'], mean, atol=1e-2)


def test_grade_curves_in_one_call_equal_each_alone(tiny_data):
    meta, grammar, _ = tiny_data
    torch.manual_seed(0)
    grader = build_grader(grader_args(meta, block_size=48, n_layer=1, n_head=2, n_embd=16)).eval()
    routes = [('tiny', grammar.parse('tiny', r)) for r in
              ('p1002r12p1014r13p1021r13p1027r13p1044r14', 'p1002r12p1044r14', 'p1014r12p1021r13p1047r14')]
    together = grade_curves(grader, grammar, routes)
    for (board, holds), curve in zip(routes, together):
        alone = grade_curve(grader, grammar, board, holds)
        assert [a for a, _, _ in curve] == [a for a, _, _ in alone] == meta['boards'][0]['angles']
        assert [d for _, d, _ in curve] == pytest.approx([d for _, d, _ in alone], abs=1e-5)
    assert together[0] != together[1]


def test_grade_curve_has_one_row_per_angle(tiny_data):
    meta, grammar, _ = tiny_data
    torch.manual_seed(0)
    grader = build_grader(grader_args(meta, block_size=48, n_layer=1, n_head=2, n_embd=16)).eval()
    holds = grammar.parse('tiny', 'p1002r12p1014r13p1021r13p1027r13p1044r14')
    curve = grade_curve(grader, grammar, 'tiny', holds)
    assert [a for a, _, _ in curve] == meta['boards'][0]['angles']
    single = grade_routes(grader, [grammar.encode('tiny', 40, None, holds)[:2] + grammar.hold_tokens('tiny', holds)], [40])
    assert dict((a, d) for a, d, _ in curve)[40] == pytest.approx(single['difficulty'][0], abs=1e-5)
    assert isinstance(grader, GradeEncoder)


def test_nearest_known_climb(tiny_data):
    meta, grammar, rows = tiny_data
    index = ClimbIndex(grammar, rows)
    tokens, climb_id = rows[1]['tokens'][5], rows[1]['climb_id'][5]
    route = grammar.decode(tokens)
    near = index.nearest('tiny', route['holds'], route['angle'])
    assert near['distance'] == 0 and index.contains('tiny', route['holds'])
    climb = index.climbs[('tiny', frozenset(route['holds']))]
    assert near['climb_id'] == climb['climb_id'] and near['difficulty'] == climb['grades'][route['angle']]
    assert near['setter'] == setter_of(near['climb_id']) and climb_label(near).endswith(f" by {near['setter']}")
    if climb['climb_id'] == climb_id:  # (two climbs may share holds: the index keeps the first)
        assert near['difficulty'] == pytest.approx(rows[1]['difficulty'][5])
    # a changed route: the distance is the least Jaccard distance to any known climb, by brute force
    changed = route['holds'][:-1] + [(1047, 'finish')] if (1047, 'finish') not in route['holds'] else route['holds'][1:]
    near = index.nearest('tiny', changed, None)
    brute = min(jaccard_distance(frozenset(changed), holds) for _, holds in index.climbs)
    assert near['distance'] == pytest.approx(brute) and near['distance'] > 0
    assert not index.contains('tiny', changed)
