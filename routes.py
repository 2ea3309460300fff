"""
The route grammar: the one place that knows what a climbing-board route is.

A route is a set of holds on one board, each with a role (start, middle, finish, foot), set at an
angle and graded. This module turns the boards' native route strings into tokens and back, parses
grades, and decides what is valid. prepare.py, sample.py, the trainers and evaluate.py all go
through it, so the rules cannot drift apart.

Route strings
- Aurora boards (Kilter, Tension): the app's frames string, `p<placement id>r<role id>` repeated,
  e.g. `p1145r12p1146r13p1200r14`. Role ids are board-specific (Kilter 12..15, Tension 2 5..8).
- MoonBoard: `SH:C5,E6/IH:E8,F11/FH:D18` (start, intermediate, finish holds, as on the
  MoonBoard website), or the website's JSON dict {"SH": [...], "IH": [...], "FH": [...]}.

Tokens (one sequence per route and angle)
    <board> <angle> <grade> hold hold ... hold <end>
One token per hold-and-role (not a hold token followed by a role token): sequences are half as
long, and every decoding step is one complete decision that the grammar can check on its own.
Holds come in canonical order: by role (start, middle, finish, foot), then bottom to top (y),
then left to right (x). Role first means a prompt of start holds is already a prefix of the
route, and bottom to top keeps consecutive hands close on the wall. The order is strict, so a
decoder that only emits holds ranked above the last one can never emit a hold twice with the same
role, and every route has exactly one token sequence.

Grades: the Aurora app difficulty, 10..33 = Font 4a..8c+ = V0..V16, rounded to an integer for the
grade token (Font resolution); the continuous value is kept beside the tokens for the grade model.
MoonBoard Font grades map onto the same scale. Unknown angle and unknown grade have tokens of
their own (Tension Board 2 databases carry no angle, and many of their climbs no grade).
"""

import gc
import hashlib
import math
import os
import pickle
import re

import numpy as np

ROLES = ('start', 'middle', 'finish', 'foot')  # canonical order of roles within a route
ROLE_COLORS = {'start': '#00dd00', 'middle': '#00c8ff', 'finish': '#ff00ff', 'foot': '#ffa500'}
MOONBOARD_ROLES = {'SH': 'start', 'IH': 'middle', 'FH': 'finish'}  # website keys -> roles
MOONBOARD_COLUMNS = 'ABCDEFGHIJK'
MOONBOARD_ROWS = 18

# (app difficulty, Font, V): the Aurora apps' difficulty_grades rows 10..33 (boulder_name 'Font/V')
GRADES = [
    (10, '4a', 'V0'), (11, '4b', 'V0'), (12, '4c', 'V0'), (13, '5a', 'V1'), (14, '5b', 'V1'),
    (15, '5c', 'V2'), (16, '6a', 'V3'), (17, '6a+', 'V3'), (18, '6b', 'V4'), (19, '6b+', 'V4'),
    (20, '6c', 'V5'), (21, '6c+', 'V5'), (22, '7a', 'V6'), (23, '7a+', 'V7'), (24, '7b', 'V8'),
    (25, '7b+', 'V8'), (26, '7c', 'V9'), (27, '7c+', 'V10'), (28, '8a', 'V11'), (29, '8a+', 'V12'),
    (30, '8b', 'V13'), (31, '8b+', 'V14'), (32, '8c', 'V15'), (33, '8c+', 'V16'),
]
MIN_DIFFICULTY, MAX_DIFFICULTY = GRADES[0][0], GRADES[-1][0]
FONT = {d: f for d, f, _ in GRADES}
V_GRADE = {d: v for d, _, v in GRADES}
FONT_TO_DIFFICULTY = {f: d for d, f, _ in GRADES}

PAD, END = 0, 1  # token ids shared by every vocabulary
SPLITS = ('train', 'val', 'test')
CONDITIONING = 3  # <board> <angle> <grade> open every sequence: given to the generator, never predicted


def block_size(meta):
    """The longest token sequence any board of the dataset allows: conditioning, holds, <end>."""
    return CONDITIONING + max(b['max_holds'] for b in meta['boards']) + 1


class InputError(ValueError):
    """A mistake in what the user gave (arguments, config, routes, files, checkpoints). Its message
    is one line that says what is wrong and what to do; scripts print it as `error: ...` and exit
    non-zero (configurator.configure installs that), never as a traceback."""


class RouteError(InputError):
    """A route the grammar refuses; `reason` is a short category prepare.py counts rows under."""

    def __init__(self, message, reason='invalid route'):
        super().__init__(message)
        self.reason = reason


# -----------------------------------------------------------------------------
# grades

def parse_grade(text):
    """'V5', '6c+', '7A', '20' or '20.4' -> the app difficulties it covers, lowest first.
    A V grade covers several Font grades (V5 = 6c, 6c+); a number is rounded to its Font grade."""
    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        value = None
    if value is not None:
        d = int(round(value))
        if not MIN_DIFFICULTY <= d <= MAX_DIFFICULTY:
            raise RouteError(f"grade {s} is out of range: app difficulties run "
                             f"{MIN_DIFFICULTY}..{MAX_DIFFICULTY} ({FONT[MIN_DIFFICULTY]}..{FONT[MAX_DIFFICULTY]})", 'grade out of range')
        return [d]
    if s[:1] in 'vV':
        ds = [d for d, _, v in GRADES if v.lower() == s.lower()]
        if not ds:
            raise RouteError(f"grade {s!r} is out of range: V grades run V0..V16", 'grade out of range')
        return ds
    if s.lower() in FONT_TO_DIFFICULTY:
        return [FONT_TO_DIFFICULTY[s.lower()]]
    if re.fullmatch(r'[1-9][abcABC]\+?', s):
        raise RouteError(f"grade {s!r} is out of range: Font grades run {FONT[MIN_DIFFICULTY]}..{FONT[MAX_DIFFICULTY]}", 'grade out of range')
    raise RouteError(f"unknown grade {s!r}: give a V grade (V5), a Font grade (6c+) "
                     f"or an app difficulty ({MIN_DIFFICULTY}..{MAX_DIFFICULTY})", 'unknown grade')


def font_grade(difficulty):
    """Continuous difficulty -> its integer Font grade on the app scale (round, clamp to 10..33).
    A number in, an int out; an array in, an int array out."""
    d = np.clip(np.rint(np.asarray(difficulty, dtype=np.float64)), MIN_DIFFICULTY, MAX_DIFFICULTY).astype(np.int64)
    return int(d) if d.ndim == 0 else d


_V_NUMBER = np.array([int(V_GRADE[d][1:]) if d in V_GRADE else -1 for d in range(MAX_DIFFICULTY + 1)])


def v_number(difficulty):
    """Continuous difficulty -> the V number (V5 -> 5) of its Font grade."""
    v = _V_NUMBER[font_grade(difficulty)]
    return int(v) if np.ndim(v) == 0 else v


def grade_name(difficulty):
    """Continuous difficulty -> 'Font/V' of its Font grade, e.g. 20.4 -> '6c/V5'."""
    if difficulty is None:
        return '?'
    d = font_grade(difficulty)
    return f'{FONT[d]}/{V_GRADE[d]}'


def grade_record(difficulty):
    """Continuous difficulty -> dict(difficulty, font, v, name) for JSON output; None stays None."""
    if difficulty is None:
        return None
    d = font_grade(difficulty)
    return dict(difficulty=round(float(difficulty), 2), font=FONT[d], v=V_GRADE[d], name=grade_name(difficulty))


# -----------------------------------------------------------------------------
# vocabulary

def build_vocab(boards):
    """The token vocabulary of a dataset: every hold of every board in every role the board has,
    so that any route a board can display can be written, seen in training or not."""
    itos, kind = ['<pad>', '<end>'], ['pad', 'end']
    hold_board, hold_placement, hold_role, hold_x, hold_y, hold_rank = ([None, None] for _ in range(6))

    def add(name, k, board=None, placement=None, role=None, x=None, y=None, rank=None):
        itos.append(name)
        kind.append(k)
        for column, value in zip((hold_board, hold_placement, hold_role, hold_x, hold_y, hold_rank),
                                 (board, placement, role, x, y, rank)):
            column.append(value)

    for b in boards:
        add(f'<board:{b["name"]}>', 'board', board=b['name'])
    angles = sorted({a for b in boards for a in b['angles']})
    for a in angles + [None]:
        add(f'<angle:{"?" if a is None else a}>', 'angle')
    for d, f, v in GRADES:
        add(f'<grade:{f}>', 'grade')
    add('<grade:?>', 'grade')
    for b in boards:
        codes = b['role_codes']
        order = sorted(b['holds'], key=lambda h: (h[2], h[1]))  # bottom to top, then left to right
        for ri, role in enumerate(ROLES):
            if role not in codes:
                continue
            for hi, (placement, x, y) in enumerate(order):
                add(hold_name(b, placement, codes[role]), 'hold', b['name'], placement, role, x, y,
                    ri * len(order) + hi)
    return dict(itos=itos, kind=kind, hold_board=hold_board, hold_placement=hold_placement,
                hold_role=hold_role, hold_x=hold_x, hold_y=hold_y, hold_rank=hold_rank,
                angles=angles)


def hold_name(board, placement, code):
    if board['format'] == 'moonboard':
        return f'{board["name"]}:{code}:{placement}'
    return f'{board["name"]}:p{placement}r{code}'


# -----------------------------------------------------------------------------
# the grammar over one dataset's vocabulary

class Grammar:
    """Route strings <-> holds <-> tokens, and validity, for the boards of one meta.pkl."""

    def __init__(self, meta):
        self.meta = meta
        self.boards = {b['name']: b for b in meta['boards']}
        self.itos = meta['itos']
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.vocab_size = len(self.itos)
        self.kind = meta['kind']
        self.board_token = {b: self.stoi[f'<board:{b}>'] for b in self.boards}
        self.angle_token = {a: self.stoi[f'<angle:{a}>'] for a in meta['angles']}
        self.angle_token[None] = self.stoi['<angle:?>']
        self.grade_token = {d: self.stoi[f'<grade:{f}>'] for d, f, _ in GRADES}
        self.grade_token[None] = self.stoi['<grade:?>']
        self.token_angle = {t: a for a, t in self.angle_token.items()}
        self.token_grade = {t: d for d, t in self.grade_token.items()}
        self.token_board = {t: b for b, t in self.board_token.items()}
        self.hold_token = {}  # (board, placement, role) -> token
        for t, k in enumerate(self.kind):
            if k == 'hold':
                self.hold_token[(meta['hold_board'][t], meta['hold_placement'][t], meta['hold_role'][t])] = t
        self.xy = {b: {p: (x, y) for p, x, y in self.boards[b]['holds']} for b in self.boards}

    def board(self, name):
        if name not in self.boards:
            raise RouteError(f"unknown board {name!r}: this dataset has {', '.join(self.boards)}")
        return self.boards[name]

    def wall(self, board_name, size=None, sets=None):
        """The climber's wall: size by id or name (None or '': the configured size), sets a
        comma-separated string or a list of ids or names (None, '' or 'all': every set, and holds
        in none). Raises RouteError naming what is available, or when the wall is too small for
        any route the board's rules allow."""
        b = self.board(board_name)
        if size is None or str(size).strip() == '':
            size = b['size']
        chosen = _pick(b['sizes'], size, 'size', b)
        picked = None
        if isinstance(sets, str):
            sets = [] if sets.strip().lower() in ('', 'all') else sets.split(',')
        if sets:
            picked = []
            for text in sets:
                s = _pick(b['sets'], text, 'hold set', b)
                if s not in picked:
                    picked.append(s)
            picked.sort(key=lambda s: str(s['id']))
        wall = Wall(b, chosen, picked)
        need = max(b['min_holds'], b['min_start'] + b['min_finish'])
        if len(wall.placements) < need:
            raise RouteError(f"the wall {wall.title} has {len(wall.placements)} of this board's holds; a route needs "
                             f"at least {need}: choose a larger size or more hold sets", 'wall too small')
        return wall

    def off_wall(self, wall):
        """(V,) bool: the hold tokens of the wall's board whose hold the wall lacks."""
        meta = self.meta
        return np.array([k == 'hold' and meta['hold_board'][t] == wall.board and meta['hold_placement'][t] not in
                         wall.placements for t, k in enumerate(self.kind)], dtype=bool)

    def check_on_wall(self, wall, holds):
        """Raise RouteError naming the first hold that is not on the wall."""
        if wall is None or wall.whole:
            return
        b = self.board(wall.board)
        for p, _ in holds:
            if p not in wall.placements:
                raise RouteError(f"hold {self._placement_name(b, p)} is not on the wall {wall.title}", 'hold off the wall')

    # route strings -------------------------------------------------------------

    def parse(self, board_name, route):
        """A route string (or MoonBoard holds dict) -> [(placement, role)] in canonical order.
        Checks that every hold exists on the board, that roles belong to the board and that no hold
        repeats; the counting rules are validate()'s job, so partial routes (prompts) parse too."""
        board = self.board(board_name)
        if board['format'] == 'moonboard':
            holds = self._parse_moonboard(board, route)
        else:
            holds = self._parse_frames(board, route)
        seen = set()
        for placement, _ in holds:
            if placement in seen:
                raise RouteError(f"hold {self._placement_name(board, placement)} appears twice in the route", 'duplicated hold')
            seen.add(placement)
        return self.canonical(board_name, holds)

    def _parse_frames(self, board, frames):
        if not isinstance(frames, str):
            raise RouteError(f"frames must be a string like p1145r12p1146r13, got {type(frames).__name__}", 'malformed route string')
        s = frames.strip()
        m = re.fullmatch(r'(?:p\d+r\d+)+', s)
        if not m:
            bad = re.sub(r'^(?:p\d+r\d+)*', '', s)[:20] if s else ''
            where = f" at {bad!r}" if bad else " (empty)"
            raise RouteError(f"malformed frames string{where}: expected p<placement>r<role> repeated, "
                             f"e.g. p1145r12p1146r13", 'malformed route string')
        roles = {code: role for role, code in board['role_codes'].items()}
        holds = []
        for p, r in re.findall(r'p(\d+)r(\d+)', s):
            p, r = int(p), int(r)
            if p not in self.xy[board['name']]:
                raise RouteError(f"unknown placement p{p}: not a hold of {board['title']}", 'hold not on the board')
            if r not in roles:
                allowed = ', '.join(f'r{c} {role}' for role, c in board['role_codes'].items())
                raise RouteError(f"role r{r} of p{p} is not a role of {board['title']} (roles: {allowed})", 'role not on the board')
            holds.append((p, roles[r]))
        return holds

    def _parse_moonboard(self, board, route):
        if isinstance(route, dict):
            groups = route.items()
            if not all(isinstance(names, list) for names in route.values()):
                raise RouteError('malformed MoonBoard holds: expected {"SH": [...], "IH": [...], "FH": [...]}, '
                                 'each a list of holds like "C5"', 'malformed route string')
        elif isinstance(route, str) and route.strip():
            groups = []
            for part in route.strip().split('/'):
                key, sep, names = part.partition(':')
                if not sep:
                    raise RouteError(f"malformed MoonBoard route at {part!r}: expected e.g. SH:C5,E6/IH:E8/FH:D18", 'malformed route string')
                groups.append((key.strip(), [n for n in names.split(',') if n.strip()]))
        else:
            raise RouteError("malformed MoonBoard route: expected e.g. SH:C5,E6/IH:E8/FH:D18", 'malformed route string')
        holds = []
        for key, names in groups:
            if key.upper() not in MOONBOARD_ROLES:
                raise RouteError(f"role {key!r} is not a MoonBoard role (SH start, IH intermediate, FH finish)", 'role not on the board')
            for name in names:
                name = str(name).strip().upper()
                if name not in self.xy[board['name']]:
                    raise RouteError(f"unknown hold {name!r}: MoonBoard holds are A..K and 1..18, e.g. D18", 'hold not on the board')
                holds.append((name, MOONBOARD_ROLES[key.upper()]))
        return holds

    def _placement_name(self, board, placement):
        return placement if board['format'] == 'moonboard' else f'p{placement}'

    def format(self, board_name, holds):
        """[(placement, role)] -> the board's route string (frames, or MoonBoard SH/IH/FH form)."""
        board = self.board(board_name)
        holds = self.canonical(board_name, holds)
        codes = board['role_codes']
        if board['format'] == 'moonboard':
            groups = [f'{code}:' + ','.join(p for p, r in holds if r == role)
                      for role, code in codes.items() if any(r == role for _, r in holds)]
            return '/'.join(groups)
        return ''.join(f'p{p}r{codes[r]}' for p, r in sorted(holds))  # the apps sort frames by placement

    def canonical(self, board_name, holds):
        xy = self.xy[board_name]
        return sorted(holds, key=lambda h: (ROLES.index(h[1]), xy[h[0]][1], xy[h[0]][0]))

    # validity --------------------------------------------------------------------

    def validate(self, board_name, holds):
        """Raise RouteError unless the holds make a complete route the board allows."""
        b = self.board(board_name)
        placements = [p for p, _ in holds]
        if len(set(placements)) != len(placements):
            dup = next(p for p in placements if placements.count(p) > 1)
            raise RouteError(f"hold {self._placement_name(b, dup)} appears twice in the route", 'duplicated hold')
        for p, r in holds:
            if p not in self.xy[board_name]:
                raise RouteError(f"unknown placement {self._placement_name(b, p)}: not a hold of {b['title']}", 'hold not on the board')
            if r not in b['role_codes']:
                raise RouteError(f"role {r} is not a role of {b['title']}", 'role not on the board')
        count = _role_counts(holds)
        for role in ('start', 'finish'):
            lo, hi = b[f'min_{role}'], b[f'max_{role}']
            if not lo <= count[role] <= hi:
                raise RouteError(f"route has {count[role]} {role} holds; {b['title']} routes have {lo}..{hi}",
                                 f"{'no' if count[role] < lo else 'too many'} {role} holds")
        if not b['min_holds'] <= len(holds) <= b['max_holds']:
            raise RouteError(f"route has {len(holds)} holds; routes here have {b['min_holds']}..{b['max_holds']}",
                             f"fewer than {b['min_holds']} holds" if len(holds) < b['min_holds'] else f"more than {b['max_holds']} holds")

    def check_prompt(self, board_name, holds):
        """Raise RouteError unless the holds (a partial route) can still be completed into a route
        the board allows: not too many start or finish holds, and room left for what is missing."""
        b = self.board(board_name)
        count = _role_counts(holds)
        for role in ('start', 'finish'):
            if count[role] > b[f'max_{role}']:
                raise RouteError(f"the prompt has {count[role]} {role} holds; {b['title']} routes have "
                                 f"at most {b[f'max_{role}']}", f'too many {role} holds')
        needed = len(holds) + max(0, b['min_start'] - count['start']) + max(0, b['min_finish'] - count['finish'])
        if needed > b['max_holds']:
            raise RouteError(f"the prompt has {len(holds)} holds and needs {needed - len(holds)} more for a start and "
                             f"finish; routes here have at most {b['max_holds']} holds", f"more than {b['max_holds']} holds")

    def check_angle(self, board_name, angle):
        """An angle for this board (None = unknown, only where the board's data has no angles)."""
        b = self.board(board_name)
        if angle is None:
            if b['angle_known'] and len(b['angles']) == 1:
                return b['angles'][0]  # the MoonBoard is set at 40 degrees, and only at 40
            if b['angle_known']:
                raise RouteError(f"{b['title']} routes need an angle: one of {_angle_list(b['angles'])}")
            return None
        try:
            value = float(angle)
        except (TypeError, ValueError):
            raise RouteError(f"angle {angle!r} is not a number") from None
        if isinstance(angle, bool) or not math.isfinite(value) or value != int(value):
            raise RouteError(f"angle {angle!r} is not a whole number of degrees")
        a = int(value)
        if b['angle_known'] and a not in b['angles']:
            raise RouteError(f"angle {angle} is impossible on {b['title']}: use one of {_angle_list(b['angles'])}",
                             'impossible angle')
        if not b['angle_known']:
            return None  # the data cannot say anything about angles on this board
        return a

    def route(self, board_name, route, angle=None, complete=True, wall=None):
        """A user's route string (or MoonBoard dict) and angle -> (holds, angle or None), checked:
        an unknown board, an impossible angle, a malformed route, a hold the board lacks (or the
        wall, where one is given), or (if complete) a route the rules do not allow raises
        RouteError; else a prompt that cannot be completed does."""
        a = self.check_angle(board_name, angle)
        holds = self.parse(board_name, route)
        self.check_on_wall(wall, holds)
        if complete:
            self.validate(board_name, holds)
        else:
            self.check_prompt(board_name, holds)
        return holds, a

    # tokens --------------------------------------------------------------------

    def encode(self, board_name, angle, difficulty, holds):
        """A route -> its token ids: <board> <angle> <grade> holds (canonical order) <end>."""
        grade = None if difficulty is None else font_grade(difficulty)
        return self.prefix(board_name, angle, grade) + self.hold_tokens(board_name, holds) + [END]

    def prefix(self, board_name, angle, grade):
        """The CONDITIONING tokens that open a sequence; grade is an integer difficulty or None."""
        return [self.board_token[board_name], self.angle_token[angle], self.grade_token[grade]]

    def hold_tokens(self, board_name, holds):
        return [self.hold_token[(board_name, p, r)] for p, r in self.canonical(board_name, holds)]

    def decode(self, tokens):
        """Token ids -> dict(board, angle, grade, holds). Raises RouteError on a malformed sequence."""
        tokens = [int(t) for t in tokens]
        if len(tokens) < CONDITIONING + 1 or tokens[0] not in self.token_board or tokens[1] not in self.token_angle \
                or tokens[2] not in self.token_grade or tokens[-1] != END:
            raise RouteError("malformed token sequence: expected <board> <angle> <grade> holds <end>")
        board = self.token_board[tokens[0]]
        holds, last_rank = [], -1
        for t in tokens[CONDITIONING:-1]:
            if self.kind[t] != 'hold' or self.meta['hold_board'][t] != board:
                raise RouteError(f"token {self.itos[t]} is not a hold of board {board}")
            if self.meta['hold_rank'][t] <= last_rank:
                raise RouteError(f"token {self.itos[t]} is out of canonical order")
            last_rank = self.meta['hold_rank'][t]
            holds.append((self.meta['hold_placement'][t], self.meta['hold_role'][t]))
        return dict(board=board, angle=self.token_angle[tokens[1]], grade=self.token_grade[tokens[2]], holds=holds)


def _role_counts(holds):
    return {r: sum(1 for _, role in holds if role == r) for r in ROLES}


def _angle_list(angles):
    steps = {b - a for a, b in zip(angles, angles[1:])}
    if len(angles) > 2 and len(steps) == 1:
        return f'{angles[0]}..{angles[-1]} in steps of {steps.pop()}'
    return ', '.join(map(str, angles))


# -----------------------------------------------------------------------------
# walls: the board a climber owns

class Wall:
    """A board as it is mounted on one climber's wall: one of its sizes, with some of its hold sets
    (all of them when none are named). placements are the board's holds that are on it; leds maps
    each to its LED position on that size (sizes number their LEDs differently); key identifies
    the wall. Made by Grammar.wall(), which checks what the user named."""

    def __init__(self, board, size, sets):
        self.board, self.size, self.sets = board['name'], size, sets  # sets: as Grammar.wall sorted them
        self.set_ids = None if sets is None else tuple(s['id'] for s in sets)
        named = None if sets is None else set(self.set_ids)
        on_size = set(size['holds'])
        self.placements = frozenset(p for p, _, _ in board['holds'] if p in on_size
                                    and (named is None or board['hold_set'].get(p) in named))
        self.leds = {p: pos for p, pos in size['leds'].items() if p in self.placements}
        self.key = (self.board, size['id'], self.set_ids)
        self.slug = f"size{size['id']}" + ('' if sets is None else '-sets' + '+'.join(map(str, self.set_ids)))
        self._board = board
        self.whole = size['id'] == board['size'] and sets is None  # the board as configured
        where = board['layout_title'] + (f" {size['name']}" if size['name'] else '')
        self.title = where + ('' if sets is None else ', ' + ' + '.join(s['name'] for s in sets))

    def fits(self, sizes, sets):
        """Whether a route fits this wall, from what prepare.py stores per route: the sizes it
        fits and the hold sets it uses."""
        return self.size['id'] in sizes and (self.set_ids is None or set(sets) <= set(self.set_ids))

    def view(self):
        """The board as draw.py and the page draw it for this wall: only the wall's holds, within
        the size's edges."""
        left, right, bottom, top = self._board['edges']
        s_left, s_right, s_bottom, s_top = self.size.get('edges') or self._board['edges']
        return dict(self._board, title=self.title, holds=[h for h in self._board['holds'] if h[0] in self.placements],
                    edges=(max(left, s_left), min(right, s_right), max(bottom, s_bottom), min(top, s_top)))

    def lighting(self, led_api=3):
        """What lights.route_packets needs to light a route on this wall: its size's LED positions."""
        return dict(format=self._board['format'], title=self.title, leds=self.leds,
                    role_colors=self._board['role_colors'], led_api=led_api)

    def describe(self):
        return dict(size=self.size['id'], size_name=self.size['name'], sets=None if self.sets is None else
                    [s['id'] for s in self.sets], set_names=None if self.sets is None else [s['name'] for s in self.sets],
                    title=self.title, holds=len(self.placements))


def _pick(items, text, what, board):
    """The item of a board's sizes or sets a user named by its id or its name (any case)."""
    want = ' '.join(str(text).split()).lower()
    for item in items:
        if want in (str(item['id']).lower(), ' '.join(str(item['name']).split()).lower()):
            return item
    have = ', '.join(f"{item['id']} {item['name']!r}" for item in items)
    raise RouteError(f"{board['layout_title']} has no {what} {str(text)!r}: its {what}s are {have}", f'unknown {what}')


# -----------------------------------------------------------------------------
# splits and safe loading

def split_of(key, fractions=(0.90, 0.05, 0.05)):
    """Deterministic split of a climb from a hash of its key, so every angle of a climb (and every
    climb sharing its holds, when the key is the group's) lands in the same split."""
    h = int.from_bytes(hashlib.sha256(b'boardgpt-split:' + key.encode()).digest()[:8], 'big') / 2 ** 64
    edge = 0.0
    for name, frac in zip(SPLITS, fractions):
        edge += frac
        if h < edge:
            return name
    return SPLITS[-1]


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # meta.pkl holds only plain Python values: refuse any class
        raise pickle.UnpicklingError(f"it refers to {module}.{name}; only plain values are allowed")


def load_meta(folder):
    """A prepared dataset's meta.pkl, loaded without executing anything in it (it may come from
    someone else). folder: data_root/dataset, as prepare.py wrote it."""
    path = os.path.join(folder, 'meta.pkl')
    try:
        with open(path, 'rb') as f:
            meta = _PlainUnpickler(f).load()
    except FileNotFoundError:
        dataset = os.path.basename(os.path.normpath(folder))
        raise InputError(f"no {path}: prepare the data first (python prepare.py config/{dataset}.py)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
        raise InputError(f"{path} is not a meta.pkl written by prepare.py ({e}): run prepare.py again") from None
    if not isinstance(meta, dict) or not {'boards', 'itos', 'splits'} <= set(meta):
        raise InputError(f"{path} is not a meta.pkl written by prepare.py: run prepare.py again")
    if not all(isinstance(b, dict) and 'sizes' in b for b in meta['boards']):
        raise InputError(f"{path} was written by an older prepare.py (no board sizes or hold sets): run prepare.py again")
    return meta


def load_split(folder, meta, split, lists=True):
    """One split of a prepared dataset, the one reader of the format prepare.py writes: tokens, a
    list of each route's token ids (<board> <angle> <grade> holds <end>); board, climb_id, name, setter
    (N,) object arrays; sizes, sets (N,) object arrays of tuples: the sizes the route fits and the hold
    sets it uses (Wall.fits); angle, difficulty, ascents (N,) float64 arrays, NaN where unknown.
    lists=False: instead of tokens, flat (the split's uint16 tokens) and offset (N + 1,): route i is
    flat[offset[i]:offset[i + 1]]; a list per route is most of the load time of a big dataset, and
    the known-climb index needs none."""
    path = os.path.join(folder, f'{split}.bin')
    if not os.path.isfile(path):
        raise InputError(f"no {path}: prepare the data again (python prepare.py <config>)")
    flat = np.fromfile(path, dtype=np.uint16)
    arrays = meta['splits'][split]
    offsets = arrays['offset']
    if offsets[-1] != len(flat):
        raise InputError(f"{path} does not match its meta.pkl: prepare the data again")

    def floats(values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    if lists:
        data = flat.tolist()
        collecting = gc.isenabled()
        gc.disable()  # making a list per route set off full collections over the heap: 7x the time at 600k routes
        try:
            tokens = dict(tokens=[data[a:b] for a, b in zip(offsets[:-1], offsets[1:])])
        finally:
            if collecting:
                gc.enable()
    else:
        tokens = dict(flat=flat, offset=np.asarray(offsets, dtype=np.int64))
    return dict(**tokens,
                board=np.array(arrays['board'], dtype=object), climb_id=np.array(arrays['climb_id'], dtype=object),
                name=np.array(arrays.get('name', [None] * (len(offsets) - 1)), dtype=object),
                setter=np.array(arrays.get('setter', [None] * (len(offsets) - 1)), dtype=object),
                sizes=_tuples(arrays['sizes']), sets=_tuples(arrays['sets']),
                angle=floats(arrays['angle']), difficulty=floats(arrays['difficulty']), ascents=floats(arrays['ascents']))


def _tuples(values):
    out = np.empty(len(values), dtype=object)
    out[:] = [tuple(v) for v in values]
    return out


def fits_wall(rows, wall):
    """(N,) bool: which rows of a load_split() dict (or any dict with its board, sizes and sets
    columns) fit the wall (all of them for None)."""
    if wall is None:
        return np.ones(len(rows['board']), dtype=bool)
    return np.array([b == wall.board and wall.fits(sz, st) for b, sz, st in zip(rows['board'], rows['sizes'], rows['sets'])],
                    dtype=bool)


def select(rows, keep):
    """The rows of a load_split() dict (or of one built from it) where keep (N,) bool is True."""
    keep = np.asarray(keep, dtype=bool)
    index = np.flatnonzero(keep)
    return {k: [v[i] for i in index] if isinstance(v, list) else v[keep] for k, v in rows.items()}


def sample_rows(rows, n):
    """A fixed sample of n rows of a load_split() dict, as a keep mask: the rows of least hash of
    (board, climb, angle), so the same rows at every evaluation and on every machine, and much the
    same share of each board and angle at any size of data; every row where there are at most n."""
    keys = [f"boardgpt-sample:{b}:{c}:{a}" for b, c, a in zip(rows['board'], rows['climb_id'], rows['angle'])]
    keep = np.ones(len(keys), dtype=bool)
    if len(keys) > n:
        h = np.array([int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], 'big') for k in keys], dtype=np.uint64)
        keep[:] = False
        keep[np.argsort(h, kind='stable')[:n]] = True
    return keep


def sample_split(rows, n):
    """A load_split(..., lists=False) dict's fixed sample of n rows (sample_rows), with each route's
    tokens as a list, as load_split() gives them: a list per route only for the rows sampled."""
    keep = sample_rows(rows, n)
    out = {k: v[keep] for k, v in rows.items() if k not in ('flat', 'offset')}
    flat, offset = rows['flat'], rows['offset']
    out['tokens'] = [flat[offset[i]:offset[i + 1]].tolist() for i in np.flatnonzero(keep)]
    return out


def encoder_input(tokens):
    """A route's full token sequence -> the grade model's input: <board> <angle> holds, without
    the grade token (what it predicts) and <end>."""
    return tokens[:CONDITIONING - 1] + tokens[CONDITIONING:-1]


def pad(rows, width=None, fill=PAD):
    """Token lists -> an (N, width) int64 array, each row padded at the end with fill."""
    width = max([len(r) for r in rows] + [1]) if width is None else width
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


# -----------------------------------------------------------------------------
# the grammar as a mask over the next token, for constrained decoding

class DecodingRules:
    """Which token may come next, for a batch of routes being decoded together, so that every
    finished route is valid by construction: holds of the row's board only, in strictly rising
    canonical rank (hence no hold twice in a role), no placement twice, start and finish counts
    within the board's rules, the route's required holds (a prompt) all included, no dead ends
    (a route can always still be completed), and <end> only once the route is complete.

    rows: list of (board name, required holds [(placement, role)]), one per route in the batch;
    walls: None, or per row a Wall (or None: the whole board) whose holds alone the row may use.
    Call mask() -> (B, V) bool before sampling each hold, then update(tokens) after."""

    def __init__(self, grammar, rows, device='cpu', walls=None):
        import torch  # the grammar itself needs no torch; only decoding does
        self.torch = torch
        meta, V = grammar.meta, grammar.vocab_size
        board_index = {name: i for i, name in enumerate(grammar.boards)}
        places = {}
        tok_board, tok_rank, tok_place = ([-1] * V for _ in range(3))
        tok_role = [len(ROLES)] * V  # not a hold: a role column of its own, never allowed
        for t, k in enumerate(meta['kind']):
            if k == 'hold':
                b, p = meta['hold_board'][t], meta['hold_placement'][t]
                tok_board[t], tok_role[t], tok_rank[t] = board_index[b], ROLES.index(meta['hold_role'][t]), meta['hold_rank'][t]
                tok_place[t] = places.setdefault((b, p), len(places))
        def long(values):
            return torch.tensor(values, dtype=torch.long, device=device)
        self.tok_role, self.tok_rank, self.tok_place = long(tok_role), long(tok_rank), long(tok_place)
        board = long(tok_board)
        is_hold = board >= 0
        # a placement's tokens (one per role), padded with V, a column that only absorbs writes
        same_place = [[] for _ in range(len(places) + 1)]
        for t, p in enumerate(tok_place):
            if p >= 0:
                same_place[p].append(t)
        width = max(len(ts) for ts in same_place)
        self.place_tokens = long([ts + [V] * (width - len(ts)) for ts in same_place])
        # the walls of the batch: index 0 is every board whole; a wall blocks the holds it lacks
        walls = walls or [None] * len(rows)
        wall_keys, off_wall = [None], [np.zeros(V, dtype=bool)]
        for w in walls:
            if w is not None and not w.whole and w.key not in wall_keys:
                wall_keys.append(w.key)
                off_wall.append(grammar.off_wall(w))
        wall_index = [0 if w is None or w.whole else wall_keys.index(w.key) for w in walls]
        # after[w, t, r]: tokens of t's board and role r on wall w ranked above t, for the dead-end check
        after = np.zeros((len(wall_keys), V, len(ROLES)), dtype=np.int64)
        ranks, boards, roles = np.array(tok_rank), np.array(tok_board), np.array(tok_role)
        for w, off in enumerate(off_wall):
            for b in range(len(board_index)):
                on_board = boards == b
                for r in range(len(ROLES)):
                    group = np.sort(ranks[on_board & (roles == r) & ~off])
                    after[w, on_board, r] = len(group) - np.searchsorted(group, ranks[on_board], side='right')
        self.after = torch.from_numpy(after).to(device)
        self.wall_index = long(wall_index)
        rules = [grammar.boards[name] for name in grammar.boards]
        rule = lambda key: long([b[key] for b in rules])  # noqa: E731
        B = len(rows)
        bi = long([board_index[b] for b, _ in rows])
        self.min_start, self.max_start = rule('min_start')[bi], rule('max_start')[bi]
        self.min_finish, self.max_finish = rule('min_finish')[bi], rule('max_finish')[bi]
        self.min_holds, self.max_holds = rule('min_holds')[bi], rule('max_holds')[bi]
        required = [grammar.hold_tokens(b, holds) for b, holds in rows]
        R = max([len(r) for r in required] + [1])
        self.required = long([r + [-1] * (R - len(r)) for r in required])
        self.req_len = long([len(r) for r in required])
        self.req_ptr = torch.zeros(B, dtype=torch.long, device=device)
        self.req_left = torch.zeros(B, len(ROLES), dtype=torch.long, device=device)  # required, not yet emitted
        # blocked[b, t]: t may never come in row b: not a hold of the row's board, its placement
        # already used, or its placement kept for a prompt's hold in another role. Rows only ever
        # block more, so update() keeps it as tokens arrive and mask() reads it whole.
        self.blocked = torch.ones(B, V + 1, dtype=torch.bool, device=device)
        self.blocked[:, :V] = ~(is_hold[None, :] & (board[None, :] == bi[:, None]))
        self.blocked[:, :V] |= torch.from_numpy(np.stack(off_wall)).to(device)[self.wall_index]
        for i, r in enumerate(required):
            for t in r:
                self.req_left[i, tok_role[t]] += 1
                self.blocked[i, self.place_tokens[tok_place[t]]] = True
            for t in r:
                self.blocked[i, t] = False
        self.last_rank = torch.full((B,), -1, dtype=torch.long, device=device)
        self.count = torch.zeros(B, len(ROLES), dtype=torch.long, device=device)
        self.done = torch.zeros(B, dtype=torch.bool, device=device)
        self.V = V

    ROW_STATE = ('min_start', 'max_start', 'min_finish', 'max_finish', 'min_holds', 'max_holds',
                 'required', 'req_len', 'req_ptr', 'req_left', 'last_rank', 'blocked', 'count', 'done', 'wall_index')

    def keep(self, rows):
        """Go on with only these rows of the batch (a bool mask or indices), e.g. the unfinished."""
        for name in self.ROW_STATE:
            setattr(self, name, getattr(self, name)[rows])

    def _next_required(self):
        has = self.req_ptr < self.req_len
        tok = self.required.gather(1, self.req_ptr.clamp(max=self.required.size(1) - 1)[:, None]).squeeze(1)
        return self.torch.where(has, tok, self.torch.full_like(tok, -1))

    def mask(self):
        """(B, V) bool: the tokens each row may take next. The rules per role are worked out on a
        (B, roles) table and spread over the vocabulary once, as this runs at every step."""
        torch = self.torch
        START, MIDDLE, FINISH, FOOT = range(len(ROLES))
        B = len(self.done)
        s, f = self.count[:, START], self.count[:, FINISH]
        n = self.count.sum(1)
        next_req = self._next_required()
        has_req = next_req >= 0
        next_req_rank = torch.where(has_req, self.tok_rank[next_req.clamp(min=0)], torch.full_like(next_req, 1 << 30))
        # hard per-role rules, that a prompt's next hold obeys too: starts rank first (no start
        # yet, nothing else), feet rank after finishes
        hard = torch.ones(B, len(ROLES) + 1, dtype=torch.bool, device=s.device)
        hard[:, len(ROLES)] = False
        hard[:, MIDDLE:] &= ~(s < self.min_start)[:, None]
        hard[:, FOOT] &= f >= self.min_finish
        # room for starts and finishes beyond the required ones still to come, and the hold
        # budget: when only the holds the route still needs fit, only those may come. A prompt's
        # next hold is exempt from both (it is one of the holds still needed).
        soft = hard.clone()
        soft[:, START] &= s + self.req_left[:, START] < self.max_start
        soft[:, FINISH] &= f + self.req_left[:, FINISH] < self.max_finish
        need_s = torch.maximum(self.min_start - s, self.req_left[:, START]).clamp(min=0)
        need_f = torch.maximum(self.min_finish - f, self.req_left[:, FINISH]).clamp(min=0)
        tight = n + need_s + need_f + self.req_left[:, MIDDLE] + self.req_left[:, FOOT] >= self.max_holds
        soft[:, START] &= ~tight | (self.min_start - s > self.req_left[:, START])
        soft[:, FINISH] &= ~tight | (self.min_finish - f > self.req_left[:, FINISH])
        soft[:, MIDDLE] &= ~tight
        soft[:, FOOT] &= ~tight
        rank = self.tok_rank[None, :]
        ok = (rank > self.last_rank[:, None]) & (rank <= next_req_rank[:, None]) & ~self.blocked[:, :self.V]
        rows = has_req.nonzero().squeeze(1)
        req = next_req[rows]
        req_ok = ok[rows, req] & hard[rows, self.tok_role[req]]
        ok &= soft.gather(1, self.tok_role[None, :].expand(B, -1))
        ok[rows, req] = req_ok
        # no dead ends: a route short of min_holds must have holds left above its last one. Only
        # rows still short need the check (the first few steps), so only they pay for it.
        short = ((n + 1) < self.min_holds).nonzero().squeeze(1)
        if len(short):
            role = self.tok_role[None, :]
            after = self.after[self.wall_index[short]]  # (short rows, V, roles): what each row's wall leaves
            def room_after(left, r):  # how many more holds of role r each token leaves room for
                return torch.minimum((left[short, None] - (role == r).long()).clamp(min=0), after[:, :, r])
            capacity = after[:, :, MIDDLE] + after[:, :, FOOT] + room_after(self.max_start - s, START) \
                + room_after(self.max_finish - f, FINISH)  # (short rows, V); hand and foot holds have no cap
            ok[short] &= capacity >= self.min_holds[short, None]
        end = (s >= self.min_start) & (f >= self.min_finish) & (n >= self.min_holds) & (self.req_ptr == self.req_len)
        ok[:, END] = end
        stuck = ~ok.any(1)  # cannot happen by the rules above; <end> keeps decoding going if it did
        ok[:, END] |= stuck | self.done
        ok[self.done, :END] = False
        ok[self.done, END + 1:] = False
        return ok

    def update(self, tokens):
        tokens = tokens.view(-1)
        hold = (self.tok_role[tokens] < len(ROLES)) & ~self.done
        rows = hold.nonzero().squeeze(1)
        t = tokens[rows]
        self.last_rank[rows] = self.tok_rank[t]
        self.blocked[rows[:, None], self.place_tokens[self.tok_place[t]]] = True
        self.count[rows, self.tok_role[t]] += 1
        hit = rows[t == self._next_required()[rows]]
        self.req_left[hit, self.tok_role[tokens[hit]]] -= 1
        self.req_ptr[hit] += 1
        self.done |= tokens == END
