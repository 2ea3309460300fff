"""
boardgpt in the browser: one page to generate, edit, grade, complete and light routes.

    python serve.py config/kilter.py                    # http://127.0.0.1:8000/
    python serve.py config/moonboard.py --port=8001
    python serve.py config/kilter.py --host=0.0.0.0     # reachable from the LAN (phones at the wall)
    python serve.py config/kilter.py --size=14 --sets='Bolt Ons'   # the wall the page starts with

The dataset's generator, grade model and known climbs are loaded once; a model that is missing
only switches off what needs it. Grading joins the generator's grade posterior to the grade
models' (engine.join_generator); picking among sampled candidates uses the grade models alone.
The page (web/) is our own HTML, CSS and JS, fetched from this server only, so it works offline. The JSON API it uses (POST bodies are JSON objects):

    GET  /api/board     boards (holds, edges, angles, roles, rules, sizes, hold sets, the default wall),
                        grades, colours, Bluetooth UUIDs
    POST /api/check     {board, route | holds, angle} -> canonical route string, holds, what rules it breaks
    POST /api/generate  {board, angle, grade, count, prompt, best_of, seed, temperature} -> routes
    POST /api/complete  {board, angle, grade, route, count, best_of, seed, temperature} -> routes
    POST /api/grade     {board, route, angle (a number, or "all")} -> grade, likely grades, curve
    POST /api/lights    {board, route, api (2|3) or device (its name)} -> packets and BLE writes, hex

Every POST also takes the climber's wall: size (an id or a name) and sets (a list of ids or names,
or one comma-separated string; empty: every set), each defaulting to the server's wall (the
config's size and sets, or --size and --sets, for the first board; the configured size with every
set for any other). Routes are then generated, completed, graded and lit on that wall only, the
nearest known climb is one that fits it, and the answer says which wall it was (wall: size, sets,
title, holds).

A bad request gets a 4xx and {"error": "<one line>"}; nothing a client sends is evaluated, joined
to a path or written anywhere.

Model calls are batched across requests: sampling (generate and complete) and grading each have
one worker thread. Sampling runs round by round (engine.Sampler): a request joins the next round of
candidates while max_batch rows hold it and leaves when its own rounds are done; grading takes the
requests that arrived during its last call into its next one. Each request draws from its own
seed, so an answer is the one the request gets alone. A request that fails inside a batch fails
alone (a failed call or round is run again alone for each request in it); one whose call has not
started after max_wait seconds gets a 503. Sampling never waits for grading or grading for
sampling. --batch=False serves one request at a time under one lock (what bench.py compares with).
"""

import collections
import json
import os
import random
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import torch

import lights
from configurator import configure
from draw import BOARD_FILL, GEOMETRY, HOLD_FILL, LABEL_FILL, hold_pitch
from engine import ACCEPT, BEST_OF, Sampler, candidate_rounds, curve_angles, grade_curves, join_generator, sample_batch
from metrics import ClimbIndex, stiff_or_soft
from model import check_device, checkpoint_dir, grade_checkpoints, load_generator, load_grader
from routes import (GRADES, ROLE_COLORS, ROLES, SPLITS, Grammar, InputError, RouteError, grade_record, load_meta,
                    load_split, parse_grade)

# -----------------------------------------------------------------------------
# config
dataset = 'kilter'
data_root = 'data'
gen_dir = ''  # default out/<dataset>/gen
grade_dir = ''  # default out/<dataset>/grade
generator_grades = True  # grade routes with the generator's grade posterior joined (engine.join_generator);
#                          False: the grade models alone, some 5 times faster
host = '127.0.0.1'  # loopback only unless told otherwise
port = 8000  # 0: any free port (the address printed is the real one)
device = 'cpu'
threads = 0  # torch threads for model calls; 0: torch's default
best_of = BEST_OF  # candidates per generated route, graded, the closest to the asked grade kept
at_once = 0  # all best_of in one round: a climber waits for rounds one after another, and a round of 8 costs
#             a page little more than one of 1 (sample.py's AT_ONCE is for routes/s, this for latency)
accept = ACCEPT
default_count = 6  # routes per Generate
max_count = 24  # most routes one request may ask for
max_best_of = 16  # most candidates per route one request may ask for
max_body = 64 * 1024  # bytes in a request body
timeout = 15.0  # seconds a client may take to send its request
batch = True  # gather the requests that arrive together into one model call; False: one at a time, one lock
max_batch = 256  # most rows in one model call (candidates when sampling, angles when grading)
max_wait = 30.0  # seconds a request may wait for its model call to start before a 503
log_requests = True  # one line per request on stderr
size = ''  # the wall the page starts with, on the first board: a size by id or name; default: the configured size
sets = ''  # and the hold sets on it, by id or name ('Bolt Ons,Screw Ons'); default: all
# -----------------------------------------------------------------------------
configure(globals())

check_device(device)
if not (isinstance(port, int) and 0 <= port <= 65535):
    raise InputError(f"port must be 0..65535 (0: any free port), got {port!r}")
if max_count < 1 or max_best_of < 1 or max_body < 1024 or timeout <= 0 or max_batch < 1 or max_wait <= 0:
    raise InputError("max_count, max_best_of and max_batch must be >= 1, max_body >= 1024, timeout and max_wait > 0")
if threads > 0:
    torch.set_num_threads(threads)

meta = load_meta(os.path.join(data_root, dataset))
grammar = Grammar(meta)
walls = {name: grammar.wall(name) for name in grammar.boards}  # each board's default wall: a request may name another
walls[meta['boards'][0]['name']] = grammar.wall(meta['boards'][0]['name'], size, sets)  # an unknown one fails here
known = ClimbIndex(grammar, [load_split(os.path.join(data_root, dataset), meta, s, lists=False) for s in SPLITS])
gen_dir = gen_dir or checkpoint_dir(dataset, 'gen')
grade_dir = grade_dir or checkpoint_dir(dataset, 'grade')
missing = {}  # what is not loaded -> the one line a request that needs it gets back
try:
    generator = load_generator(os.path.join(gen_dir, 'best.pt'), meta, device)
except InputError as e:
    generator, missing['generator'] = None, str(e)
if grade_checkpoints(grade_dir):
    guide = load_grader(grade_dir, meta, device)  # picks among sampled candidates: the grade models alone, fast
    grader = guide if generator is None or not generator_grades else join_generator(guide, generator, meta)
else:
    guide = grader = None
    missing['grader'] = f"no grade model in {grade_dir}: train one (python train_grade.py config/{dataset}.py)"
for line in missing.values():
    print(f"note: {line}", file=sys.stderr)

# the page: a fixed list of files, read once; no path from a request ever reaches the filesystem
WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'web')
TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
         '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml'}
PAGE = {}
for url, name in (('/', 'index.html'), ('/index.html', 'index.html'), ('/app.js', 'app.js'),
                  ('/style.css', 'style.css'), ('/icon.svg', 'icon.svg')):
    with open(os.path.join(WEB, name), 'rb') as f:
        PAGE[url] = (f.read(), TYPES[os.path.splitext(name)[1]])


def size_problem(board, size_id):
    """Why no route fits this size even with every hold set (the 400 a request for it gets), or None."""
    try:
        grammar.wall(board, size_id)
    except RouteError as e:
        return str(e)
    return None


def board_info(b):
    """What the page needs to draw a board, keep to its rules and offer its walls."""
    lit = {s['id']: b['format'] == 'moonboard' or bool(s['leds'] and b['role_colors']) for s in b['sizes']}
    return dict(name=b['name'], title=b['title'], format=b['format'], holds=[list(h) for h in b['holds']],
                edges=list(b['edges']), pitch=hold_pitch(b), angles=b['angles'], angle_known=b['angle_known'],
                roles=[r for r in ROLES if r in b['role_codes']],
                rules={k: b[k] for k in ('min_start', 'max_start', 'min_finish', 'max_finish', 'min_holds',
                                         'max_holds')},
                sizes=[dict(id=s['id'], name=s['name'], holds=list(s['holds']), edges=list(s['edges']),
                            lights=lit[s['id']], problem=size_problem(b['name'], s['id'])) for s in b['sizes']],
                sets=[dict(id=s['id'], name=s['name']) for s in b['sets']],
                hold_set=[[p, s] for p, s in b['hold_set'].items()],  # pairs: JSON keys would all be strings
                wall=walls[b['name']].describe(),
                lights=lit[walls[b['name']].size['id']])  # what a request that names no wall can light


BOARD_JSON = dict(
    dataset=dataset, boards=[board_info(b) for b in meta['boards']], roles=list(ROLES), role_colors=ROLE_COLORS,
    grades=[dict(difficulty=d, font=f, v=v) for d, f, v in GRADES],
    style=dict(board=BOARD_FILL, holds=HOLD_FILL, labels=LABEL_FILL, geometry=GEOMETRY),
    models=dict(generator=generator is not None, grader=len(guide.paths) if guide is not None else 0),
    missing=missing, limits=dict(count=max_count, best_of=max_best_of, body=max_body),
    defaults=dict(count=default_count, best_of=best_of if guide is not None else 1),
    bluetooth=dict(  # Web Bluetooth's requestDevice filters, then the write characteristics to try in order
        aurora=dict(filters=[dict(services=[lights.AURORA_ADVERTISED_UUID])], optional=[lights.AURORA_SERVICE_UUID],
                    writes=[dict(service=lights.AURORA_SERVICE_UUID, characteristic=lights.AURORA_WRITE_UUID,
                                 response=False)]),
        moonboard=dict(filters=[dict(namePrefix=p) for p in lights.MOONBOARD_NAME_PREFIXES],
                       optional=[lights.MOONBOARD_SERVICE_UUID, lights.MOONBOARD_REDBEARLAB_SERVICE_UUID],
                       writes=[dict(service=s, characteristic=c, response=r) for s, c, r in (  # old boxes: responses
                           (lights.MOONBOARD_SERVICE_UUID, lights.MOONBOARD_WRITE_UUID, False),
                           (lights.MOONBOARD_REDBEARLAB_SERVICE_UUID, lights.MOONBOARD_REDBEARLAB_WRITE_UUID, True))])))


# -----------------------------------------------------------------------------
# request fields: each checked for presence and type, with a one-line error naming it

class HTTPError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


REQUIRED = object()
NUMBER, TEXT, ROUTE = (int, float), (str,), (str, dict)  # a MoonBoard route may be the website's dict


def field(body, name, kinds, default=REQUIRED):
    if name not in body:
        if default is REQUIRED:
            raise InputError(f"missing field {name!r}")
        return default
    value = body[name]
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):  # JSON true is no number here
        names = ' or '.join({int: 'a whole number', float: 'a number', str: 'a string', dict: 'an object',
                             list: 'a list'}[k] for k in kinds)
        raise InputError(f"field {name!r} must be {names}, got {json.dumps(value)[:40]}")
    return value


def fields(body, allowed):
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r}: this endpoint takes {', '.join(allowed)}")


def board_of(body):
    only = meta['boards'][0]['name'] if len(grammar.boards) == 1 else REQUIRED  # one board: it may go unsaid
    return grammar.board(field(body, 'board', TEXT, only))['name']


def wall_of(body, board):
    """The wall a request is for: its size and sets, each defaulting to the server's wall of the board.
    An unknown size or set, or a wall too small for any route, is a RouteError: a 400."""
    home = walls[board]
    size_asked = field(body, 'size', (int, str), home.size['id'])
    sets_asked = field(body, 'sets', (list, str), list(home.set_ids or ()))
    if isinstance(sets_asked, list) and not all(isinstance(s, (int, str)) and not isinstance(s, bool)
                                                for s in sets_asked):
        raise InputError("field 'sets' must be a list of hold set ids or names, or one comma-separated string")
    names = [size_asked, *(sets_asked.split(',') if isinstance(sets_asked, str) else sets_asked)]
    if any(isinstance(n, str) and len(n) > 100 for n in names):  # an unknown name is echoed in the error line
        raise InputError("fields 'size' and 'sets' name a size or hold set in at most 100 characters")
    return grammar.wall(board, size_asked, sets_asked)


WALL = ('size', 'sets')  # the fields every POST takes


def need(model, what):
    if model is None:
        raise HTTPError(503, missing[what])


def nearest(board, holds, angle, wall):
    near = known.nearest(board, holds, angle, wall) if holds else None
    return near and dict(near, distance=round(near['distance'], 3), grade=grade_record(near['difficulty']))


def hold_pairs(board, pairs):
    """A page's [[placement, role], ...] -> holds, each checked against the board."""
    if not isinstance(pairs, list) or len(pairs) > len(grammar.xy[board]):
        raise InputError("field 'holds' must be a list of [placement, role] pairs")
    holds = []
    for pair in pairs:
        ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (int, str)) \
            and not isinstance(pair[0], bool) and isinstance(pair[1], str)
        if not ok or (board, pair[0], pair[1]) not in grammar.hold_token:
            raise InputError(f"no hold {json.dumps(pair)[:40]} on {board}: expected [placement, role], role one of "
                             f"{', '.join(grammar.boards[board]['role_codes'])}")
        holds.append(tuple(pair))
    return grammar.parse(board, grammar.format(board, holds)) if holds else []  # parse refuses a hold twice


# -----------------------------------------------------------------------------
# model calls: the requests of one kind that wait together go into one call

class Batcher:
    """A worker thread for one kind of model call. run_many(items) -> one result per item.
    submit(item, rows) waits for the item's result: (result, how many requests shared its call)."""

    def __init__(self, name, run_many):
        self.run_many = run_many
        self.queue = collections.deque()
        self.changed = threading.Condition()
        threading.Thread(target=self.work, name=name, daemon=True).start()

    def submit(self, item, rows):
        job = dict(item=item, rows=rows, done=threading.Event(), started=False)
        with self.changed:
            self.queue.append(job)
            self.changed.notify()
        if not job['done'].wait(max_wait):
            with self.changed:
                if not job['started']:
                    self.queue.remove(job)
                    raise HTTPError(503, f"the server is busy: this request waited {max_wait:g} s; try again")
            job['done'].wait()
        if 'error' in job:
            raise job['error']
        return job['result'], job['batch']

    def work(self):
        while True:
            with self.changed:
                while not self.queue:
                    self.changed.wait()
                jobs, rows = [], 0  # first come, first served, as many as max_batch rows hold (one at least)
                while self.queue and (not jobs or rows + self.queue[0]['rows'] <= max_batch):
                    jobs.append(self.queue.popleft())
                    jobs[-1]['started'] = True
                    rows += jobs[-1]['rows']
            try:
                results = self.run_many([job['item'] for job in jobs])
            except Exception as e:  # noqa: BLE001  (whatever it was, it belongs to one request: find which)
                if len(jobs) == 1:
                    self.finish(jobs[0], error=e)
                else:
                    self.each_alone(jobs)
                continue
            for job, result in zip(jobs, results):
                self.finish(job, result=result, batch=len(jobs))

    def alone(self, item):
        return self.run_many([item])[0]

    def each_alone(self, jobs):
        for job in jobs:
            try:
                self.finish(job, result=self.alone(job['item']))
            except Exception as e:  # noqa: BLE001  (the handler answers it: a 400, or a logged 500)
                self.finish(job, error=e)

    @staticmethod
    def finish(job, result=None, error=None, batch=1):
        if error is not None:
            job['error'] = error
        job['result'], job['batch'] = result, batch
        job['done'].set()


class RoundBatcher(Batcher):
    """Sampling, batched round by round (continuous batching): a request joins the sampler's next
    round rather than waiting for the requests before it to finish all theirs (a route that
    missed its grade draws again), and leaves it as soon as its own rounds are done."""

    def __init__(self, name, sampler, alone):
        self.sampler, self.alone = sampler, alone
        super().__init__(name, None)

    def work(self):
        active = {}  # id(job item) -> job
        while True:
            with self.changed:
                while not self.queue and not active:
                    self.changed.wait()
                rows = sum(job['rows'] for job in active.values())  # in flight; new ones join while max_batch holds them
                joined = []
                while self.queue and (not active and not joined or rows + self.queue[0]['rows'] <= max_batch):
                    joined.append(self.queue.popleft())
                    joined[-1]['started'] = True
                    rows += joined[-1]['rows']
            for job in joined:
                try:
                    self.sampler.add(job['item'])  # what is wrong with a request is found here, for it alone
                    active[id(job['item'])] = job
                except Exception as e:  # noqa: BLE001  (the handler answers it: a 400, or a logged 500)
                    self.finish(job, error=e)
            if not active:
                continue
            try:
                finished = self.sampler.step()
            except Exception:  # noqa: BLE001  (a bug in a round: each request in it runs again alone)
                self.sampler.jobs = []
                self.each_alone(list(active.values()))
                active = {}
                continue
            for job in active.values():  # the most requests it shared a round with, itself included
                job['sharing'] = max(job.get('sharing', 1), len(active))
            for item, result in finished:
                job = active.pop(id(item))
                self.finish(job, result=result, batch=job['sharing'])


class OneAtATime:
    """No batching: each request's model call alone, all kinds under one lock."""
    lock = threading.Lock()

    def __init__(self, name, run_many):
        self.run_many = run_many

    def submit(self, item, rows):
        with self.lock:
            return self.run_many([item])[0], 1


def sample_alone(job):  # a request's routes with nobody sharing its rounds, from its seed again
    fresh = torch.Generator(device=device).manual_seed(job['seed'])
    return sample_batch(generator, grammar, [dict(job, generator=fresh)], 0, 1.0, guide, known)[0]


if batch:
    sampler = RoundBatcher('sampling', Sampler(generator, grammar, 0, 1.0, guide, known), sample_alone)
    grading = Batcher('grading', lambda routes: grade_curves(grader, grammar, routes))
else:
    sampler = OneAtATime('sampling', lambda jobs: [sample_alone(job) for job in jobs])
    grading = OneAtATime('grading', lambda routes: grade_curves(grader, grammar, routes))


# -----------------------------------------------------------------------------
# the endpoints: body (a dict) -> answer (a dict)

def api_check(body):
    fields(body, ('board', 'route', 'holds', 'angle', *WALL))
    board = board_of(body)
    wall = wall_of(body, board)
    angle = field(body, 'angle', (int, float, str), None)
    angle = None if angle is None else grammar.check_angle(board, angle)  # only for the nearest climb's grade
    if ('route' in body) == ('holds' in body):
        raise InputError("give one of 'route' (a route string) or 'holds' ([[placement, role], ...])")
    holds = hold_pairs(board, body['holds']) if 'holds' in body else grammar.parse(board, field(body, 'route', ROUTE))
    answer = dict(board=board, route=grammar.format(board, holds), holds=[list(h) for h in holds], complete=True,
                  problem=None, can_complete=True, prompt_problem=None, nearest=nearest(board, holds, angle, wall),
                  wall=wall.describe())
    for check, ok, problem in ((grammar.validate, 'complete', 'problem'),
                               (grammar.check_prompt, 'can_complete', 'prompt_problem')):
        try:
            grammar.check_on_wall(wall, holds)  # first: a hold the climber lacks matters more than any rule
            check(board, holds)
        except InputError as e:  # not a bad request: the page shows the rule that the route breaks
            answer[ok], answer[problem] = False, str(e)
    return answer


def sampled(body, prompt_field):
    """Generate (prompt_field 'prompt', optional) or complete ('route', required): routes for
    (board, angle, grade), each containing the prompt's holds."""
    fields(body, ('board', 'angle', 'grade', 'count', prompt_field, 'best_of', 'seed', 'temperature', *WALL))
    need(generator, 'generator')
    board = board_of(body)
    wall = wall_of(body, board)
    count = field(body, 'count', (int,), default_count)
    if not 1 <= count <= max_count:
        raise InputError(f"count must be 1..{max_count}, got {count}")
    grade = field(body, 'grade', (str, int, float), None)
    grades = [None] if grade in (None, '', '?') else parse_grade(grade)
    angle = field(body, 'angle', (int, float, str), None)
    prompt = field(body, prompt_field, ROUTE, '' if prompt_field == 'prompt' else REQUIRED)
    if prompt:
        required, angle = grammar.route(board, prompt, angle, complete=False, wall=wall)
    else:
        required, angle = [], grammar.check_angle(board, angle)
    if prompt_field == 'route' and not required:
        raise InputError("field 'route' is empty: give the partial route to complete")
    k = field(body, 'best_of', (int,), best_of if guide is not None else 1)
    if not 1 <= k <= max_best_of:
        raise InputError(f"best_of must be 1..{max_best_of}, got {k}")
    seed = field(body, 'seed', (int,), None)
    seed = random.randrange(2 ** 31) if seed is None else seed
    if not 0 <= seed < 2 ** 63:
        raise InputError(f"seed must be 0..2**63-1, got {seed}")
    temperature = field(body, 'temperature', NUMBER, 1.0)
    prompts = [(board, angle, grades[i % len(grades)]) for i in range(count)]  # V5: 6c and 6c+ in turn
    job = dict(prompts=prompts, required=[required] * count, walls=[wall] * count, temperature=temperature, seed=seed,
               generator=torch.Generator(device=device).manual_seed(seed), best_of=k, at_once=at_once, accept=accept)
    (routes, stats), together = sampler.submit(job, count * candidate_rounds(k, at_once)[0])
    return dict(board=board, angle=angle, seed=seed, best_of=k, stats=stats, batch=together, wall=wall.describe(),
                routes=[dict(
        route=grammar.format(board, r['holds']), holds=[list(h) for h in r['holds']], angle=r['angle'],
        asked=grade_record(r['grade']), predicted=grade_record(r.get('predicted')), copy=r['copy'],
        nearest=nearest(board, r['holds'], r['angle'], wall)) for r in routes])


def api_grade(body):
    fields(body, ('board', 'route', 'angle', *WALL))
    need(grader, 'grader')
    board = board_of(body)
    wall = wall_of(body, board)
    angle = field(body, 'angle', (int, float, str), None)
    route = field(body, 'route', ROUTE)
    if angle == 'all':
        holds = grammar.parse(board, route)
        grammar.check_on_wall(wall, holds)
        grammar.validate(board, holds)
    else:
        holds, angle = grammar.route(board, route, angle, wall=wall)
    curve, together = grading.submit((board, holds), len(curve_angles(grammar, board)))
    answer = dict(board=board, route=grammar.format(board, holds), angle=angle, batch=together,
                  curve=[dict(angle=a, **grade_record(d)) for a, d, _ in curve],
                  nearest=nearest(board, holds, angle, wall), wall=wall.describe())
    for a, d, probs in curve:
        if a == angle:  # on a board without angles both are None: its one row
            top = probs.argsort()[::-1][:3]  # the three likeliest grades, as grade.py prints them
            likely = [dict(grade_record(grader.grade_min + int(i)), p=round(float(probs[i]), 4)) for i in top]
            answer.update(grade_record(d), likely=likely)
            near = answer['nearest']
            if near and near['distance'] == 0 and near['difficulty'] is not None:  # this very climb: stiff or soft?
                verdict, band = stiff_or_soft([near['difficulty']], probs[None], grader.grade_min)
                near.update(verdict=str(verdict[0]), band=[grade_record(float(b)) for b in band[0]])
    return answer


def api_lights(body):
    fields(body, ('board', 'route', 'api', 'device', *WALL))
    board = board_of(body)
    spec = grammar.boards[board]
    wall = wall_of(body, board)
    holds = grammar.parse(board, field(body, 'route', ROUTE))  # a route being set may be lit half done
    grammar.check_on_wall(wall, holds)
    api = field(body, 'api', (int,), None)
    name = field(body, 'device', TEXT, '')
    api = lights.aurora_api_level(name) if api is None else api  # the Aurora controller says its level in its name
    if api not in (2, 3):
        raise InputError(f"api must be 2 or 3 (the Aurora LED protocol level), got {api}")
    packets = lights.route_packets(wall.lighting(api), holds)  # each size numbers its LEDs; LightsError: a 400
    writes = lights.ble_writes(packets)
    return dict(board=board, api=api if spec['format'] == 'aurora' else None, packets=[p.hex() for p in packets],
                writes=[w.hex() for w in writes], bytes=sum(map(len, writes)), wall=wall.describe())


API = {'/api/check': api_check, '/api/generate': lambda body: sampled(body, 'prompt'),
       '/api/complete': lambda body: sampled(body, 'route'), '/api/grade': api_grade, '/api/lights': api_lights}
HEADERS = {'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer',
           'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}
LOOPBACK = {'127.0.0.1', 'localhost', '::1'}


# -----------------------------------------------------------------------------
# HTTP: every answer is whole and short; anything unexpected is a one-line 500, logged here

class Handler(BaseHTTPRequestHandler):
    server_version, sys_version = 'boardgpt', ''  # no version details to a client
    timeout = timeout  # seconds on the socket: a client that stalls is dropped
    body_read = False

    def do_GET(self):
        self.answer(self.get)

    def do_POST(self):
        self.answer(self.post)

    def get(self, path):
        if path == '/api/board':
            return self.send(200, BOARD_JSON)
        if path in API:
            raise HTTPError(405, f"{path} takes POST with a JSON body")
        if path not in PAGE:
            raise HTTPError(404, f"no {path} here")
        body, kind = PAGE[path]
        self.send(200, body, kind)

    def post(self, path):
        if path not in API:
            raise HTTPError(404 if path not in PAGE and path != '/api/board' else 405, f"no POST {path} here")
        if 'json' not in self.headers.get('Content-Type', ''):  # also keeps other sites' plain form posts out
            raise HTTPError(415, "send the body as JSON with Content-Type: application/json")
        if self.headers.get('Transfer-Encoding') or self.headers.get('Content-Length') is None:
            raise HTTPError(411, "send a Content-Length (chunked bodies are not taken)")
        try:
            length = int(self.headers['Content-Length'])
        except ValueError:
            raise HTTPError(400, "Content-Length is not a number") from None
        if not 0 <= length <= max_body:
            raise HTTPError(413, f"the body is {length} bytes; at most {max_body} are taken")
        raw, self.body_read = self.rfile.read(length), True
        try:
            body = json.loads(raw, parse_constant=lambda c: _raise(f"{c} is not allowed in JSON"))
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise InputError(f"malformed JSON: {str(e).splitlines()[0][:100]}") from None
        if not isinstance(body, dict):
            raise InputError(f"the body must be a JSON object, got {type(body).__name__}")
        self.send(200, API[path](body))

    def answer(self, handle):
        path = urlsplit(self.path).path
        try:
            name = (self.headers.get('Host') or '').rsplit(':', 1)[0].strip('[]')
            if host in LOOPBACK and name not in LOOPBACK:  # another name resolving here (DNS rebinding)
                raise HTTPError(403, f"this server answers to 127.0.0.1 or localhost, not {name or 'no Host'}")
            handle(path)
        except HTTPError as e:
            self.fail(e.status, str(e), path)
        except InputError as e:
            self.fail(400, str(e), path)
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True  # the client went away or stalled: nobody to answer
        except Exception as e:  # noqa: BLE001  (a bug: the client gets one line, the log the traceback)
            traceback.print_exc()
            self.fail(500, f"internal error ({type(e).__name__}); the server log has the details", path)

    def fail(self, status, message, path):
        length = getattr(self, 'headers', {}).get('Content-Length', '')
        if not self.body_read and status != 413 and length.isdigit() and int(length) <= max_body:
            try:  # read the unread body, so that closing the socket does not reset the answer away
                self.rfile.read(int(length))
            except OSError:
                pass
        self.send(status, {'error': message} if path.startswith('/api/') else message)

    def send_error(self, code, message=None, explain=None):  # http.server's own errors (bad request line, ...)
        self.fail(code, message or self.responses.get(code, ('error',))[0], getattr(self, 'path', ''))

    def send(self, status, body, kind=None):
        if isinstance(body, dict):
            body, kind = json.dumps(body, allow_nan=False).encode(), 'application/json'
        elif isinstance(body, str):
            body, kind = (body + '\n').encode(), 'text/plain; charset=utf-8'
        try:
            self.send_response(status)
            for key, value in dict(HEADERS, **{'Content-Type': kind, 'Content-Length': str(len(body))}).items():
                self.send_header(key, value)
            if status == 405:
                self.send_header('Allow', 'POST' if urlsplit(self.path).path in API else 'GET')
            self.end_headers()
            self.wfile.write(body)
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        if log_requests:  # escaped: a request line could carry terminal control characters
            sys.stderr.write(f"{self.address_string()} {(format % args).encode('unicode_escape').decode()}\n")


def _raise(message):
    raise ValueError(message)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client never keeps the process from exiting
    request_queue_size = 64  # a burst of clients waits to be accepted rather than being refused
    address_family = socket.AF_INET6 if ':' in host else socket.AF_INET


try:
    server = Server((host, port), Handler)
except OSError as e:
    raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
shown = f'[{host}]' if ':' in host else host
print(f"serving {dataset} on http://{shown}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
finally:
    server.server_close()
