"""serve.py's JSON API and page files, against a live server on the tiny board with tiny models."""
import http.client
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing

import pytest

import lights
from conftest import ROOT, error_line, run
from fixtures import ROLE_IDS, SETS, db_wall, make_aurora_db, setter_of, small_led
from routes import ROLE_COLORS, Grammar, load_meta

LED_COLORS = dict(start='00FF00', middle='00FFFF', finish='FF00FF', foot='FFA500')  # the Kilter app's


# what the database says a wall is and how it is lit, read here with SQL rather than with boardgpt's Wall

def db_writes(db, size_id, route, api=3, layout_id=1):
    """The BLE writes (hex) that light a route string on one size: placement -> hole -> that size's
    leds.position, colour placement_roles.led_color of the role, holds in the order they are lit
    (by role in the app's order, then bottom to top, then left to right)."""
    with closing(sqlite3.connect(db)) as con:
        where = {p: (pos, y, x) for p, pos, x, y in con.execute(
            "SELECT p.id, l.position, h.x, h.y FROM placements p JOIN holes h ON h.id = p.hole_id JOIN leds l "
            "ON l.hole_id = p.hole_id WHERE p.layout_id = ? AND l.product_size_id = ?", (layout_id, size_id))}
        roles = {r: (order, colour) for r, order, colour in
                 con.execute("SELECT id, position, led_color FROM placement_roles")}
    holds = sorted(((int(p), int(r)) for p, r in re.findall(r'p(\d+)r(\d+)', route)),
                   key=lambda h: (roles[h[1]][0], where[h[0]][1:]))
    frames = lights.aurora_frames([(where[p][0], roles[r][1]) for p, r in holds], api)
    return [w.hex() for w in lights.ble_writes(frames)]


def placements(route):
    return {int(p) for p in re.findall(r'p(\d+)r\d+', route)}


def served_models(tmp_path_factory):
    """The tiny board with LED colours (the fixture database leaves them out), prepared, and tiny
    models trained on it: built once per session, for this file and test_page.py."""
    root = tmp_path_factory.getbasetemp() / 'serve'
    if (root / 'ready').exists():
        return str(root)
    root.mkdir(exist_ok=True)
    db = str(root / 'tiny.db')
    make_aurora_db(db)
    con = sqlite3.connect(db)
    con.executemany("UPDATE placement_roles SET led_color = ? WHERE id = ?",
                    [(LED_COLORS[r], i) for r, i in ROLE_IDS.items()])
    con.commit()
    con.close()
    common = ['config/tiny.py', f'--data_root={root}', '--max_iters=20', '--eval_interval=10']
    run('prepare.py', 'config/tiny.py', f'--db={db}', f'--data_root={root}')
    run('train_gen.py', *common, f'--out_dir={root}/gen')
    run('train_grade.py', *common, f'--out_dir={root}/grade')
    (root / 'ready').write_text('')
    return str(root)


class Server:
    """serve.py in a subprocess on a free port; its log (stderr) goes to a file, so a chatty
    server never blocks on a full pipe."""

    def __init__(self, log_path, *args, config='config/tiny.py'):
        self.log_path = log_path
        self.log = open(log_path, 'w')
        self.proc = subprocess.Popen([sys.executable, 'serve.py', config, '--port=0', *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=dict(os.environ, OMP_NUM_THREADS='1'))
        line = self.proc.stdout.readline()  # the address, or '' if it stopped
        m = re.search(r'http://127\.0\.0\.1:(\d+)/', line)
        if not m:
            self.stop()
            raise AssertionError(f"serve.py did not start: {line}\n{open(log_path).read()}")
        self.port = int(m.group(1))
        self.url = f'http://127.0.0.1:{self.port}'

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def text_log(self):
        with open(self.log_path) as f:
            return f.read()


def call(port, method, path, body=None, raw=None, headers=None):
    """One request -> (status, JSON or text, headers). raw: bytes sent as they are."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = {'Content-Type': 'application/json'} if data is not None else {}
    sent.update(headers or {})
    conn.request(method, path, body=data, headers=sent)
    res = conn.getresponse()
    payload = res.read()
    conn.close()
    kind = res.getheader('Content-Type', '')
    return res.status, json.loads(payload) if 'json' in kind else payload.decode(), res


def post(port, path, body):
    return call(port, 'POST', path, body)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    root = served_models(tmp_path_factory)
    s = Server(str(tmp_path_factory.mktemp('log') / 'serve.log'), f'--data_root={root}', f'--gen_dir={root}/gen',
               f'--grade_dir={root}/grade', '--timeout=1.5')
    s.grammar = Grammar(load_meta(os.path.join(root, 'tiny')))
    s.db = os.path.join(root, 'tiny.db')
    yield s
    s.stop()


ROUTE = 'p1002r12p1020r13p1029r13p1044r14'  # start, two hands, finish: a complete tiny route
SMALL_ROUTE = 'p1007r12p1013r13p1019r13p1031r14'  # one on the 4 x 5 (size 11), bolt-ons (set 1) only
SMALL = 'Tiny Layout 4 x 5'  # its title; p1002 is below it, p1008 on it but a screw-on


def test_board(server):
    status, info, res = call(server.port, 'GET', '/api/board')
    assert status == 200 and res.getheader('Cache-Control') == 'no-store'
    board = info['boards'][0]
    assert info['dataset'] == 'tiny' and board['name'] == 'tiny' and len(board['holds']) == 47
    assert board['roles'] == ['start', 'middle', 'finish', 'foot'] and board['lights'] is True
    assert board['angles'] == list(range(0, 75, 5)) and board['rules']['max_start'] == 2
    assert info['role_colors'] == ROLE_COLORS and len(info['grades']) == 24
    assert info['models'] == dict(generator=True, grader=1) and info['missing'] == {}
    assert info['bluetooth']['aurora']['filters'] == [{'services': [lights.AURORA_ADVERTISED_UUID]}]
    assert info['bluetooth']['aurora']['writes'][0]['characteristic'] == lights.AURORA_WRITE_UUID


def test_board_walls(server):
    """GET /api/board: every size with its holds and edges, whether it can be lit and whether any
    route fits it; the hold sets, each hold's set and the server's own wall, as the database has them."""
    board = call(server.port, 'GET', '/api/board')[1]['boards'][0]
    sizes = {s['id']: s for s in board['sizes']}
    assert [(s['id'], s['name']) for s in board['sizes']] == [(10, '6 x 8'), (11, '4 x 5'), (12, '1 x 2')]
    assert set(sizes[10]['holds']) == db_wall(server.db, 10) and len(sizes[10]['holds']) == 47
    assert set(sizes[11]['holds']) == db_wall(server.db, 11) and len(sizes[11]['holds']) == 20
    assert sizes[11]['edges'] == [12, 44, 12, 52] and len(sizes[12]['holds']) == 1
    assert [s['lights'] for s in board['sizes']] == [True, True, False]  # size 12 has no LED rows
    assert sizes[10]['problem'] is None and sizes[11]['problem'] is None
    assert "the wall Tiny Layout 1 x 2 has 1 of this board's holds" in sizes[12]['problem']
    assert board['sets'] == [dict(id=i, name=n) for i, n in SETS.items()]
    with closing(sqlite3.connect(server.db)) as con:
        in_db = dict(con.execute("SELECT id, set_id FROM placements WHERE layout_id = 1"))
    assert dict(map(tuple, board['hold_set'])) == {p: in_db[p] for p, _, _ in board['holds']}
    assert board['wall'] == dict(size=10, size_name='6 x 8', sets=None, set_names=None, title='Tiny Layout 6 x 8',
                                 holds=47)


def test_page_files(server):
    for path, kind in (('/', 'text/html'), ('/index.html', 'text/html'), ('/app.js', 'text/javascript'),
                       ('/style.css', 'text/css'), ('/icon.svg', 'image/svg+xml')):
        status, text, res = call(server.port, 'GET', path)
        assert status == 200 and res.getheader('Content-Type').startswith(kind), path
        assert "default-src 'self'" in res.getheader('Content-Security-Policy')
        assert 'http' not in text.replace('http://www.w3.org/2000/svg', ''), f'{path} fetches from elsewhere'
    status, html, _ = call(server.port, 'GET', '/?board=tiny&angle=40&route=p1002r12')  # a shared link
    assert status == 200 and '<script src="/app.js"' in html


def test_generate(server):
    g = server.grammar
    status, out, _ = post(server.port, '/api/generate', dict(board='tiny', angle=35, grade='V5', count=5, seed=7))
    assert status == 200 and len(out['routes']) == 5 and out['seed'] == 7 and out['angle'] == 35
    for r in out['routes']:
        holds = g.parse('tiny', r['route'])
        g.validate('tiny', holds)
        assert sorted(map(tuple, r['holds'])) == sorted(holds) and r['angle'] == 35
        assert r['asked']['v'] == 'V5' and r['predicted']['name'] and 0 <= r['nearest']['distance'] <= 1
    again = post(server.port, '/api/generate', dict(board='tiny', angle=35, grade='V5', count=5, seed=7))[1]
    assert [r['route'] for r in again['routes']] == [r['route'] for r in out['routes']]  # a seed reproduces
    status, out, _ = post(server.port, '/api/generate', dict(angle=40, prompt='p1002r12', best_of=1))  # board unsaid
    assert status == 200 and len(out['routes']) == 6 and all([1002, 'start'] in r['holds'] for r in out['routes'])


def test_complete(server):
    body = dict(board='tiny', angle=40, grade=20, route='p1002r12p1044r14', count=3)
    status, out, _ = post(server.port, '/api/complete', body)
    assert status == 200 and len(out['routes']) == 3
    for r in out['routes']:
        assert [1002, 'start'] in r['holds'] and [1044, 'finish'] in r['holds'] and len(r['holds']) >= 3


def test_grade(server):
    status, out, _ = post(server.port, '/api/grade', dict(board='tiny', route=ROUTE, angle=40))
    assert status == 200 and out['route'] == ROUTE and out['angle'] == 40
    assert [c['angle'] for c in out['curve']] == list(range(0, 75, 5))
    assert out['difficulty'] == next(c['difficulty'] for c in out['curve'] if c['angle'] == 40)
    assert out['name'] == f"{out['font']}/{out['v']}" and len(out['likely']) == 3
    assert [x['p'] for x in out['likely']] == sorted((x['p'] for x in out['likely']), reverse=True)
    status, every, _ = post(server.port, '/api/grade', dict(route=ROUTE, angle='all'))
    assert status == 200 and every['curve'] == out['curve'] and 'difficulty' not in every


def test_grade_of_a_known_climb_says_if_it_is_stiff_or_soft(server):
    meta = server.grammar.meta
    split = meta['splits']['train']
    i = next(i for i, a in enumerate(split['angle']) if a == 40 and split['difficulty'][i] is not None)
    with closing(sqlite3.connect(f'file:{server.db}?mode=ro', uri=True)) as con:
        frames, = con.execute("SELECT frames FROM climbs WHERE uuid = ?", (split['climb_id'][i],)).fetchone()
    status, out, _ = post(server.port, '/api/grade', dict(route=frames, angle=40))
    near = out['nearest']
    assert status == 200 and near['distance'] == 0 and near['verdict'] in ('soft', 'stiff', 'as graded')
    low, high = (b['difficulty'] for b in near['band'])
    assert low <= out['difficulty'] <= high
    assert near['verdict'] == ('soft' if near['difficulty'] > high else 'stiff' if near['difficulty'] < low else 'as graded')
    changed = post(server.port, '/api/grade', dict(route=ROUTE, angle=40))[1]['nearest']  # not a known climb: no verdict
    assert changed['distance'] > 0 and 'verdict' not in changed


def test_check(server):
    status, out, _ = post(server.port, '/api/check', dict(board='tiny', holds=[[1044, 'finish'], [1002, 'start']]))
    assert status == 200 and out['route'] == 'p1002r12p1044r14' and out['holds'] == [[1002, 'start'], [1044, 'finish']]
    assert not out['complete'] and 'routes here have 3..40' in out['problem'] and out['can_complete']
    three = [[1002, 'start'], [1003, 'start'], [1004, 'start'], [1044, 'finish']]
    out = post(server.port, '/api/check', dict(board='tiny', holds=three))[1]
    assert 'route has 3 start holds' in out['problem'] and 'at most 2' in out['prompt_problem']
    out = post(server.port, '/api/check', dict(board='tiny', route=ROUTE, angle=40))[1]
    assert out['complete'] and out['problem'] is None and out['nearest']['climb_id']
    assert out['nearest']['setter'] == setter_of(out['nearest']['climb_id'])  # boardsesh asks that setters be named
    out = post(server.port, '/api/check', dict(board='tiny', holds=[]))[1]
    assert out['route'] == '' and out['nearest'] is None and not out['complete']


def test_lights(server):
    for extra, api in ((dict(device='Kilter Board#12AB@3'), 3), (dict(device='Kilter Board#12AB'), 2),
                       (dict(api=3), 3), ({}, 2)):  # the level from the device's name, or given, or 2
        status, out, _ = post(server.port, '/api/lights', dict(board='tiny', route=ROUTE, **extra))
        writes = db_writes(server.db, 10, ROUTE, api)  # the configured size's LED rows
        assert status == 200 and out['api'] == api and out['writes'] == writes
        assert ''.join(out['packets']) == ''.join(writes) and out['wall']['size'] == 10
        assert out['bytes'] == len(''.join(writes)) // 2 and all(len(w) <= 40 for w in out['writes'])


def test_lights_on_a_size(server):
    """Each size numbers its LEDs: on the 4 x 5 the bytes are those of its own leds rows (500 - i),
    not the 6 x 8's."""
    for api in (2, 3):
        status, out, _ = post(server.port, '/api/lights', dict(route=SMALL_ROUTE, api=api, size=11))
        assert status == 200 and out['wall']['size'] == 11
        assert out['writes'] == db_writes(server.db, 11, SMALL_ROUTE, api) != db_writes(server.db, 10, SMALL_ROUTE, api)
    payload = bytes.fromhex(out['packets'][0])[5:-1]  # v3: SOH, length, checksum, STX, command, 3 bytes a hold, ETX
    assert [payload[i] + 256 * payload[i + 1] for i in range(0, len(payload), 3)] == \
        [small_led(p - 1000) for p in (1007, 1013, 1019, 1031)]  # placement 1000 + i is the grid's i-th


WALL = dict(size=11, sets=[1])  # the 4 x 5 with its bolt-ons only


def test_routes_on_a_wall(server):
    """Every route generated or completed on the small wall uses only its holds, by the database
    (size 11's LED rows, placements.set_id), and so does the nearest known climb given with it."""
    on = db_wall(server.db, 11, {1})
    assert 3 < len(on) < 20
    with closing(sqlite3.connect(server.db)) as con:
        frames = dict(con.execute("SELECT uuid, frames FROM climbs"))
    ask = dict(angle=40, count=16, best_of=2, seed=3)
    status, out, _ = post(server.port, '/api/generate', dict(ask, **WALL))
    assert status == 200 and len(out['routes']) == 16
    assert out['wall'] == dict(size=11, size_name='4 x 5', sets=[1], set_names=['Bolt Ons'], title=f'{SMALL}, Bolt Ons',
                               holds=len(on))
    status, done, _ = post(server.port, '/api/complete', dict(angle=40, route='p1007r12', count=6, **WALL))
    assert status == 200 and len(done['routes']) == 6 and done['wall'] == out['wall']
    for r in out['routes'] + done['routes']:
        assert placements(r['route']) <= on and {p for p, _ in r['holds']} <= on, r['route']
        assert placements(frames[r['nearest']['climb_id']]) <= on  # one the climber can do instead
    assert all([1007, 'start'] in r['holds'] for r in done['routes'])
    named = post(server.port, '/api/generate', dict(ask, size='4 x 5', sets='bolt ons'))
    assert named[1]['wall'] == out['wall'] and named[1]['routes'] == out['routes']  # by name, the same wall
    status, graded, _ = post(server.port, '/api/grade', dict(route=SMALL_ROUTE, angle=40, **WALL))
    assert status == 200 and placements(frames[graded['nearest']['climb_id']]) <= on
    whole = post(server.port, '/api/grade', dict(route=SMALL_ROUTE, angle=40, size='', sets=[]))[1]
    assert whole['wall']['title'] == 'Tiny Layout 6 x 8' and whole['difficulty'] == graded['difficulty']


def test_holds_off_the_wall(server):
    """A hold the wall lacks: a 400 naming the hold and the wall where routes are asked of it; where
    a route is being set (check) it is the problem shown, as a broken rule is."""
    below, screw_on = f'hold p1002 is not on the wall {SMALL}', f'hold p1008 is not on the wall {SMALL}, Bolt Ons'
    cases = [('/api/generate', dict(angle=40, prompt='p1002r12', size=11), below),
             ('/api/generate', dict(angle=40, prompt='p1008r12', **WALL), screw_on),
             ('/api/complete', dict(angle=40, route='p1007r12p1044r14', size=11), 'hold p1044 is not on the wall'),
             ('/api/grade', dict(route=ROUTE, angle=40, size=11), below),
             ('/api/grade', dict(route=ROUTE, angle='all', size='4 x 5'), below),
             ('/api/lights', dict(route=SMALL_ROUTE.replace('p1013', 'p1008'), **WALL), screw_on)]
    for path, body, words in cases:
        status, out, _ = post(server.port, path, body)
        assert status == 400 and words in out['error'] and '\n' not in out['error'], (path, out)
    status, out, _ = post(server.port, '/api/check', dict(holds=[[1007, 'start'], [1008, 'middle']], **WALL))
    assert status == 200 and out['route'] == 'p1007r12p1008r13' and out['wall']['sets'] == [1]
    assert out['problem'] == out['prompt_problem'] == screw_on
    assert not out['complete'] and not out['can_complete']
    out = post(server.port, '/api/check', dict(route=SMALL_ROUTE, **WALL))[1]
    assert out['complete'] and out['problem'] is None


BAD_WALLS = [  # (wall fields, words): each endpoint refuses them with one line naming what there is
    (dict(size=99), "Tiny Layout has no size '99': its sizes are 10 '6 x 8', 11 '4 x 5', 12 '1 x 2'"),
    (dict(size='7 x 10'), "has no size '7 x 10'"),
    (dict(sets=['Glue']), "has no hold set 'Glue': its hold sets are 1 'Bolt Ons', 2 'Screw Ons'"),
    (dict(sets='1,3'), "has no hold set '3'"),
    (dict(size=12), "the wall Tiny Layout 1 x 2 has 1 of this board's holds; a route needs at least 3"),
    (dict(size=11.0), "field 'size' must be a whole number or a string"),
    (dict(sets=[True]), "field 'sets' must be a list of hold set ids or names"),
    (dict(sets={'id': 1}), "field 'sets' must be a list or a string"),
    (dict(sets=['Bolt Ons', 'x' * 500]), "in at most 100 characters"),  # not echoed back whole
]
ON_EACH = {'/api/check': dict(route=SMALL_ROUTE), '/api/generate': dict(angle=40),
           '/api/complete': dict(angle=40, route='p1007r12'), '/api/grade': dict(route=SMALL_ROUTE, angle=40),
           '/api/lights': dict(route=SMALL_ROUTE)}


@pytest.mark.parametrize('wall, words', BAD_WALLS, ids=[json.dumps(w)[:40] for w, _ in BAD_WALLS])
def test_bad_wall(server, wall, words):
    for path, body in ON_EACH.items():
        status, out, _ = post(server.port, path, dict(body, **wall))
        assert status == 400 and words in out['error'] and '\n' not in out['error'], (path, out)


def test_server_wall(server, tmp_path):
    """--size and --sets: the wall of every request that names none, and the page's first wall."""
    root = os.path.dirname(server.db)
    s = Server(str(tmp_path / 'serve.log'), f'--data_root={root}', f'--gen_dir={root}/gen', f'--grade_dir={root}/grade',
               '--size=4 x 5', '--sets=Bolt Ons')
    try:
        on = db_wall(server.db, 11, {1})
        board = call(s.port, 'GET', '/api/board')[1]['boards'][0]
        assert board['wall'] == dict(size=11, size_name='4 x 5', sets=[1], set_names=['Bolt Ons'],
                                     title=f'{SMALL}, Bolt Ons', holds=len(on))
        out = post(s.port, '/api/generate', dict(angle=40, count=8, best_of=1))[1]
        assert out['wall'] == board['wall'] and all(placements(r['route']) <= on for r in out['routes'])
        lit = post(s.port, '/api/lights', dict(route=SMALL_ROUTE))[1]
        assert lit['writes'] == db_writes(server.db, 11, SMALL_ROUTE, 2)
        assert 'not on the wall' in post(s.port, '/api/check', dict(route=ROUTE))[1]['problem']
        out = post(s.port, '/api/lights', dict(route=ROUTE, size=10, sets=''))[1]  # a request's own wall wins
        assert out['writes'] == db_writes(server.db, 10, ROUTE, 2) and out['wall']['title'] == 'Tiny Layout 6 x 8'
    finally:
        s.stop()


BAD = [  # (path, body, status, words in the error) -- one of each kind of mistake a client can make
    ('/api/generate', dict(count=6), 400, 'routes need an angle'),
    ('/api/generate', dict(angle=40, count='6'), 400, "field 'count' must be a whole number"),
    ('/api/generate', dict(angle=40, count=True), 400, "field 'count' must be a whole number"),
    ('/api/generate', dict(angle=40, count=25), 400, 'count must be 1..24'),
    ('/api/generate', dict(angle=40, count=0), 400, 'count must be 1..24'),
    ('/api/generate', dict(angle=40, best_of=17), 400, 'best_of must be 1..16'),
    ('/api/generate', dict(angle=42), 400, 'angle 42 is impossible'),
    ('/api/generate', dict(angle=[40]), 400, "field 'angle' must be"),
    ('/api/generate', dict(angle='steep'), 400, "angle 'steep' is not a number"),
    ('/api/generate', dict(angle=40, grade='V20'), 400, 'out of range'),
    ('/api/generate', dict(angle=40, grade='hard'), 400, "unknown grade 'hard'"),
    ('/api/generate', dict(angle=40, prompt='p9r12'), 400, 'unknown placement p9'),
    ('/api/generate', dict(angle=40, prompt='p1002r99'), 400, 'role r99 of p1002'),
    ('/api/generate', dict(angle=40, prompt='p1002r12p1002r13'), 400, 'appears twice'),
    ('/api/generate', dict(angle=40, prompt='p1002r12p1003r12p1004r12'), 400, 'at most 2'),
    ('/api/generate', dict(angle=40, seed=-1), 400, 'seed must be'),
    ('/api/generate', dict(angle=40, temperature=-1), 400, 'temperature must be'),
    ('/api/generate', dict(angle=40, cont=6), 400, "unknown field 'cont'"),
    ('/api/generate', dict(angle=40, board='kilter'), 400, "unknown board 'kilter'"),
    ('/api/generate', dict(angle=40, board=7), 400, "field 'board' must be a string"),
    ('/api/complete', dict(angle=40), 400, "missing field 'route'"),
    ('/api/complete', dict(angle=40, route=''), 400, "'route' is empty"),
    ('/api/grade', dict(angle=40), 400, "missing field 'route'"),
    ('/api/grade', dict(route=ROUTE), 400, 'need an angle'),
    ('/api/grade', dict(route=5, angle=40), 400, "field 'route' must be"),
    ('/api/grade', dict(route='p1002r12p1044r14', angle=40), 400, 'route has 2 holds'),
    ('/api/grade', dict(route='p1002x', angle=40), 400, 'malformed frames'),
    ('/api/check', dict(holds=[[9, 'start']]), 400, 'no hold [9, "start"]'),
    ('/api/check', dict(holds=[[1002, 'crimp']]), 400, 'no hold'),
    ('/api/check', dict(holds=[[True, 'start']]), 400, 'no hold'),
    ('/api/check', dict(holds='p1002r12'), 400, 'list of [placement, role] pairs'),
    ('/api/check', dict(holds=[[1002, 'start'], [1002, 'middle']]), 400, 'appears twice'),
    ('/api/check', dict(route=ROUTE, holds=[]), 400, "one of 'route'"),
    ('/api/lights', dict(route=ROUTE, api=4), 400, 'api must be 2 or 3'),
    ('/api/lights', dict(route=''), 400, 'malformed frames'),
]


@pytest.mark.parametrize('path, body, status, words', BAD, ids=[f'{p}-{json.dumps(b)}' for p, b, _, _ in BAD])
def test_bad_request(server, path, body, status, words):
    got, out, _ = post(server.port, path, body)
    assert got == status and words in out['error'], out
    assert '\n' not in out['error'] and 'Traceback' not in out['error']


def test_bad_http(server):
    port = server.port
    cases = [  # (method, path, raw body, extra headers, status, words)
        ('POST', '/api/grade', b'{"route": ', {}, 400, 'malformed JSON'),
        ('POST', '/api/grade', b'[1, 2]', {}, 400, 'must be a JSON object'),
        ('POST', '/api/grade', b'\xff\xfe{}', {}, 400, 'malformed JSON'),
        ('POST', '/api/grade', b'{"angle": NaN}', {}, 400, 'NaN is not allowed'),
        ('POST', '/api/grade', b'[' * 30000 + b']' * 30000, {}, 400, 'malformed JSON'),  # too deep to parse
        ('POST', '/api/grade', b'{}', {'Content-Type': 'text/plain'}, 415, 'application/json'),
        ('POST', '/api/grade', b'', {'Content-Length': '70000'}, 413, 'at most 65536'),  # refused unread
        ('POST', '/api/grade', b'{}', {'Content-Length': 'ten'}, 400, 'not a number'),
        ('POST', '/api/grade', b'{}', {'Host': 'evil.example:80'}, 403, 'not evil.example'),
        ('GET', '/api/generate', None, {}, 405, 'takes POST'),
        ('POST', '/api/board', b'{}', {}, 405, 'no POST'),
        ('GET', '/api/nothing', None, {}, 404, 'no /api/nothing'),
        ('PUT', '/api/grade', b'{}', {}, 501, 'Unsupported method'),
    ]
    for method, path, raw, headers, status, words in cases:
        got, out, res = call(port, method, path, raw=raw, headers=headers)
        assert got == status and words in out['error'], (method, path, headers, out)
    # no Content-Length at all (http.client always sends one, so by hand)
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        s.sendall(b'POST /api/grade HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n')
        assert s.recv(1000).startswith(b'HTTP/1.0 411')
    for line in (b'\x16\x03\x01 hello', b'GET /api/board HTTP/1.1 extra', b'GET /api/board HTTP/9.9'):  # not HTTP
        with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
            s.sendall(line + b'\r\n\r\n')
            answer = s.recv(1000)
            assert answer and b'Traceback' not in answer and b'Python' not in answer
    assert call(port, 'GET', '/nothing')[:2] == (404, 'no /nothing here\n')  # plain text off the API


@pytest.mark.parametrize('path', ['/../README.md', '/%2e%2e/routes.py', '/web/../serve.py', '//etc/passwd',
                                  '/%5c..%5cserve.py', '/..%5c..%5cserve.py', '/web/index.html', '/serve.py',
                                  '/web/app.js/../../serve.py', '/.git/config', '/api/../serve.py', '/app.js%00.py',
                                  '/./app.js/..', '/%2fetc%2fpasswd'])
def test_path_traversal(server, path):
    status, text, _ = call(server.port, 'GET', path)
    line = text['error'] if isinstance(text, dict) else text  # JSON under /api/, plain text elsewhere
    assert status == 404 and line.startswith('no /') and line.strip().count('\n') == 0  # one line, never a file


def test_stalled_client_is_dropped(server):
    """The socket timeout bounds a request: a client that sends half a body is cut off."""
    with socket.create_connection(('127.0.0.1', server.port), timeout=10) as s:
        s.sendall(b'POST /api/grade HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
                  b'Content-Length: 100\r\n\r\n{"ro')
        t0 = time.time()
        assert s.recv(1000) == b''  # closed by the server, no answer
        assert time.time() - t0 < 8
    assert call(server.port, 'GET', '/api/board')[0] == 200


def test_concurrent_clients(server):
    """8 threads x 25 mixed requests at once: every one answered, none wrong."""
    errors, done = [], []
    requests = [('/api/generate', dict(angle=40, grade='6c', count=2, best_of=2)),
                ('/api/grade', dict(route=ROUTE, angle=30)),
                ('/api/check', dict(holds=[[1002, 'start'], [1044, 'finish']], size=11, sets=[1])),
                ('/api/lights', dict(route=SMALL_ROUTE, api=3, size='4 x 5'))]

    def client(k):
        for i in range(25):
            path, body = requests[(k + i) % len(requests)]
            try:
                status, out, _ = post(server.port, path, body)
                ok = status == 200 and ('routes' in out and len(out['routes']) == 2 or 'curve' in out or 'route' in out
                                        or 'writes' in out)
                (done if ok else errors).append((path, status, out))
            except Exception as e:  # noqa: BLE001  (any failure is the test's finding)
                errors.append((path, repr(e)))
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(done) == 200, errors[:3]


def test_requests_that_arrive_together_share_a_model_call(server):
    """While a big generate runs, the requests that arrive queue and go into the sampler's rounds
    together; each gets the routes it gets alone with the same seed, and one among them that fails
    inside the batch (a bad temperature, only the sampler checks it) fails alone, with its own 400."""
    bodies = [dict(board='tiny', angle=30 + 5 * (k % 3), grade=18 + k, count=1 + k % 3, seed=100 + k, best_of=2 + k % 3,
                   temperature=1.0 + 0.1 * k) for k in range(6)]
    alone = [post(server.port, '/api/generate', b)[1] for b in bodies]
    assert all(a['batch'] == 1 for a in alone)  # one at a time: nobody to share with
    bad = dict(board='tiny', angle=40, grade=20, count=2, seed=5, temperature=-1)
    for attempt in range(3):
        results = {}

        def send(key, path, body):
            results[key] = post(server.port, path, body)
        big = threading.Thread(target=send, args=('big', '/api/generate', dict(angle=40, count=24, best_of=16, seed=1)))
        big.start()
        time.sleep(0.05)  # the big one takes the worker; the rest arrive while it runs
        rest = [threading.Thread(target=send, args=(k, '/api/generate', b)) for k, b in enumerate(bodies)]
        rest += [threading.Thread(target=send, args=('bad', '/api/generate', bad)),
                 threading.Thread(target=send, args=('grade', '/api/grade', dict(route=ROUTE, angle=30)))]
        for t in rest:
            t.start()
        for t in [big, *rest]:
            t.join(timeout=120)
        assert results['big'][0] == 200 and len(results['big'][1]['routes']) == 24, results['big'][1]
        assert results['grade'][0] == 200 and results['grade'][1]['curve']
        status, out, _ = results['bad']
        assert status == 400 and out['error'].startswith('temperature must be a number >= 0')
        for k, a in enumerate(alone):
            status, out, _ = results[k]
            assert status == 200 and out['stats'] == a['stats'], (k, out)
            assert [r['route'] for r in out['routes']] == [r['route'] for r in a['routes']]
            assert [r['predicted'] for r in out['routes']] == [r['predicted'] for r in a['routes']]
        if all(results[k][1]['batch'] == len(bodies) for k in range(len(bodies))):
            break  # all six shared their rounds, the bad one joining with them: what this test is about
    else:
        pytest.fail(f"the requests never shared one call: batches {[results[k][1]['batch'] for k in range(6)]}")


def test_still_serving_after_everything(server):
    """Run last in this file: after all the bad requests above, the server answers and never crashed."""
    assert call(server.port, 'GET', '/api/board')[0] == 200
    assert post(server.port, '/api/grade', dict(route=ROUTE, angle=40))[0] == 200
    assert server.proc.poll() is None
    log = server.text_log()
    assert 'Traceback' not in log and '" 500 ' not in log


def test_without_models_or_led_colours(tiny, tmp_path):
    """The fixture's own data: no models trained, no LED colours. The server starts and says so."""
    s = Server(str(tmp_path / 'serve.log'), f"--data_root={tiny['root']}", f'--gen_dir={tmp_path}/none',
               f'--grade_dir={tmp_path}/none')
    try:
        info = call(s.port, 'GET', '/api/board')[1]
        assert info['models'] == dict(generator=False, grader=0) and info['boards'][0]['lights'] is False
        assert not any(size['lights'] for size in info['boards'][0]['sizes'])  # LED rows, but no colours
        for path, body in (('/api/generate', {'angle': 40}), ('/api/complete', {'angle': 40, 'route': 'p1002r12'})):
            status, out, _ = post(s.port, path, body)
            assert status == 503 and 'train' in out['error']
        status, out, _ = post(s.port, '/api/grade', dict(route=ROUTE, angle=40))
        assert status == 503 and 'python train_grade.py config/tiny.py' in out['error']
        status, out, _ = post(s.port, '/api/lights', dict(route=ROUTE))
        assert status == 400 and 'no LED colour' in out['error']
        assert post(s.port, '/api/check', dict(route=ROUTE))[0] == 200  # the grammar needs no model
    finally:
        s.stop()


def test_command_line_errors(tiny):
    assert 'port must be 0..65535' in error_line(run('serve.py', 'config/tiny.py', '--port=70000', check=False))
    proc = run('serve.py', 'config/tiny.py', '--data_root=/nonexistent', check=False)
    assert 'prepare the data first' in error_line(proc)
    for wall, words in (('--size=99', "no size '99': its sizes are 10 '6 x 8', 11 '4 x 5', 12 '1 x 2'"),
                        ('--sets=Glue', "no hold set 'Glue': its hold sets are 1 'Bolt Ons', 2 'Screw Ons'"),
                        ('--size=1 x 2', 'a route needs at least 3')):
        proc = run('serve.py', 'config/tiny.py', f"--data_root={tiny['root']}", wall, check=False)
        assert words in error_line(proc)
