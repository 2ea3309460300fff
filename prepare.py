"""
Real board data in, token bins out.

    python prepare.py config/kilter.py --download
    python prepare.py config/kilter.py --db=~/Downloads/db.sqlite3 --min_ascents=5

Reads boardsesh's nightly snapshot of a board (--download fetches it; --db= a snapshot folder or
climbs file), an Aurora app database (Kilter, Tension; opened read-only) or MoonBoard problem
JSON, keeps the routes that pass the filters below, and writes to data/<dataset>/:
- train.bin, val.bin, test.bin: uint16 token streams, one sequence per (climb, angle),
  <board> <angle> <grade> holds <end> (the grammar is in routes.py);
- meta.pkl: vocabulary, token kinds and hold attributes, board geometry, role rules and LED map
  (where the database has one), and per-route arrays (offset, board, angle, difficulty, ascents,
  quality, climb id, name, setter) per split.
Every row read is accounted for: the table printed at the end counts rows removed per reason.
meta.pkl also carries what a climber's wall can be (routes.Wall): every size of the board with the
holds it has and their LED positions, each hold's set, and per route the sizes it fits and the
sets it uses; the report counts the routes that fit each size and each set alone.
"""

import gzip
import http.client
import json
import os
import pickle
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict

import numpy as np

from configurator import configure
from lights import read_led_map, table_names
from routes import (FONT, FONT_TO_DIFFICULTY, MAX_DIFFICULTY, MIN_DIFFICULTY, MOONBOARD_COLUMNS, MOONBOARD_ROWS,
                    SPLITS, Grammar, InputError, RouteError, block_size, build_vocab, split_of)

# -----------------------------------------------------------------------------
# config: the boards of the dataset, and the filters
dataset = 'kilter'  # output folder data/<dataset>/
boards = []  # board specs, set by the config file (see config/kilter.py)
db = ''  # read this database / JSON / boardsesh snapshot instead of the board's default path (single-board datasets)
catalog = ''  # a boardsesh climbs file's catalogue of board hardware (default: the one of its snapshot folder)
download = False  # fetch the board's newest boardsesh snapshot into data_root/board-snapshots/ (once per build), and prepare it
snapshot_url = 'https://snapshots.boardsesh.com/board-snapshots'  # boardsesh's public snapshot bucket
angle_min = 0  # keep rows whose angle (where known) lies in angle_min..angle_max
angle_max = 90
min_ascents = 1  # keep rows with at least this many ascents (where the data counts them)
min_quality = 0.0  # keep rows with at least this quality average (where known)
min_holds = 3  # hold-count bounds; they also become the board's route rules for sampling
max_holds = 40
data_root = 'data'
size = ''  # your wall (a size and hold sets of the first board, by id or name): the report counts its routes
sets = ''
# -----------------------------------------------------------------------------
configure(globals())

HOW_TO_GET_A_DB = ("Get one: the db.sqlite3 inside the board app's Android package (docs/data.md, 'The apps' own "
                   "files'); put it there or pass --db=PATH")


def fail(message):
    raise InputError(message)


def open_aurora(path):
    """The app database, read-only: we never write to a user's database."""
    if not os.path.isfile(path):
        fail(f"no database at {path}. {HOW_TO_GET_A_DB}")
    try:
        con = sqlite3.connect(f'file:{os.path.abspath(path)}?mode=ro', uri=True)
        tables = table_names(con)
    except sqlite3.DatabaseError as e:
        fail(f"{path} is not an SQLite database ({e}). {HOW_TO_GET_A_DB}")
    missing = {'climbs', 'placements', 'holes', 'layouts', 'product_sizes'} - tables
    if missing:
        fail(f"{path} is not an Aurora board database (no table {', '.join(sorted(missing))}). {HOW_TO_GET_A_DB}")
    return con, tables


def read_climbs(con, spec):
    """(uuid, name, setter, frames, setter's angle, why it is not a climb to browse and climb as
    set, or None) of each row of con's climbs table (an app database) or view (a boardsesh
    snapshot, whose flags hidden and missing holds the app lacks)."""
    columns = {r[1] for r in con.execute("PRAGMA table_info(climbs)")}
    optional = ', '.join(c if c in columns else f'NULL AS {c}'
                         for c in ('setter_username', 'is_hidden', 'missing_hold_count'))
    for uuid, name, layout_id, frames, frames_count, is_draft, is_listed, angle, setter, hidden, missing in con.execute(
            f"SELECT uuid, name, layout_id, frames, frames_count, is_draft, is_listed, angle, {optional} FROM climbs "
            f"ORDER BY uuid"):
        problem = ('other layout' if layout_id != spec['layout_id'] else 'draft' if is_draft else
                   'unlisted' if not is_listed else 'hidden' if hidden else
                   'animated (several frames)' if frames_count and frames_count > 1 else
                   'missing holds' if missing else None)
        yield uuid, name, setter, frames, angle, problem


def read_aurora(spec, path, con=None):
    """Board geometry and one row per (climb, angle) from an Aurora app database (or from con, a
    connection whose tables or views are named like the app's: a boardsesh snapshot)."""
    own = con is None
    con, tables = open_aurora(path) if own else (con, table_names(con))
    layout = con.execute("SELECT name, product_id FROM layouts WHERE id = ?", (spec['layout_id'],)).fetchone()
    if layout is None:
        have = [r[0] for r in con.execute("SELECT id FROM layouts")]
        fail(f"{path} has no layout {spec['layout_id']} (layouts: {have}); set layout_id in the config")
    size = con.execute("SELECT edge_left, edge_right, edge_bottom, edge_top, name FROM product_sizes WHERE id = ?",
                       (spec['product_size_id'],)).fetchone()
    if size is None:
        fail(f"{path} has no product size {spec['product_size_id']}; set product_size_id in the config")
    left, right, bottom, top, size_name = size
    # a hold the board can display: a placement of the layout inside the size, with an LED where
    # the database lists the size's LEDs
    query = ("SELECT p.id, h.x, h.y FROM placements p JOIN holes h ON h.id = p.hole_id "
             "WHERE p.layout_id = ? AND h.x > ? AND h.x < ? AND h.y > ? AND h.y < ?")
    args = [spec['layout_id'], left, right, bottom, top]
    if 'leds' in tables and con.execute("SELECT 1 FROM leds WHERE product_size_id = ?", (spec['product_size_id'],)).fetchone():
        query += " AND p.hole_id IN (SELECT hole_id FROM leds WHERE product_size_id = ?)"
        args.append(spec['product_size_id'])
    holds = [tuple(r) for r in con.execute(query + " ORDER BY p.id", args)]
    if not holds:
        fail(f"{path}: layout {spec['layout_id']} has no holds on product size {spec['product_size_id']}")
    role_ids = spec.get('role_ids') or catalogue_roles(con, tables, layout[1], path)
    if 'placement_roles' in tables:
        known_roles = {r[0] for r in con.execute("SELECT id FROM placement_roles")}
        unknown = [r for r in role_ids.values() if r not in known_roles]
        if known_roles and unknown:
            fail(f"{path}: role ids {unknown} are not in placement_roles (have {sorted(known_roles)}); set role_ids")

    # grades: per angle from climb_stats where the database has it, else the per-climb cache
    if not {'climb_stats', 'climb_cache_fields'} & tables:
        fail(f"{path} has neither climb_stats nor climb_cache_fields: it carries no grades or angles, so every "
             f"route would be ungraded. Use a database with its climb statistics (the app's own db.sqlite3 has them)")
    per_angle = 'climb_stats' in tables
    stats = defaultdict(list)
    if per_angle:
        for uuid, angle, diff, asc, qual in con.execute(
                "SELECT climb_uuid, angle, display_difficulty, ascensionist_count, quality_average FROM climb_stats"):
            stats[uuid].append((angle, diff, asc, qual))
    elif 'climb_cache_fields' in tables:
        for uuid, diff, asc, qual in con.execute(
                "SELECT climb_uuid, display_difficulty, ascensionist_count, quality_average FROM climb_cache_fields"):
            stats[uuid].append((None, diff, asc, qual))
    # the angles the board tilts to: the config's, else the app's list, else every Aurora board's 0..70
    angles = spec.get('angles')
    if not angles and 'products_angles' in tables:
        angles = sorted(a for (a,) in con.execute("SELECT angle FROM products_angles WHERE product_id = ?", (layout[1],)))
    angles = angles or AURORA_ANGLES
    rows = []
    for uuid, name, setter, frames, setter_angle, problem in read_climbs(con, spec):
        # a climb nobody has logged has no stats row: it counts as 0 ascents where the database
        # counts ascents per angle, and as unknown where it has none
        for angle, diff, asc, qual in stats.get(uuid) or [(setter_angle if per_angle else None, None, 0 if per_angle else None, None)]:
            rows.append(dict(climb_id=uuid, name=name, setter=setter, route=frames, angle=angle, difficulty=diff,
                             ascents=asc, quality=qual, problem=problem))
    # the walls this board can be: each hold's set, and every size of the product with the board's
    # holds it has (by its LEDs where the database lists them, else by its edges) and their LED
    # positions (lights.py: each size numbers its LEDs differently), and each role's LED colour
    on_board = {p: (x, y) for p, x, y in holds}
    hold_set = {p: s for p, s in con.execute("SELECT id, set_id FROM placements WHERE layout_id = ?",
                                              (spec['layout_id'],)) if p in on_board}
    set_names = dict(con.execute("SELECT id, name FROM sets")) if 'sets' in tables else {}
    sets = [dict(id=s, name=set_names.get(s) or f'set {s}') for s in sorted({s for s in hold_set.values() if s is not None})]
    sizes = []
    for size_id, name, s_left, s_right, s_bottom, s_top in con.execute(
            "SELECT id, name, edge_left, edge_right, edge_bottom, edge_top FROM product_sizes WHERE product_id = ? "
            "ORDER BY id", (layout[1],)):
        leds, _ = read_led_map(con, size_id, spec['layout_id'])
        if leds:
            on_size = [p for p in on_board if p in leds]
        else:
            on_size = [p for p, (x, y) in on_board.items() if s_left < x < s_right and s_bottom < y < s_top]
        if on_size:
            sizes.append(dict(id=size_id, name=name or f'size {size_id}', holds=sorted(on_size),
                              edges=(s_left, s_right, s_bottom, s_top),
                              leds={p: leds[p] for p in on_size if p in leds}))
    _, role_colors = read_led_map(con, spec['product_size_id'], spec['layout_id'])
    if own:
        con.close()
    layout_title = layout[0] or 'layout %d' % spec['layout_id']
    colors = {role: role_colors.get(code) for role, code in role_ids.items()}
    return dict(holds=holds, edges=(left, right, bottom, top), angle_known=per_angle, title=f"{layout_title} {size_name}",
                layout_title=layout_title, size=spec['product_size_id'], sizes=sizes, sets=sets, hold_set=hold_set,
                set_conflicts=0, role_colors=colors if all(colors.values()) else {}, role_ids=role_ids,
                angles=angles), rows


AURORA_ANGLES = list(range(0, 75, 5))  # what boardsesh offers on every Aurora board
ROLE_NAMES = {'start': 'start', 'middle': 'middle', 'hand': 'middle', 'finish': 'finish', 'foot': 'foot'}


def catalogue_roles(con, tables, product_id, path):
    """The role ids of a product by their names in placement_roles (start, middle or hand, finish, foot)."""
    if 'placement_roles' not in tables:
        fail(f"{path} has no placement_roles: set role_ids in the config")
    found = {}
    for role_id, name in con.execute("SELECT id, name FROM placement_roles WHERE product_id = ? ORDER BY position, id",
                                     (product_id,)):
        found.setdefault(ROLE_NAMES.get(str(name).strip().lower()), role_id)
    missing = [r for r in ('start', 'middle', 'finish', 'foot') if r not in found]
    if missing:
        fail(f"{path}: product {product_id} has no role named {', '.join(missing)} in placement_roles; set role_ids "
             f"in the config")
    return {r: found[r] for r in ('start', 'middle', 'finish', 'foot')}


MOONBOARD_HOLDS = [(f'{c}{r}', i, r) for i, c in enumerate(MOONBOARD_COLUMNS) for r in range(1, MOONBOARD_ROWS + 1)]
MOONBOARD_ROLES = dict(start='SH', middle='IH', finish='FH')  # the website's names; no foot role: feet are free
MOONBOARD_ANGLES = [25, 40]  # the two the MoonBoard is built at (boardsesh's constants)
MOONBOARD_JSON_ANGLE = 40  # the website's problems (its 2016 set) are at 40 degrees


def moonboard_geometry(spec, hold_set, set_conflicts):
    """The MoonBoard's grid (it is in no database: both sources describe it the same way)."""
    holds = MOONBOARD_HOLDS
    edges = (-0.5, len(MOONBOARD_COLUMNS) - 0.5, 0.5, MOONBOARD_ROWS + 0.5)
    sets = [dict(id=i, name=name) for name, i in sorted(spec.get('set_ids', {}).items(), key=lambda kv: kv[1])
            if i in hold_set.values()]
    title = spec.get('title', 'MoonBoard')
    size = dict(id=1, name='11 x 18', holds=sorted(h for h, _, _ in holds), edges=edges, leds={})  # one size; lights.py numbers its LEDs
    return dict(holds=holds, edges=edges, angle_known=True, title=title, layout_title=title, size=1, sizes=[size],
                sets=sets, hold_set=hold_set, set_conflicts=set_conflicts, role_colors={},
                role_ids=spec.get('role_ids') or MOONBOARD_ROLES, angles=spec.get('angles') or MOONBOARD_ANGLES)


def read_moonboard(spec, path):
    """MoonBoard problems as scraped from the website: one row per problem, at the board's angle."""
    if not os.path.isfile(path):
        fail(f"no MoonBoard problems at {path}: give the problems JSON with --db=PATH")
    try:
        with open(path, encoding='utf-8') as f:
            problems = json.load(f)['problems']
        if not isinstance(problems, list):
            raise TypeError('problems is not a list')
    except (ValueError, KeyError, TypeError) as e:
        fail(f"{path} is not MoonBoard problem JSON ({e.__class__.__name__}: {e}); expected {{'problems': [...]}}")
    # the JSON names no set per hold, only the sets mounted when each problem was set: a hold's set
    # is the one mounted for every problem that uses it, or, where the problems disagree, for most
    set_ids = dict(spec.get('set_ids', {}))
    votes, uses = defaultdict(Counter), Counter()
    for p in problems:
        if isinstance(p, dict) and isinstance(p.get('holds'), dict) and isinstance(p.get('holds_setup'), list):
            names = {str(h).strip().upper() for v in p['holds'].values() if isinstance(v, list) for h in v}
            for h in names:
                uses[h] += 1
                for s in p['holds_setup']:
                    votes[h][set_ids.setdefault(str(s), max(set_ids.values(), default=0) + 1)] += 1
    hold_set, conflicts = {}, 0
    for h, _, _ in MOONBOARD_HOLDS:
        if votes[h]:
            best = max(votes[h].values())
            hold_set[h] = min(s for s, n in votes[h].items() if n == best)
            conflicts += best < uses[h]
    rows = []
    for i, p in enumerate(problems):
        if not isinstance(p, dict) or 'site_id' not in p:
            rows.append(dict(climb_id=f'#{i}', name=None, setter=None, route=None, angle=None, difficulty=None,
                             ascents=None, quality=None, problem='malformed problem (no site_id)'))
            continue
        grade = str(p.get('grade', '')).lower()
        rows.append(dict(climb_id=str(p['site_id']), name=p.get('name'), setter=p.get('author'), route=p.get('holds'),
                         angle=MOONBOARD_JSON_ANGLE, difficulty=FONT_TO_DIFFICULTY.get(grade), ascents=None, quality=None,
                         problem=None if grade in FONT_TO_DIFFICULTY else 'unknown grade'))
    return moonboard_geometry(dict(spec, set_ids=set_ids), hold_set, conflicts), rows


# -----------------------------------------------------------------------------
# boardsesh's nightly snapshots: per (board, layout) a climbs file, and one catalogue of board
# hardware, listed in two manifests. The Aurora boards' tables are the app's with a board_ prefix
# and a board_type column, so they are read through temporary views named like the app's tables,
# by the Aurora reader above; the MoonBoard's grid is in no catalogue, as in the JSON.

SNAPSHOT_FORMATS = (1, 2)  # manifest formatVersion: boardsesh's exporter writes 1, its dataset doc says 2
SNAPSHOT_PRIVACY = 1  # boardsesh's own clients refuse any other privacyVersion
SNAPSHOT_VIEWS = {  # the app's table: (file, snapshot table, its columns as the readers want them)
    'climbs': ('snap', 'board_climbs', 'uuid, name, setter_username, layout_id, frames, frames_count, is_draft, '
                                       'is_listed, angle, is_hidden, missing_hold_count'),
    # boardsesh stores Aurora's 1-3 quality times 5/3: back to the app's scale, so min_quality means one thing
    'climb_stats': ('snap', 'board_climb_stats', 'climb_uuid, angle, display_difficulty, ascensionist_count, '
                                                 'quality_average * 3 / 5 AS quality_average'),
    'layouts': ('cat', 'board_layouts', 'id, product_id, name'),
    'product_sizes': ('cat', 'board_product_sizes', 'id, product_id, edge_left, edge_right, edge_bottom, edge_top, name'),
    'holes': ('cat', 'board_holes', 'id, product_id, name, x, y'),
    'placements': ('cat', 'board_placements', 'id, layout_id, hole_id, set_id'),
    'leds': ('cat', 'board_leds', 'id, product_size_id, hole_id, position'),
    'sets': ('cat', 'board_sets', 'id, name'),
    'placement_roles': ('cat', 'board_placement_roles', 'id, product_id, position, name, led_color'),
}
MOONBOARD_SNAPSHOT_ROLES = {42: 'SH', 43: 'IH', 44: 'FH'}  # fixed by boardsesh's format, as the grid cells are


def board_type(spec):
    """boardsesh's name of the board (its snapshots' boardType and board_type): the config's board_type, else its name."""
    return spec.get('board_type', spec['name'])


def sniff(path):
    """'gzip', 'sqlite', or None, from a file's first bytes (never from its name)."""
    with open(path, 'rb') as f:
        head = f.read(16)
    return 'gzip' if head[:2] == b'\x1f\x8b' else 'sqlite' if head == b'SQLite format 3\x00' else None


def check_manifest(m, want, where):
    """A snapshot manifest (parsed JSON) we can vouch for, or one error line."""
    if not isinstance(m, dict) or not isinstance(m.get(want), (list, dict)):
        fail(f"{where} is not a snapshot manifest (no {want!r})")
    if m.get('formatVersion') not in SNAPSHOT_FORMATS:
        fail(f"{where} has formatVersion {m.get('formatVersion')!r}; this reader knows {SNAPSHOT_FORMATS}")
    return m


def read_manifest(path, want):
    try:
        with open(path, encoding='utf-8') as f:
            return check_manifest(json.load(f), want, path)
    except FileNotFoundError:
        fail(f"no snapshot manifest at {path}")
    except ValueError as e:
        fail(f"{path} is not a snapshot manifest ({e})")


def board_entry(spec, entries, where):
    """The manifest entry of the config's board and layout, if boardsesh's clients would take it."""
    kind, layout = board_type(spec), spec['layout_id']
    mine = [e for e in entries if isinstance(e, dict) and e.get('boardType') == kind and e.get('layoutId') == layout]
    if not mine:
        have = ', '.join(f"{e.get('boardType')} {e.get('layoutId')}" for e in entries if isinstance(e, dict))
        fail(f"{where} has no {kind} layout {layout} (it has {have or 'nothing'})")
    if mine[0].get('privacyVersion') != SNAPSHOT_PRIVACY:
        fail(f"{where}: {kind} layout {layout} has privacyVersion {mine[0].get('privacyVersion')!r}, "
             f"not {SNAPSHOT_PRIVACY}: refused, as boardsesh's clients refuse it")
    return mine[0]


def key_path(root, entry, prefix, where):
    """Where an entry's object lives in a snapshot folder: its key below board-snapshots/."""
    key = entry.get('key')
    if not isinstance(key, str) or not key.startswith(prefix) or '..' in key.split('/'):
        fail(f"{where}: entry key {key!r} is not under {prefix} (a format this reader does not know)")
    return os.path.join(root, key[len('board-snapshots/'):])


def whole(path, entry):
    """Whether a file has the size the manifest gives its object: stored (gzip), or decoded, as
    an HTTP client or server may have left it."""
    return os.path.getsize(path) in (entry.get('bytes'), entry.get('uncompressedBytes'))


def snapshot_root(folder):
    return folder if os.path.isdir(os.path.join(folder, 'v1-gzip')) else os.path.join(folder, 'board-snapshots')


def snapshot_files(spec, folder):
    """(climbs file, catalogue file) of the config's board and layout in a snapshot folder laid out
    like boardsesh's bucket (board-snapshots/v1-gzip/..., board-snapshots/v1-catalog/...)."""
    root = snapshot_root(folder)

    def local(entry, prefix, manifest):
        path = key_path(root, entry, prefix, manifest)
        if not os.path.isfile(path):
            fail(f"{manifest} lists {entry['key']}, which is not in {root}: fetch it with --download")
        if entry.get('bytes') is not None and not whole(path, entry):
            fail(f"{path} has {os.path.getsize(path):,} bytes, its manifest says {entry['bytes']:,}: a damaged copy")
        return path

    manifest = os.path.join(root, 'v1-gzip', 'manifest.json')
    climbs = local(board_entry(spec, read_manifest(manifest, 'entries')['entries'], manifest), 'board-snapshots/v1-gzip/', manifest)
    if spec['format'] == 'moonboard':
        return climbs, None  # the MoonBoard's hardware is in no catalogue
    manifest = os.path.join(root, 'v1-catalog', 'manifest.json')
    return climbs, local(read_manifest(manifest, 'artifact')['artifact'], 'board-snapshots/v1-catalog/', manifest)


def attach(con, path, name, scratch):
    """Attach a snapshot file read-only as name, gunzipping it into scratch first if it is gzip; a
    file that fails PRAGMA quick_check is refused."""
    source, kind = path, sniff(path)
    if kind == 'gzip':
        plain = os.path.join(scratch, name + '.db')
        try:
            with gzip.open(path) as src, open(plain, 'wb') as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as e:
            fail(f"{path} is a damaged gzip file ({e})")
        path, kind = plain, sniff(plain)
    if kind != 'sqlite':
        fail(f"{source} is neither an SQLite file nor a gzip of one")
    con.execute(f"ATTACH DATABASE ? AS {name}", (f'file:{os.path.abspath(path)}?mode=ro',))
    try:
        problems = [r[0] for r in con.execute(f"PRAGMA {name}.quick_check(10)")]
    except sqlite3.DatabaseError as e:
        problems = [str(e)]
    if problems != ['ok']:
        first = ' '.join(next((p for p in problems if not p.startswith('***')), problems[0]).split())
        fail(f"{source} fails PRAGMA quick_check ({first}{', and more' if len(problems) > 2 else ''}): "
             f"a damaged snapshot, fetch it again")


def make_views(con, where, path, spec):
    """The app-named views of SNAPSHOT_VIEWS over the attached file where, on the board's rows;
    a column the file lacks reads NULL."""
    quoted = "'" + str(board_type(spec)).replace("'", "''") + "'"
    for view, (file, table, wanted) in SNAPSHOT_VIEWS.items():
        if file != where:
            continue
        have = {r[1] for r in con.execute(f"PRAGMA {where}.table_info({table})")}
        if not have:
            fail(f"{path} has no table {table}: not a boardsesh snapshot")
        columns = ', '.join(c if c.split()[0] in have else f'NULL AS {c}' for c in wanted.split(', '))
        con.execute(f"CREATE TEMP VIEW {view} AS SELECT {columns} FROM {where}.{table} WHERE board_type = {quoted}")


def read_snapshot(spec, climbs, catalog):
    """A boardsesh climbs file (and, for Aurora boards, its catalogue) -> what read_aurora or
    read_moonboard gives from the board's own files."""
    with tempfile.TemporaryDirectory(prefix='boardgpt-') as scratch:
        con = sqlite3.connect(':memory:', uri=True)
        try:
            attach(con, climbs, 'snap', scratch)
            make_views(con, 'snap', climbs, spec)
            if spec['format'] == 'moonboard':
                return read_snapshot_moonboard(spec, con)
            if not catalog:
                fail(f"{climbs} needs its board catalogue: give --catalog=PATH, or --db=the snapshot folder")
            attach(con, catalog, 'cat', scratch)
            make_views(con, 'cat', catalog, spec)
            return read_aurora(spec, climbs, con)
        finally:
            con.close()


def read_snapshot_moonboard(spec, con):
    """The MoonBoard's climbs from a snapshot's climbs and climb_stats views."""
    stats = defaultdict(list)
    for uuid, angle, diff, asc in con.execute("SELECT climb_uuid, angle, display_difficulty, ascensionist_count "
                                              "FROM climb_stats"):
        stats[uuid].append((angle, diff, asc))
    rows = []
    for uuid, name, setter, frames, setter_angle, problem in read_climbs(con, spec):
        route = frames  # a malformed string stays one: the grammar names what is wrong with it
        first = (frames or '').split(',')[0]
        if re.fullmatch(r'(?:p\d+r\d+)+', first):
            route = defaultdict(list)  # cell (row - 1) * 11 + column + 1 -> 'C5'; role 42/43/44 -> SH/IH/FH
            for cell, role in re.findall(r'p(\d+)r(\d+)', first):
                row, col = divmod(int(cell) - 1, len(MOONBOARD_COLUMNS))
                hold = f'{MOONBOARD_COLUMNS[col]}{row + 1}' if col >= 0 and row < MOONBOARD_ROWS else f'cell {cell}'
                route[MOONBOARD_SNAPSHOT_ROLES.get(int(role), f'r{role}')].append(hold)
            route = dict(route)
        for angle, diff, asc in stats.get(uuid) or [(setter_angle, None, None)]:
            rows.append(dict(climb_id=uuid, name=name, setter=setter, route=route, angle=angle, difficulty=diff,
                             ascents=asc, quality=None, problem=problem or (None if diff is not None else 'unknown grade')))
    # the format carries no hold's set (the JSON's holds_setup is not in it): every hold is in none
    return moonboard_geometry(spec, {}, 0), rows


def read_board(spec, path):
    """Whichever source path is: an Aurora app database, MoonBoard JSON, or a boardsesh snapshot
    (its folder, or a climbs file, gzip or plain)."""
    if os.path.isdir(path):
        return read_snapshot(spec, *snapshot_files(spec, path))
    kind = sniff(path) if os.path.isfile(path) else None
    if kind == 'gzip':
        return read_snapshot(spec, path, catalog and os.path.expanduser(catalog))
    if kind == 'sqlite':
        con = sqlite3.connect(f'file:{os.path.abspath(path)}?mode=ro', uri=True)
        try:
            snapshot = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'board_climbs'").fetchone()
        finally:
            con.close()
        if snapshot:
            return read_snapshot(spec, path, catalog and os.path.expanduser(catalog))
    return (read_moonboard if spec['format'] == 'moonboard' else read_aurora)(spec, path)


# -----------------------------------------------------------------------------
# --download: the board's newest snapshot from boardsesh's bucket, kept as the bucket lays it out
# (so --db=data/board-snapshots reads it again). Object keys name their build, so an object we
# have is never fetched again: boardsesh asks for each artifact at most once a day.

MAX_MANIFEST = 1 << 22  # a manifest is a few kB


def http_get(url, what):
    """An open response for url, or one error line."""
    if not url.startswith(('http://', 'https://')):
        fail(f"{what}: {url!r} is not an http(s) URL")
    # ask for the stored gzip bytes, which the manifest's sizes count, not a decoded copy
    request = urllib.request.Request(url, headers={'User-Agent': 'boardgpt-prepare', 'Accept-Encoding': 'gzip'})
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        fail(f"{url} answered {e.code} {e.reason}: {what} not fetched; try again later")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        fail(f"could not reach {url} ({getattr(e, 'reason', e)}): check the network, or --snapshot_url")


def fetch_manifest(url, want):
    try:
        with http_get(url, 'the manifest') as r:
            body = r.read(MAX_MANIFEST + 1)
    except (http.client.HTTPException, OSError) as e:
        fail(f"the manifest {url} broke off ({e}); try again")
    if len(body) > MAX_MANIFEST:
        fail(f"{url} is over {MAX_MANIFEST:,} bytes: not a snapshot manifest")
    if body[:2] == b'\x1f\x8b':
        body = gzip.decompress(body)  # served with Content-Encoding: gzip
    try:
        return check_manifest(json.loads(body), want, url)
    except (ValueError, OSError, EOFError) as e:
        fail(f"{url} is not a snapshot manifest ({e})")


def fetch_object(entry, path, label):
    """Stream a manifest entry's object to path through path.part, with a progress line; keep it
    only if its size is the manifest's and it passes PRAGMA quick_check. -> whether it fetched."""
    size, plain = entry.get('bytes'), entry.get('uncompressedBytes')
    if not isinstance(size, int) or size <= 0:
        fail(f"{label}: the manifest gives no size ({size!r}); refused")
    if os.path.isfile(path) and whole(path, entry):
        print(f"{label}: have {entry['key']} ({size / 1e6:.1f} MB, built {entry.get('builtAt')})")
        return False
    url = entry.get('url') or ''
    os.makedirs(os.path.dirname(path), exist_ok=True)
    part, got, t0, shown = path + '.part', 0, time.time(), 0.0
    limit = max(size, plain if isinstance(plain, int) else 0)  # a server may send it decoded: then the plain size
    try:
        with http_get(url, label) as r, open(part, 'wb') as f:
            while chunk := r.read(1 << 20):
                got += len(chunk)
                if got > limit:
                    fail(f"{url} sent more than the {limit:,} bytes its manifest lists: refused")
                f.write(chunk)
                now = time.time()
                if now - shown >= (1 if sys.stdout.isatty() else 10) or got == size:
                    shown, rate = now, got / max(now - t0, 1e-9)
                    print(f"{label}: {got / 1e6:,.1f} of {size / 1e6:,.1f} MB, {rate / 1e6:.1f} MB/s, "
                          f"{(size - got) / max(rate, 1):.0f}s left", end='\r' if sys.stdout.isatty() else '\n', flush=True)
        if got not in (size, plain):
            fail(f"{url}: got {got:,} bytes, the manifest says {size:,}: the download broke off; run again")
        with tempfile.TemporaryDirectory(prefix='boardgpt-') as scratch:
            con = sqlite3.connect(':memory:', uri=True)
            try:
                attach(con, part, 'fetched', scratch)  # a broken gzip or a failed quick_check is an error line
            finally:
                con.close()
        os.replace(part, path)
    except (http.client.HTTPException, OSError) as e:
        fail(f"{url}: the download broke off after {got:,} of {size:,} bytes ({e}); run again")
    finally:
        if os.path.exists(part):
            os.remove(part)  # nothing half-written stays behind
    print(f"{label}: fetched {entry['key']} ({got / 1e6:.1f} MB in {time.time() - t0:.1f}s)" + ' ' * 20)
    return True


def held(folder, entry, prefix):
    """Whether a snapshot folder holds a manifest entry's object, whole (an entry of a kind this
    reader does not know it holds not)."""
    try:
        path = key_path(folder, entry, prefix, folder) if isinstance(entry, dict) else None
    except InputError:
        return False
    return path is not None and os.path.isfile(path) and whole(path, entry)


def write_manifest(folder, sub, manifest):
    """The folder's manifest: the new one, but for each board and layout it holds an older build
    of and did not fetch now, the entry of the build it holds: it lists what the folder has."""
    path, prefix = os.path.join(folder, sub, 'manifest.json'), f'board-snapshots/{sub}/'
    if 'entries' in manifest and os.path.isfile(path):
        try:
            old = read_manifest(path, 'entries')['entries']
        except InputError:
            old = []
        kept = {(e.get('boardType'), e.get('layoutId')): e for e in old if held(folder, e, prefix)}
        entries = []
        for e in manifest['entries']:
            k = (e.get('boardType'), e.get('layoutId')) if isinstance(e, dict) else None
            entries.append(e if held(folder, e, prefix) or k not in kept else kept[k])
            kept.pop(k, None)
        manifest = dict(manifest, entries=entries + list(kept.values()))
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(manifest, f, separators=(',', ':'))
    os.replace(path + '.tmp', path)


def download_snapshot(spec, base, folder):
    """Fetch the newest snapshot of the config's board (and the catalogue) from base into folder."""
    base = base.rstrip('/')
    subs = ['v1-gzip'] + (['v1-catalog'] if spec['format'] != 'moonboard' else [])  # no MoonBoard catalogue
    try:
        manifests = {sub: fetch_manifest(f"{base}/{sub}/manifest.json", 'entries' if sub == 'v1-gzip' else 'artifact')
                     for sub in subs}
        entries = {'v1-gzip': board_entry(spec, manifests['v1-gzip']['entries'], f"{base}/v1-gzip/manifest.json")}
    except InputError as e:
        try:
            snapshot_files(spec, folder)  # what an earlier run fetched still reads: go on with it
        except InputError:
            raise e from None
        print(f"warning: {e}; preparing the snapshot already in {folder}")
        return
    if 'v1-catalog' in manifests:
        entries['v1-catalog'] = manifests['v1-catalog']['artifact']
    for sub in subs:
        path = key_path(folder, entries[sub], f'board-snapshots/{sub}/', f"{base}/{sub}/manifest.json")
        what = f"{board_type(spec)} layout {spec['layout_id']}" if sub == 'v1-gzip' else 'catalogue'
        fetched = fetch_object(entries[sub], path, f"{what} snapshot")
        write_manifest(folder, sub, manifests[sub])
        for old in os.listdir(os.path.dirname(path)) if fetched else ():  # superseded builds of this object
            if old.endswith('.db') and old != os.path.basename(path):
                os.remove(os.path.join(os.path.dirname(path), old))


# -----------------------------------------------------------------------------
# read every board
t0 = time.time()
if not boards:
    fail("no boards configured: run with a config file, e.g. python prepare.py config/kilter.py")
if db and len(boards) != 1:
    fail(f"--db names one database, but dataset {dataset} has {len(boards)} boards; set each board's path in the config")
if not 2 <= min_holds <= max_holds:
    fail(f"hold bounds must satisfy 2 <= min_holds <= max_holds, got min_holds {min_holds}, max_holds {max_holds}")
if angle_min > angle_max or min_ascents < 0:
    fail(f"need angle_min <= angle_max and min_ascents >= 0, got {angle_min}..{angle_max} and {min_ascents}")
if download and db:
    fail("--download fetches the snapshot into data_root/board-snapshots; give --db or --download, not both")
board_meta, board_rows, set_conflicts = [], {}, {}
for spec in boards:
    path = os.path.expanduser(db or spec['path'])
    if download:
        path = os.path.join(data_root, 'board-snapshots')
        download_snapshot(spec, snapshot_url, path)
    try:
        geometry, rows = read_board(spec, path)
    except sqlite3.Error as e:
        fail(f"{path} could not be read as an Aurora app database ({e}). {HOW_TO_GET_A_DB}")
    board_meta.append(dict(
        name=spec['name'], format=spec['format'], title=spec.get('title') or geometry['title'], source=path,
        role_codes=dict(geometry['role_ids']), holds=geometry['holds'], edges=geometry['edges'],
        angles=list(geometry['angles']), angle_known=geometry['angle_known'], role_colors=geometry['role_colors'],
        layout_title=geometry['layout_title'], size=geometry['size'], sizes=geometry['sizes'], sets=geometry['sets'],
        hold_set=geometry['hold_set'],
        min_start=1, max_start=spec.get('max_start', 2), min_finish=1, max_finish=spec.get('max_finish', 2),
        min_holds=min_holds, max_holds=max_holds))
    board_rows[spec['name']] = rows
    set_conflicts[spec['name']] = geometry['set_conflicts']
    print(f"read {len(rows):,} rows of {board_meta[-1]['title']} from {path} ({len(geometry['holds'])} holds)")

meta = dict(dataset=dataset, boards=board_meta, **build_vocab(board_meta))
grammar = Grammar(meta)
wall = grammar.wall(board_meta[0]['name'], size, sets) if size or sets else None  # a wall the data lacks fails here

# -----------------------------------------------------------------------------
# filter: every removed row gets exactly one reason, the first that applies
kept = []  # (board, split key, row, holds)
table = {}
for b in board_meta:
    name, removed, parsed = b['name'], Counter(), {}
    for row in board_rows[name]:
        reason = row['problem']
        if reason is None:
            key = (row['climb_id'], str(row['route']))
            if key not in parsed:  # a climb has one row per angle: parse it once
                try:
                    holds = grammar.parse(name, row['route'])
                    grammar.validate(name, holds)
                    parsed[key] = holds
                except RouteError as e:
                    parsed[key] = e.reason
            holds = parsed[key]
            reason = holds if isinstance(holds, str) else None
        if reason is None and row['angle'] is not None:
            if row['angle'] not in b['angles']:
                reason = 'impossible angle'
            elif not angle_min <= row['angle'] <= angle_max:
                reason = f'angle outside {angle_min}..{angle_max}'
        if reason is None and row['difficulty'] is not None and \
                not MIN_DIFFICULTY - 0.5 <= row['difficulty'] < MAX_DIFFICULTY + 0.5:
            reason = f'grade outside {FONT[MIN_DIFFICULTY]}..{FONT[MAX_DIFFICULTY]}'
        if reason is None and row['ascents'] is not None and row['ascents'] < min_ascents:
            reason = f'fewer than {min_ascents} ascents'
        if reason is None and row['quality'] is not None and row['quality'] < min_quality:
            reason = f'quality below {min_quality}'
        if reason:
            removed[reason] += 1
        else:
            kept.append((name, row, holds))
    table[name] = dict(read=len(board_rows[name]), removed=dict(removed))
    if not any(n == name for n, _, _ in kept):  # an empty dataset helps nobody: say which filter emptied it
        fail(f"no route left of {b['title']}: of {len(board_rows[name]):,} rows read, removed " +
             ', '.join(f"{n:,} {r!r}" for r, n in removed.most_common(3)) + ": loosen that filter")

# -----------------------------------------------------------------------------
# split by climb: all angles of a climb, and all climbs with the same holds, share a split
group_id = {}
for name, row, holds in kept:
    k = (name, frozenset(holds))
    group_id[k] = min(group_id.get(k, row['climb_id']), row['climb_id'])
split_rows = {s: [] for s in SPLITS}
for name, row, holds in kept:
    split_rows[split_of(f"{name}:{group_id[(name, frozenset(holds))]}")].append((name, row, holds))

size_holds = {b['name']: [(s['id'], set(s['holds'])) for s in b['sizes']] for b in board_meta}
hold_sets = {b['name']: b['hold_set'] for b in board_meta}


def route_walls(name, holds):
    """What prepare stores of a route for Wall.fits: the sizes it fits and the hold sets it uses."""
    placements = {p for p, _ in holds}
    return (tuple(i for i, on in size_holds[name] if placements <= on),
            tuple(sorted({hold_sets[name].get(p) for p in placements}, key=str)))


os.makedirs(os.path.join(data_root, dataset), exist_ok=True)
meta['splits'] = {}
lengths = []
for split, items in split_rows.items():
    items.sort(key=lambda it: (it[0], it[1]['climb_id'], -1 if it[1]['angle'] is None else it[1]['angle']))
    tokens = []  # every column exists, an empty split's too
    arrays = {k: [] for k in ('offset', 'board', 'angle', 'difficulty', 'ascents', 'quality', 'climb_id', 'name',
                              'setter', 'sizes', 'sets')}
    for name, row, holds in items:
        arrays['offset'].append(len(tokens))
        seq = grammar.encode(name, row['angle'], row['difficulty'], holds)
        tokens.extend(seq)
        lengths.append(len(seq))
        arrays['board'].append(name)
        arrays['angle'].append(row['angle'])
        arrays['difficulty'].append(None if row['difficulty'] is None else float(row['difficulty']))
        arrays['ascents'].append(row['ascents'])
        arrays['quality'].append(row['quality'])
        arrays['climb_id'].append(row['climb_id'])
        arrays['name'].append(row['name'])
        arrays['setter'].append(row['setter'])  # boardsesh asks that a climb it carries be shown with its setter
        sizes, sets_used = route_walls(name, holds)  # the walls it fits: these sizes, with these sets
        arrays['sizes'].append(sizes)
        arrays['sets'].append(sets_used)
    arrays['offset'].append(len(tokens))  # end sentinel: route i is tokens[offset[i]:offset[i+1]]
    assert len(grammar.itos) < 2 ** 16
    path = os.path.join(data_root, dataset, f'{split}.bin')
    np.array(tokens, dtype=np.uint16).tofile(path + '.tmp')
    os.replace(path + '.tmp', path)
    meta['splits'][split] = dict(arrays)
    for name, row, holds in items:
        table[name].setdefault(split, 0)
        table[name][split] += 1
meta['table'] = table
path = os.path.join(data_root, dataset, 'meta.pkl')  # plain values only, so routes.load_meta can refuse every class
with open(path + '.tmp', 'wb') as f:
    pickle.dump(meta, f)
os.replace(path + '.tmp', path)

# -----------------------------------------------------------------------------
# the report: nothing removed goes uncounted
print(f"\n{'':36}" + ''.join(f"{b['name']:>12}" for b in board_meta))
print(f"{'rows read':36}" + ''.join(f"{table[b['name']]['read']:>12,}" for b in board_meta))
reasons = sorted({r for t in table.values() for r in t['removed']})
for r in reasons:
    print(f"{'  removed: ' + r:36}" + ''.join(f"{table[b['name']]['removed'].get(r, 0):>12,}" for b in board_meta))
print(f"{'rows kept':36}" + ''.join(f"{sum(table[b['name']].get(s, 0) for s in SPLITS):>12,}" for b in board_meta))
for s in SPLITS:
    print(f"{'  ' + s:36}" + ''.join(f"{table[b['name']].get(s, 0):>12,}" for b in board_meta))
ungraded = Counter(n for n, row, _ in kept if row['difficulty'] is None)
if ungraded:
    print(f"{'  kept without a grade (<grade:?>)':36}" + ''.join(f"{ungraded[b['name']]:>12,}" for b in board_meta))
no_angle = Counter(n for n, row, _ in kept if row['angle'] is None)
if no_angle:
    print(f"{'  kept without an angle (<angle:?>)':36}" + ''.join(f"{no_angle[b['name']]:>12,}" for b in board_meta))
groups = Counter(n for (n, _), _c in Counter((n, frozenset(h)) for n, _, h in kept).items())
print(f"{'  distinct hold sets':36}" + ''.join(f"{groups[b['name']]:>12,}" for b in board_meta))
for b in board_meta:  # the walls: how many kept rows fit each size, and use each set alone
    name = b['name']
    rows = [(*route_walls(name, holds), row['climb_id']) for n, row, holds in kept if n == name]
    print(f"\nwalls of {b['title']} (kept rows that fit; --size= and --sets= name them by id or name)")
    def count(keep):
        return f"{sum(map(keep, rows)):>10,} rows, {len({r[2] for r in rows if keep(r)}):>7,} climbs"
    for s in b['sizes']:
        label = f"  size {s['id']} {s['name']!r}" + (' (configured)' if s['id'] == b['size'] else '')
        print(f"{label:48}{count(lambda r: s['id'] in r[0])}  ({len(s['holds'])} holds, {len(s['leds'])} LEDs)")
    for s in b['sets']:
        label = f"  only set {s['id']} {s['name']!r}"
        print(f"{label:48}{count(lambda r: r[1] == (s['id'],))}  ({sum(v == s['id'] for v in b['hold_set'].values())} holds)")
    if set_conflicts[name]:
        print(f"  holds whose set the problems disagree on (the set mounted for most of them taken): {set_conflicts[name]}")
    unset = len(b['holds']) - len(b['hold_set'])
    if unset and b['sets']:
        print(f"  holds in no set (no route uses them; on the board, on no wall that names its sets): {unset}")
if wall:
    fitting = sum(wall.fits(*route_walls(n, holds)) for n, _, holds in kept if n == wall.board)
    print(f"  your wall, {wall.title}: {fitting:,} rows fit it ({len(wall.placements)} holds)")
kinds = Counter(meta['kind'])
print(f"\nvocabulary: {len(meta['itos']):,} tokens ({kinds['hold']:,} hold-and-role, {kinds['board']} board, "
      f"{kinds['angle']} angle, {kinds['grade']} grade, pad, end)")
if lengths:
    q = np.percentile(lengths, [0, 50, 90, 99, 100]).astype(int)
    print(f"sequence length (tokens, incl. 3 conditioning + end): min {q[0]}, median {q[1]}, p90 {q[2]}, "
          f"p99 {q[3]}, max {q[4]}; block_size {block_size(meta)}")
print(f"wrote {os.path.join(data_root, dataset)}/{{train,val,test}}.bin and meta.pkl in {time.time() - t0:.1f}s")
