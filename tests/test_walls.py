"""Your wall: a board size and the hold sets on it. prepare.py carries them, the decoder keeps to
them, the nearest known climb fits them, the lights use the size's LEDs. The checks below work
from the databases themselves (sqlite3), not from the library's own Wall."""
import json
import os
import random
import sqlite3

import numpy as np
import pytest
import torch

import lights as L
from conftest import error_line, make_aurora_db, run, shared
from fixtures import SETS, SMALL, TOO_SMALL, db_wall, grid, set_of, small_led
from engine import sample_routes
from metrics import ClimbIndex
from model import GPT, ModelConfig
from routes import SPLITS, DecodingRules, END, Grammar, InputError, block_size, fits_wall, load_meta, load_split


def tiny_grammar(tiny):
    meta = load_meta(os.path.join(tiny['root'], 'tiny'))
    return Grammar(meta), meta


def random_gpt(grammar, seed=0):
    torch.manual_seed(seed)
    return GPT(ModelConfig(vocab_size=grammar.vocab_size, block_size=block_size(grammar.meta), n_layer=1, n_head=2,
                           n_embd=16)).eval()


# -----------------------------------------------------------------------------
# what prepare.py carries

def test_prepare_carries_each_size_and_set(tiny):
    g, meta = tiny_grammar(tiny)
    b = meta['boards'][0]
    assert b['size'] == 10 and [s['id'] for s in b['sizes']] == [10, 11, 12]
    assert [(s['id'], s['name']) for s in b['sets']] == sorted(SETS.items())
    displayable = {p for p, _, _, _ in grid()[1:]}  # the first grid hole has no LED on size 10
    assert {p for p, _, _ in b['holds']} == displayable
    assert b['hold_set'] == {p: set_of(i) for i, (p, _, _, _) in enumerate(grid()) if p in displayable}
    small = next(s for s in b['sizes'] if s['id'] == SMALL['id'])
    left, right, bottom, top = SMALL['edges']
    inside = {p: small_led(i) for i, (p, _, x, y) in enumerate(grid()) if left < x < right and bottom < y < top}
    assert set(small['holds']) == set(inside) and small['leds'] == inside
    assert small['leds'] != {p: pos for p, pos in b['sizes'][0]['leds'].items() if p in inside}  # its own numbering
    too_small = next(s for s in b['sizes'] if s['id'] == TOO_SMALL['id'])
    assert too_small['leds'] == {} and len(too_small['holds']) == 1  # no LED rows: the size's edges say
    # per route: the sizes it fits and the sets it uses, worked out here from its holds
    for split in SPLITS:
        rows = load_split(os.path.join(tiny['root'], 'tiny'), meta, split)
        for tokens, sizes, sets in zip(rows['tokens'], rows['sizes'], rows['sets']):
            holds = {p for p, _ in g.decode(tokens)['holds']}
            assert set(sizes) == {s['id'] for s in b['sizes'] if holds <= set(s['holds'])}
            assert set(sets) == {b['hold_set'][p] for p in holds}
    assert 'walls of' in tiny['stdout'] and "size 11 '4 x 5'" in tiny['stdout'] and "only set 1 'Bolt Ons'" in tiny['stdout']


def test_walls_by_id_or_name(tiny):
    g, meta = tiny_grammar(tiny)
    whole = g.wall('tiny')
    assert whole.whole and whole.placements == {p for p, _, _ in meta['boards'][0]['holds']}
    by_name = g.wall('tiny', '4 X 5', 'bolt ons')
    assert by_name.key == g.wall('tiny', 11, [1]).key == g.wall('tiny', '11', '1').key
    assert by_name.placements == db_wall(tiny['db'], 11, {1}) & whole.placements
    assert by_name.title == 'Tiny Layout 4 x 5, Bolt Ons' and not by_name.whole
    assert g.wall('tiny', '', 'Bolt Ons, Screw Ons').placements == whole.placements


@pytest.mark.parametrize('size, sets, message', [
    ('9 x 9', '', "Tiny Layout has no size '9 x 9': its sizes are 10 '6 x 8', 11 '4 x 5', 12 '1 x 2'"),
    ('', 'Wood', "Tiny Layout has no hold set 'Wood': its hold sets are 1 'Bolt Ons', 2 'Screw Ons'"),
    (12, '', "the wall Tiny Layout 1 x 2 has 1 of this board's holds; a route needs at least 3"),
])
def test_bad_walls_name_what_is_there(tiny, size, sets, message):
    g, _ = tiny_grammar(tiny)
    with pytest.raises(InputError) as e:
        g.wall('tiny', size, sets)
    assert message in str(e.value) and '\n' not in str(e.value)


def test_a_real_climb_on_the_wall_fits_it(tiny):
    """Wall.fits (from what prepare stored) agrees with the holds checked against the database."""
    g, meta = tiny_grammar(tiny)
    rows = load_split(os.path.join(tiny['root'], 'tiny'), meta, 'train')
    for size, sets in ((11, None), (10, {1}), (11, {1})):
        on = db_wall(tiny['db'], size, sets)
        fit = fits_wall(rows, g.wall('tiny', size, sorted(sets) if sets else ''))
        expected = [all(p in on for p, _ in g.decode(t)['holds']) for t in rows['tokens']]
        assert fit.tolist() == expected and 0 < sum(expected)


# -----------------------------------------------------------------------------
# generation keeps to the wall, by the decoder's mask

def test_rules_keep_every_route_on_the_wall_and_allow_every_real_one(tiny):
    g, meta = tiny_grammar(tiny)
    rows = load_split(os.path.join(tiny['root'], 'tiny'), meta, 'train')
    wall = g.wall('tiny', 11, 'Bolt Ons')
    on = db_wall(tiny['db'], 11, {1})
    # uniformly random allowed tokens: every route ends on the wall
    B = 400
    rules = DecodingRules(g, [('tiny', [])] * B, walls=[wall] * B)
    gen, seqs = torch.Generator().manual_seed(0), [[] for _ in range(B)]
    for _ in range(45):
        nxt = torch.multinomial(rules.mask().float(), 1, generator=gen)
        rules.update(nxt)
        for s, t in zip(seqs, nxt.view(-1).tolist()):
            if not s or s[-1] != END:
                s.append(t)
    for s in seqs:
        r = g.decode(g.prefix('tiny', 40, 20) + s)
        g.validate('tiny', r['holds'])
        assert {p for p, _ in r['holds']} <= on
    # and the rules forbid nothing a real route that fits the wall does
    fitting = [g.decode(t) for t, ok in zip(rows['tokens'], fits_wall(rows, wall)) if ok]
    assert fitting
    rules = DecodingRules(g, [('tiny', [])] * len(fitting), walls=[wall] * len(fitting))
    seqs = [g.hold_tokens('tiny', r['holds']) + [END] for r in fitting]
    for step in range(max(map(len, seqs))):
        nxt = torch.tensor([s[step] if step < len(s) else END for s in seqs])
        assert rules.mask()[torch.arange(len(seqs)), nxt].all(), f'step {step}: a route that fits the wall was forbidden'
        rules.update(nxt[:, None])


def test_sampling_on_a_wall_with_a_prompt(tiny):
    g, meta = tiny_grammar(tiny)
    wall = g.wall('tiny', 11)
    on = db_wall(tiny['db'], 11)
    prompt = [(sorted(on)[0], 'start')]

    routes, _ = sample_routes(random_gpt(g), g, [('tiny', 40, 20)] * 50, [prompt] * 50,
                              generator=torch.Generator().manual_seed(1), walls=[wall] * 50)
    for r in routes:
        assert {p for p, _ in r['holds']} <= on and set(prompt) <= set(r['holds'])
    off = sorted({p for p, _, _ in meta['boards'][0]['holds']} - on)[0]
    with pytest.raises(InputError, match=f'hold p{off} is not on the wall Tiny Layout 4 x 5'):
        sample_routes(random_gpt(g), g, [('tiny', 40, 20)], [[(off, 'start')]], walls=[wall])


def test_nearest_known_climb_fits_the_wall(tiny):
    g, meta = tiny_grammar(tiny)
    folder = os.path.join(tiny['root'], 'tiny')
    rows = [load_split(folder, meta, s) for s in SPLITS]
    index = ClimbIndex(g, rows)
    wall = g.wall('tiny', 11)
    on = db_wall(tiny['db'], 11)
    rng = random.Random(0)
    climbs = [g.decode(t)['holds'] for r in rows for t in r['tokens']]
    for holds in rng.sample(climbs, 30):
        anywhere, mine = index.nearest('tiny', holds), index.nearest('tiny', holds, wall=wall)
        assert mine['distance'] >= anywhere['distance']
        best = min((h for h in climbs if {p for p, _ in h} <= on),
                   key=lambda h: 1 - len(set(h) & set(holds)) / len(set(h) | set(holds)))
        assert mine['distance'] == pytest.approx(1 - len(set(best) & set(holds)) / len(set(best) | set(holds)))


# -----------------------------------------------------------------------------
# the scripts

def test_sample_and_grade_on_a_wall(tmp_path):
    db = str(tmp_path / 'tiny.db')
    make_aurora_db(db)
    con = sqlite3.connect(db)
    con.executemany("UPDATE placement_roles SET led_color = ? WHERE id = ?",
                    [(c, i) for c, i in zip(('00FF00', '00FFFF', 'FF00FF', 'FFA500'), (12, 13, 14, 15))])
    con.commit()
    con.close()
    data = str(tmp_path)
    run('prepare.py', 'config/tiny.py', f'--db={db}', f'--data_root={data}')
    run('train_gen.py', 'config/tiny.py', f'--data_root={data}', f'--out_dir={tmp_path}/gen', '--max_iters=4',
        '--eval_interval=2')
    base = ['sample.py', 'config/tiny.py', f'--data_root={data}', f'--out_dir={tmp_path}/gen',
            f'--grade_dir={tmp_path}/none']
    proc = run(*base, '--size=4 x 5', '--sets=Bolt Ons', '--num_samples=40', '--jsonl', '--lights')
    on = db_wall(db, 11, {1})
    leds = {p: small_led(i) for i, (p, _, _, _) in enumerate(grid())}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        holds = [(int(p), int(r)) for p, r in (part.split('r') for part in record['frames'].split('p')[1:])]
        assert {p for p, _ in holds} <= on and record['wall'] == 'Tiny Layout 4 x 5, Bolt Ons'
        positions = []  # API v3: low byte, high byte, colour per hold, after the frame header and command
        for frame in record['lights']:
            data_bytes = bytes.fromhex(frame)[5:-1]
            positions += [data_bytes[i] | data_bytes[i + 1] << 8 for i in range(0, len(data_bytes), 3)]
        assert sorted(positions) == sorted(leds[p] for p, _ in holds)
    off = sorted({p for p, _, _, _ in grid()[1:]} - on)[0]
    proc = run(*base, '--size=11', '--sets=1', f'--prompt=p{off}r12', check=False)
    assert f'hold p{off} is not on the wall Tiny Layout 4 x 5, Bolt Ons' in error_line(proc)
    for args, message in ((['--size=9 x 9'], "has no size '9 x 9'"), (['--sets=Wood'], "has no hold set 'Wood'"),
                          (['--size=12'], 'a route needs at least 3')):
        assert message in error_line(run(*base, *args, check=False))
    proc = run('grade.py', 'config/tiny.py', f'--data_root={data}', f'--checkpoint={tmp_path}/none', '--size=11',
               f'--frames=p{off}r12p1014r13p1044r14', '--angle=40', check=False)
    assert f'hold p{off} is not on the wall Tiny Layout 4 x 5' in error_line(proc)


# -----------------------------------------------------------------------------
# the real boards: 1,000 routes a wall, every hold checked against the database

REAL_WALLS = [  # (config, database, layout, size, sets): the walls, and the Tension 12 x 8
    ('kilter', 'kilter.db', 1, 10, None),
    ('kilter', 'kilter.db', 1, 8, None),
    ('kilter', 'kilter.db', 1, 14, None),
    ('kilter', 'kilter.db', 1, 10, [1]),
    ('tension', 'tension.db', 11, 8, None),
]


@pytest.fixture(scope='module')
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp('real')
    for config, source in (('kilter', 'kilter.db'), ('tension', 'tension.db'), ('moonboard', 'moonboard2016.json')):
        run('prepare.py', f'config/{config}.py', f'--db={shared(source)}', f'--data_root={root}')
    return root


def moonboard_sets(path):
    """Each MoonBoard position's set, from the problems that use it: the set mounted for all of them."""
    problems = json.load(open(path))['problems']
    votes = {}
    for p in problems:
        for h in {h for v in p['holds'].values() for h in v}:
            votes.setdefault(h, []).append(set(p['holds_setup']))
    return {h: set.intersection(*sets) for h, sets in votes.items()}


@pytest.mark.parametrize('config, source, layout, size, sets', REAL_WALLS)
def test_real_walls_1000_routes_on_the_wall(real, config, source, layout, size, sets):
    meta = load_meta(real / config)
    g = Grammar(meta)
    wall = g.wall(config, size, sets or '')
    on = db_wall(shared(source), size, set(sets) if sets else None, layout)
    assert wall.placements == on & {p for p, _, _ in meta['boards'][0]['holds']}
    angle = 40 if meta['boards'][0]['angle_known'] else None
    routes, _ = sample_routes(random_gpt(g), g, [(config, angle, 20 + i % 6) for i in range(1000)], temperature=1.5,
                              generator=torch.Generator().manual_seed(size), walls=[wall] * 1000)
    used = {p for r in routes for p, _ in r['holds']}
    assert len(routes) == 1000 and used <= on and len(used) > 0.8 * len(wall.placements)  # all over the wall
    # the lights of a route on it: the leds rows of that size, in the route's order of placements
    con = sqlite3.connect(f'file:{shared(source)}?mode=ro', uri=True)
    route = sorted(routes[0]['holds'])
    position = dict(con.execute("SELECT p.id, l.position FROM placements p JOIN leds l ON l.hole_id = p.hole_id "
                                "WHERE p.layout_id = ? AND l.product_size_id = ?", (layout, size)))
    color = dict(con.execute("SELECT id, led_color FROM placement_roles"))
    codes = meta['boards'][0]['role_codes']
    frames = L.route_packets(wall.lighting(3), route)
    payload = b''.join(f[5:-1] for f in frames)
    assert list(payload) == [x for p, r in route for x in (position[p] & 0xFF, position[p] >> 8,
                                                         L.aurora_color_byte(color[codes[r]], 3))]


def test_real_moonboard_hold_sets(real):
    """Hold Set A + B: the sets follow from the problems; 1,000 routes use only those holds."""
    path = shared('moonboard2016.json')
    meta = load_meta(real / 'moonboard')
    g = Grammar(meta)
    wall = g.wall('moonboard', '', 'Hold Set A 2016,Hold Set B 2016')
    mounted = moonboard_sets(path)
    certain = {h for h, s in mounted.items() if s and s <= {'Hold Set A 2016', 'Hold Set B 2016'}}
    school = {h for h, s in mounted.items() if s == {'Original School Holds 2016'}}
    assert certain <= wall.placements and not school & wall.placements
    assert len(wall.placements - certain) <= 5  # the few positions whose problems disagree
    routes, _ = sample_routes(random_gpt(g), g, [('moonboard', 40, 19 + i % 8) for i in range(1000)], temperature=1.5,
                              generator=torch.Generator().manual_seed(0), walls=[wall] * 1000)
    assert all({p for p, _ in r['holds']} <= wall.placements - school for r in routes)
    rows = load_split(real / 'moonboard', meta, 'train')
    problems = {str(p['site_id']): p for p in json.load(open(path))['problems']}
    fit = fits_wall(rows, wall)
    set_for_ab = np.array([set(problems[c]['holds_setup']) <= {'Hold Set A 2016', 'Hold Set B 2016'} for c in rows['climb_id']])
    assert fit[set_for_ab].mean() > 0.99  # a problem set on A + B alone fits the A + B wall
