"""
Tiny boards of our own for the tests: an Aurora database in the app's schema (the tables and
columns prepare.py reads, with the apps' names and types) and MoonBoard problem JSON. Each
builder returns what a correct prepare.py must keep, worked out here from how the fixture was
made rather than with prepare.py's own code.
"""

import gzip
import json
import os
import random
import re
import sqlite3
from contextlib import closing

from routes import GRADES

AURORA_SCHEMA = """
CREATE TABLE products (id INT UNSIGNED NOT NULL PRIMARY KEY, name TEXT NULL, is_listed BOOLEAN NULL,
    password TEXT NULL DEFAULT NULL, min_count_in_frame INT UNSIGNED NULL, max_count_in_frame INT UNSIGNED NULL);
CREATE TABLE product_sizes (id INT UNSIGNED NOT NULL PRIMARY KEY, product_id INT UNSIGNED NOT NULL,
    edge_left INT NOT NULL, edge_right INT NOT NULL, edge_bottom INT NOT NULL, edge_top INT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL, image_filename TEXT NULL, position INT UNSIGNED NULL,
    is_listed BOOLEAN NULL);
CREATE TABLE layouts (id INT UNSIGNED NOT NULL PRIMARY KEY, product_id INT UNSIGNED NOT NULL, name TEXT NULL,
    instagram_caption TEXT NULL, is_mirrored BOOLEAN NULL, is_listed BOOLEAN NULL, password TEXT NULL,
    created_at TEXT NULL);
CREATE TABLE holes (id INT UNSIGNED NOT NULL PRIMARY KEY, product_id INT UNSIGNED NOT NULL, name TEXT NULL,
    x INT NOT NULL, y INT NOT NULL, mirrored_hole_id INT UNSIGNED NULL, mirror_group INT UNSIGNED NULL DEFAULT 0);
CREATE TABLE placements (id INT UNSIGNED NOT NULL PRIMARY KEY, layout_id INT UNSIGNED NOT NULL,
    hole_id INT UNSIGNED NOT NULL, set_id INT UNSIGNED NOT NULL, default_placement_role_id INT UNSIGNED NULL);
CREATE TABLE placement_roles (id INT UNSIGNED NOT NULL PRIMARY KEY, product_id INT UNSIGNED NOT NULL,
    position INT UNSIGNED NOT NULL, name TEXT NOT NULL, full_name TEXT NOT NULL, led_color TEXT NULL,
    screen_color TEXT NULL);
CREATE TABLE leds (id INT UNSIGNED NOT NULL PRIMARY KEY, product_size_id INT UNSIGNED NOT NULL,
    hole_id INT UNSIGNED NOT NULL, position INT UNSIGNED NOT NULL);
CREATE TABLE sets (id INT UNSIGNED NOT NULL PRIMARY KEY, name TEXT NOT NULL, hsm INT UNSIGNED NULL);
CREATE TABLE difficulty_grades (difficulty INT UNSIGNED NOT NULL PRIMARY KEY, boulder_name TEXT NOT NULL,
    route_name TEXT NOT NULL, is_listed BOOLEAN NOT NULL);
CREATE TABLE climbs (uuid TEXT NOT NULL PRIMARY KEY, layout_id INT UNSIGNED NOT NULL, setter_id INT UNSIGNED NULL,
    setter_username TEXT NULL, name TEXT NULL, description TEXT NULL DEFAULT '', hsm INT UNSIGNED NULL,
    edge_left INT NULL, edge_right INT NULL, edge_bottom INT NULL, edge_top INT NULL, angle INT NULL,
    frames_count INT UNSIGNED NOT NULL DEFAULT 1, frames_pace INT UNSIGNED NOT NULL DEFAULT 0,
    frames TEXT NOT NULL, is_draft BOOLEAN NOT NULL DEFAULT 0, is_listed BOOLEAN NOT NULL, created_at TEXT NULL);
"""
CLIMB_STATS = """CREATE TABLE climb_stats (climb_uuid TEXT NOT NULL, angle INT UNSIGNED NOT NULL,
    display_difficulty FLOAT UNSIGNED NOT NULL, benchmark_difficulty FLOAT UNSIGNED NULL,
    ascensionist_count INT UNSIGNED NOT NULL, difficulty_average FLOAT UNSIGNED NOT NULL,
    quality_average FLOAT UNSIGNED NULL, fa_username TEXT NULL, fa_at TEXT NULL, PRIMARY KEY (climb_uuid, angle));"""
CLIMB_CACHE_FIELDS = """CREATE TABLE climb_cache_fields (climb_uuid TEXT NOT NULL PRIMARY KEY,
    ascensionist_count INT UNSIGNED NULL, display_difficulty FLOAT UNSIGNED NULL, quality_average FLOAT UNSIGNED NULL);"""

ROLE_IDS = dict(start=12, middle=13, finish=14, foot=15)
# the tiny board's other walls: size 11 (4 x 5, its own LED numbering) and size 12 (one hold, by its
# edges: no LED rows), and two hold sets, every third placement a screw-on
SMALL = dict(id=11, name='4 x 5', edges=(12, 44, 12, 52))
TOO_SMALL = dict(id=12, name='1 x 2', edges=(4, 20, 4, 12))
SETS = {1: 'Bolt Ons', 2: 'Screw Ons'}


def set_of(i):
    """The set of the grid's i-th placement."""
    return 2 if i % 3 == 2 else 1


def small_led(i):
    """The LED position of the grid's i-th placement on the 4 x 5 (numbered from the top)."""
    return 500 - i
COLUMNS, ROWS = 6, 8  # the tiny board: a 6 x 8 grid on the apps' 4-unit lattice, 8 units apart
ANGLES = list(range(20, 55, 5))


def grid():
    """(placement id, hole id, x, y) of the tiny board's holes, the board's own first."""
    return [(1000 + i, 1 + i, 8 + 8 * (i % COLUMNS), 8 + 8 * (i // COLUMNS)) for i in range(COLUMNS * ROWS)]


def random_route(rng, board):
    """A valid route on the grid: 1-2 starts low, 2-6 hands, 1-2 finishes on top, 0-4 feet."""
    by_row = {}
    for p, _, x, y in board:
        by_row.setdefault(y, []).append(p)
    rows = sorted(by_row)
    low = [p for y in rows[:3] for p in by_row[y]]
    top = by_row[rows[-1]]
    mid = [p for y in rows[2:-1] for p in by_row[y]]
    starts = rng.sample(low, rng.randint(1, 2))
    finishes = rng.sample(top, rng.randint(1, 2))
    free = [p for p in mid if p not in starts]
    hands = rng.sample(free, rng.randint(2, min(6, len(free))))  # a small wall may have fewer
    feet_pool = sorted({p for p in low + mid if p not in starts and p not in hands})
    feet = rng.sample(feet_pool, rng.randint(0, min(4, len(feet_pool))))
    return [(p, 'start') for p in starts] + [(p, 'middle') for p in hands] + \
        [(p, 'finish') for p in finishes] + [(p, 'foot') for p in feet]


def db_wall(db, size_id, sets=None, layout_id=1):
    """What a database says a wall is, read with SQL rather than with boardgpt's Wall: the
    placements of a layout inside one size's edges with an LED row on that size (any inside its
    edges, where the size has no LED rows), in the given hold sets (None: any)."""
    with closing(sqlite3.connect(f'file:{db}?mode=ro', uri=True)) as con:
        inside = ("FROM placements p JOIN holes h ON h.id = p.hole_id JOIN product_sizes z ON z.id = ? "
                  "WHERE p.layout_id = ? AND h.x > z.edge_left AND h.x < z.edge_right AND h.y > z.edge_bottom "
                  "AND h.y < z.edge_top")
        lit = " AND p.hole_id IN (SELECT hole_id FROM leds WHERE product_size_id = z.id)"
        has_leds = con.execute("SELECT 1 FROM leds WHERE product_size_id = ?", (size_id,)).fetchone()
        rows = con.execute("SELECT p.id, p.set_id " + inside + (lit if has_leds else ''), (size_id, layout_id)).fetchall()
    return {p for p, s in rows if sets is None or s in sets}


def setter_of(uuid):
    """Who set the tiny board's climb uuid (the tests check the setter shown with a known climb)."""
    return f'setter-{uuid[-3:]}'


def frames_of(holds):
    return ''.join(f'p{p}r{ROLE_IDS[r]}' for p, r in sorted(holds))


def make_aurora_db(path, n_climbs=160, seed=0, per_angle=True):
    """Write a tiny Kilter-like database. Returns (expected, removed): expected maps
    (climb uuid, angle) -> (sorted holds, difficulty) for every row a correct prepare.py keeps
    with default filters (min_ascents=1, 3..40 holds, angles 20..50), and removed counts the rows
    planted to be removed, by prepare.py's reason."""
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    con.executescript(AURORA_SCHEMA + (CLIMB_STATS if per_angle else CLIMB_CACHE_FIELDS))
    con.execute("INSERT INTO products (id, name) VALUES (1, 'Tiny Board')")
    con.execute("INSERT INTO product_sizes VALUES (10, 1, 0, 56, 0, 72, '6 x 8', 'Tiny', NULL, 1, 1)")
    for s in (SMALL, TOO_SMALL):
        con.execute("INSERT INTO product_sizes VALUES (?, 1, ?, ?, ?, ?, ?, '', NULL, 2, 1)", (s['id'], *s['edges'], s['name']))
    con.executemany("INSERT INTO sets VALUES (?, ?, NULL)", SETS.items())
    con.execute("INSERT INTO layouts (id, product_id, name) VALUES (1, 1, 'Tiny Layout'), (2, 1, 'Other Layout')")
    board = grid()
    outside = (2000, 900, 100, 8)  # a placement of the layout outside the product size
    no_led = board[0]  # inside the size, but the size has no LED for it: not displayable
    for i, (p, h, x, y) in enumerate(board + [outside]):
        con.execute("INSERT INTO holes (id, product_id, x, y) VALUES (?, 1, ?, ?)", (h, x, y))
        con.execute("INSERT INTO placements VALUES (?, 1, ?, ?, NULL)", (p, h, set_of(i)))
        con.execute("INSERT INTO placements VALUES (?, 2, ?, 1, NULL)", (p + 5000, h))
    for i, (p, h, x, y) in enumerate(board[1:] + [outside]):
        con.execute("INSERT INTO leds VALUES (?, 10, ?, ?)", (i + 1, h, i))
    left, right, bottom, top = SMALL['edges']
    for i, (p, h, x, y) in enumerate(board):
        if left < x < right and bottom < y < top:
            con.execute("INSERT INTO leds VALUES (?, 11, ?, ?)", (1000 + i, h, small_led(i)))
    for name, rid in ROLE_IDS.items():
        con.execute("INSERT INTO placement_roles VALUES (?, 1, ?, ?, ?, NULL, NULL)", (rid, rid - 11, name, name.title()))
    for d, font, v in GRADES:
        con.execute("INSERT INTO difficulty_grades VALUES (?, ?, '', 1)", (d, f'{font}/{v}'))

    board = board[1:]  # the displayable holds
    expected, removed = {}, {}

    def climb(uuid, frames, layout=1, draft=0, listed=1, stats=(), setter_angle=None):
        con.execute("INSERT INTO climbs (uuid, layout_id, setter_username, frames, is_draft, is_listed, angle) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (uuid, layout, setter_of(uuid), frames, draft, listed, setter_angle))
        for angle, diff, asc in stats:
            if per_angle:
                con.execute("INSERT INTO climb_stats (climb_uuid, angle, display_difficulty, ascensionist_count, "
                            "difficulty_average, quality_average) VALUES (?, ?, ?, ?, ?, ?)",
                            (uuid, angle, diff, asc, diff, 2.5))
            else:
                con.execute("INSERT INTO climb_cache_fields VALUES (?, ?, ?, ?)", (uuid, asc, diff, 2.5))

    for i in range(n_climbs):
        uuid = f'{i:032X}'
        holds = random_route(rng, board)
        angles = sorted(rng.sample(ANGLES, rng.randint(1, 3))) if per_angle else [None]
        stats = [(a, round(rng.uniform(10, 33), 2), rng.randint(1, 30)) for a in angles]
        climb(uuid, frames_of(holds), stats=stats)
        for a, diff, _ in stats:
            expected[(uuid, a)] = (sorted(holds), diff)

    # climbs set on the smaller walls: the 4 x 5 with every set, and with bolt-ons only
    left, right, bottom, top = SMALL['edges']
    small = [h for h in board if left < h[2] < right and bottom < h[3] < top]
    bolt_ons = [h for i, h in enumerate(grid()) if h in small and set_of(i) == 1]
    for i in range(n_climbs // 3):
        uuid = f'5{i:031X}'
        holds = random_route(rng, small if i % 2 else bolt_ons)
        angles = sorted(rng.sample(ANGLES, rng.randint(1, 3))) if per_angle else [None]
        stats = [(a, round(rng.uniform(10, 33), 2), rng.randint(1, 30)) for a in angles]
        climb(uuid, frames_of(holds), stats=stats)
        for a, diff, _ in stats:
            expected[(uuid, a)] = (sorted(holds), diff)

    good = frames_of(random_route(rng, board))
    planted = [  # (reason, frames, climb kwargs)
        ('malformed route string', 'p1001r12p10', {}),
        ('hold not on the board', 'p1001r12p1013r13p1040r14p9999r13', {}),  # unknown placement
        ('hold not on the board', 'p1001r12p1013r13p1040r14p2000r13', {}),  # outside the size
        ('hold not on the board', f'p{no_led[0]}r12p1013r13p1040r14', {}),  # no LED on this size
        ('duplicated hold', 'p1001r12p1001r13p1013r13p1040r14', {}),
        ('role not on the board', 'p1001r12p1013r99p1040r14', {}),
        ('no start holds', 'p1013r13p1020r13p1040r14', {}),
        ('no finish holds', 'p1001r12p1013r13p1020r13', {}),
        ('too many start holds', 'p1001r12p1002r12p1003r12p1013r13p1040r14', {}),
        ('fewer than 3 holds', 'p1001r12p1040r14', {}),
        ('other layout', good, dict(layout=2)),
        ('draft', good, dict(draft=1)),
        ('unlisted', good, dict(listed=0)),
    ]
    for j, (reason, frames, kwargs) in enumerate(planted):
        stat = (30, 20.0, 5) if per_angle else (None, 20.0, 5)
        climb(f'BAD{j:029X}', frames, stats=[stat], **kwargs)
        removed[reason] = removed.get(reason, 0) + 1
    if per_angle:  # rows removed by filters on the stats rather than the holds
        climb('F' * 32, good, stats=[(72, 20.0, 5)])
        removed['impossible angle'] = 1
        climb('E' * 32, good, stats=[(30, 20.0, 5), (35, 40.0, 5)])  # one good row, one off the grade scale
        expected[('E' * 32, 30)] = (sorted(_parse(good)), 20.0)
        removed['grade outside 4a..8c+'] = 1
        climb('D' * 32, good, stats=[], setter_angle=30)  # never logged: 0 ascents
        removed['fewer than 1 ascents'] = 1
    con.commit()
    con.close()
    return expected, removed


def _parse(frames):
    roles = {v: k for k, v in ROLE_IDS.items()}
    out = []
    for part in frames.split('p')[1:]:
        p, r = part.split('r')
        out.append((int(p), roles[int(r)]))
    return out


def make_moonboard_json(path, n_problems=120, seed=0):
    """MoonBoard problems in the website's JSON form. Returns (expected, removed) like make_aurora_db:
    expected maps site_id -> (sorted holds, difficulty)."""
    rng = random.Random(seed)
    cols = 'ABCDEFGHIJK'
    fonts = {'6b+': 19, '6c': 20, '7a': 22, '7b+': 25, '8a': 28}
    problems, expected = [], {}
    for i in range(n_problems):
        names = rng.sample([f'{c}{r}' for c in cols for r in range(1, 18)], rng.randint(4, 9))
        top = rng.sample([f'{c}18' for c in cols], rng.randint(1, 2))
        n_start = rng.randint(1, 2)
        sh, ih = names[:n_start], names[n_start:]
        grade = rng.choice(list(fonts))
        problems.append(dict(holds_setup=['Hold Set A 2016'], name=f'p{i}', author='test', grade=grade,
                             holds=dict(SH=sh, IH=ih, FH=top), site_id=str(10000 + i)))
        expected[str(10000 + i)] = (sorted([(h, 'start') for h in sh] + [(h, 'middle') for h in ih] +
                                           [(h, 'finish') for h in top]), fonts[grade])
    bad = [('duplicated hold', dict(SH=['F5', 'F5'], IH=['E8'], FH=['D18']), '6c'),
           ('hold not on the board', dict(SH=['F5'], IH=['L8'], FH=['D18']), '6c'),
           ('too many start holds', dict(SH=['F5', 'G5', 'H5'], IH=['E8'], FH=['D18']), '6c'),
           ('unknown grade', dict(SH=['F5'], IH=['E8'], FH=['D18']), '9z')]
    removed = {}
    for j, (reason, holds, grade) in enumerate(bad):
        problems.append(dict(holds_setup=[], name='bad', author='test', grade=grade, holds=holds, site_id=str(90000 + j)))
        removed[reason] = removed.get(reason, 0) + 1
    with open(path, 'w') as f:
        json.dump(dict(source={'fixture': True}, problems=problems), f)
    return expected, removed


# -----------------------------------------------------------------------------
# a boardsesh snapshot of an Aurora database (its README: ../shared/data/boardsesh/README.md)

STAMP = '2026-11-30T07-15-00-000Z'
SNAPSHOT_CLIMBS = """CREATE TABLE board_climbs (uuid TEXT PRIMARY KEY, board_type TEXT, layout_id INTEGER,
    setter_id INTEGER, setter_username TEXT, name TEXT, description TEXT, hsm INTEGER, edge_left INTEGER,
    edge_right INTEGER, edge_bottom INTEGER, edge_top INTEGER, angle INTEGER, frames_count INTEGER,
    frames_pace INTEGER, frames TEXT, is_draft INTEGER, is_listed INTEGER, created_at TEXT, published_at TEXT,
    user_id TEXT, required_set_ids TEXT, compatible_size_ids TEXT, hold_fingerprint TEXT, updated_at TEXT,
    sync_seq INTEGER, characteristics TEXT, is_hidden INTEGER, missing_hold_count INTEGER,
    revision_number INTEGER, holds_revision_number INTEGER, retired_by_reset INTEGER,
    a_future_column TEXT){shape};  -- a column this reader has never heard of: ignored
CREATE TABLE board_climb_stats (board_type TEXT NOT NULL, climb_uuid TEXT NOT NULL, angle INTEGER NOT NULL,
    display_difficulty REAL, benchmark_difficulty REAL, ascensionist_count INTEGER, difficulty_average REAL,
    quality_average REAL, fa_username TEXT, fa_at TEXT, updated_at TEXT, sync_seq INTEGER,
    PRIMARY KEY (board_type, climb_uuid, angle)){shape};
CREATE TABLE snapshot_meta (table_name TEXT PRIMARY KEY, watermark_updated_at TEXT, watermark_sync_seq TEXT,
    row_count INTEGER, built_at TEXT, schema_version INTEGER, format_version INTEGER);"""
CATALOG_TABLES = {  # boardsesh's catalogue table: the app table and columns it copies
    'board_products': ('products', 'id, name, is_listed, password, min_count_in_frame, max_count_in_frame'),
    'board_layouts': ('layouts', 'id, product_id, name, instagram_caption, is_mirrored, is_listed, password, created_at'),
    'board_product_sizes': ('product_sizes', 'id, product_id, edge_left, edge_right, edge_bottom, edge_top, name, '
                                             'description, image_filename, position, is_listed'),
    'board_sets': ('sets', 'id, name, hsm'),
    'board_placement_roles': ('placement_roles', 'id, product_id, position, name, full_name, led_color, screen_color'),
    'board_holes': ('holes', 'id, product_id, name, x, y, mirrored_hole_id, mirror_group'),
    'board_placements': ('placements', 'id, layout_id, hole_id, set_id, default_placement_role_id'),
    'board_leds': ('leds', 'id, product_size_id, hole_id, position'),
}
FLAGGED = [('hidden', 'is_hidden'), ('missing holds', 'missing_hold_count')]  # rows only a snapshot has


def make_snapshot(aurora_db, root, board_type='tiny', layout_id=1, shape=2, privacy=1, format_version=1):
    """Write root/board-snapshots/ as boardsesh publishes it, from an Aurora database: a gzip climbs
    file of every climb and stats row (quality on boardsesh's 1-5 scale) plus one hidden and one
    missing-holds copy of a climb, a gzip catalogue, and the two manifests. Returns (the folder,
    what prepare must count removed beyond the database's own removals)."""
    base = os.path.join(root, 'board-snapshots')
    os.makedirs(root, exist_ok=True)
    plain = os.path.join(root, 'climbs.db')
    with closing(sqlite3.connect(f'file:{aurora_db}?mode=ro', uri=True)) as src, closing(sqlite3.connect(plain)) as out:
        out.executescript(SNAPSHOT_CLIMBS.format(shape=' WITHOUT ROWID' if shape == 2 else ''))
        climbs = src.execute("SELECT uuid, layout_id, setter_username, name, angle, frames_count, frames, is_draft, "
                             "is_listed FROM climbs ORDER BY uuid").fetchall()
        for row in climbs:
            out.execute("INSERT INTO board_climbs (uuid, board_type, layout_id, setter_username, name, angle, frames_count, "
                        "frames, is_draft, is_listed, hold_fingerprint, is_hidden) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'x', 0)",
                        (row[0], board_type, *row[1:]))
        stats = src.execute("SELECT climb_uuid, angle, display_difficulty, ascensionist_count, difficulty_average, "
                            "quality_average FROM climb_stats").fetchall()
        for row in stats:
            out.execute("INSERT INTO board_climb_stats (board_type, climb_uuid, angle, display_difficulty, "
                        "ascensionist_count, difficulty_average, quality_average) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (board_type, *row[:5], None if row[5] is None else row[5] * 5 / 3))
        good = next(c for c in climbs if c[1] == layout_id and not c[7] and c[8])
        for j, (_, column) in enumerate(FLAGGED):
            uuid = f'FLAG{j:028X}'
            out.execute(f"INSERT INTO board_climbs (uuid, board_type, layout_id, name, frames_count, frames, is_draft, "
                        f"is_listed, {column}) VALUES (?, ?, ?, 'flagged', 1, ?, 0, 1, 1)", (uuid, board_type, layout_id, good[6]))
            out.execute("INSERT INTO board_climb_stats (board_type, climb_uuid, angle, display_difficulty, "
                        "ascensionist_count) VALUES (?, ?, 40, 20.0, 5)", (board_type, uuid))
        for table, n in (('board_climbs', len(climbs) + 2), ('board_climb_stats', len(stats) + 2)):
            out.execute("INSERT INTO snapshot_meta VALUES (?, '2026-11-30T06:00:00Z', '1', ?, ?, 12, 1)", (table, n, STAMP))
        out.commit()
    cat = os.path.join(root, 'catalog.db')
    with closing(sqlite3.connect(f'file:{aurora_db}?mode=ro', uri=True)) as src, closing(sqlite3.connect(cat)) as out:
        for table, (app, columns) in CATALOG_TABLES.items():
            out.execute(f"CREATE TABLE {table} (board_type TEXT, {columns})")
            for row in src.execute(f"SELECT {columns} FROM {app}"):
                out.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * (len(row) + 1))})", (board_type, *row))
        out.commit()

    publish_snapshot(root, board_type, layout_id, plain, cat, shape, privacy, format_version)
    return base, {reason: 1 for reason, _ in FLAGGED}


def publish_snapshot(root, board_type, layout_id, climbs, catalog=None, shape=2, privacy=1, format_version=1):
    """Gzip a plain climbs file (and catalogue) into root/board-snapshots/ under boardsesh's keys,
    with the manifests that list them; the plain files are removed."""
    base = os.path.join(root, 'board-snapshots')

    def publish(path, key):
        raw = open(path, 'rb').read()
        body = gzip.compress(raw, mtime=0)
        dest = os.path.join(base, key[len('board-snapshots/'):])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        open(dest, 'wb').write(body)
        os.remove(path)
        return dict(key=key, url=f'https://snapshots.example/{key}', bytes=len(body), uncompressedBytes=len(raw),
                    contentEncoding='gzip', builtAt='2026-11-30T07:15:00.000Z')

    entry = dict(boardType=board_type, layoutId=layout_id,
                 **publish(climbs, f'board-snapshots/v1-gzip/{board_type}/{layout_id}/{STAMP}.db'), schemaVersion=12,
                 privacyVersion=privacy, artifactShape=shape)
    manifests = [('v1-gzip', dict(formatVersion=format_version, generatedAt='2026-11-30T07:18:42.517Z', entries=[entry]))]
    if catalog:
        artifact = dict(publish(catalog, f'board-snapshots/v1-catalog/{STAMP}.db'), schemaVersion=1)
        manifests.append(('v1-catalog', dict(formatVersion=format_version, generatedAt='2026-11-30T07:15:03.904Z',
                                             artifact=artifact)))
    for folder, manifest in manifests:
        with open(os.path.join(base, folder, 'manifest.json'), 'w') as f:
            json.dump(manifest, f, separators=(',', ':'))
    return base


def remap_board(db, layout_id, product_id, size_id, role_ids, role_names=('start', 'hand', 'finish', 'foot')):
    """Give the tiny database another board's ids (layout, product, its main size, role ids, with
    the names boardsesh's catalogues use), the climbs' frames rewritten to match."""
    codes = {ROLE_IDS[r]: role_ids[r] for r in ROLE_IDS}
    with closing(sqlite3.connect(db)) as con:
        con.execute("UPDATE layouts SET id = 99 WHERE id = 2")  # out of the way of the new id
        con.execute("UPDATE placements SET layout_id = 99 WHERE layout_id = 2")
        con.execute("UPDATE climbs SET layout_id = 99 WHERE layout_id = 2")
        con.execute("UPDATE layouts SET id = ?, product_id = ? WHERE id = 1", (layout_id, product_id))
        con.execute("UPDATE layouts SET product_id = ?", (product_id,))
        for table in ('placements', 'climbs'):
            con.execute(f"UPDATE {table} SET layout_id = ? WHERE layout_id = 1", (layout_id,))
        for table in ('product_sizes', 'holes'):
            con.execute(f"UPDATE {table} SET product_id = ?", (product_id,))
        con.execute("UPDATE products SET id = ?", (product_id,))
        con.execute("UPDATE product_sizes SET id = ? WHERE id = 10", (size_id,))
        con.execute("UPDATE leds SET product_size_id = ? WHERE product_size_id = 10", (size_id,))
        con.execute("DELETE FROM placement_roles")
        for position, (role, name) in enumerate(zip(ROLE_IDS, role_names), 1):
            con.execute("INSERT INTO placement_roles VALUES (?, ?, ?, ?, ?, '00FF00', NULL)",
                        (role_ids[role], product_id, position, name, name.title()))
        for uuid, frames in con.execute("SELECT uuid, frames FROM climbs").fetchall():
            new = re.sub(r'r(\d+)', lambda m: f"r{codes.get(int(m.group(1)), int(m.group(1)))}", frames)
            con.execute("UPDATE climbs SET frames = ? WHERE uuid = ?", (new, uuid))
        con.commit()


def make_moonboard_snapshot(root, layout_id, n_problems=80, seed=0):
    """A MoonBoard layout's climbs file as boardsesh writes it (grid cells, roles 42/43/44, graded
    at 40 and some at 25 degrees), published under root/board-snapshots/. -> (the folder, rows kept)."""
    rng = random.Random(seed)
    plain = os.path.join(root, 'climbs.db')
    os.makedirs(root, exist_ok=True)
    kept = 0
    with closing(sqlite3.connect(plain)) as out:
        out.executescript(SNAPSHOT_CLIMBS.format(shape=' WITHOUT ROWID'))
        for i in range(n_problems):
            cells = rng.sample(range(1, 188), rng.randint(4, 9))  # rows 1..17
            starts = cells[:rng.randint(1, 2)]
            tops = rng.sample(range(188, 199), rng.randint(1, 2))  # row 18
            frames = ''.join(f'p{c}r42' for c in starts) + ''.join(f'p{c}r43' for c in cells[len(starts):]) + \
                ''.join(f'p{c}r44' for c in tops)
            uuid = f'moon-{layout_id}-{i:04d}'
            out.execute("INSERT INTO board_climbs (uuid, board_type, layout_id, setter_username, name, angle, "
                        "frames_count, frames, is_draft, is_listed, is_hidden) VALUES (?, 'moonboard', ?, 'setter', ?, "
                        "40, 1, ?, 0, 1, 0)", (uuid, layout_id, f'problem {i}', frames))
            for angle in (40, 25) if i % 3 == 0 else (40,):
                out.execute("INSERT INTO board_climb_stats (board_type, climb_uuid, angle, display_difficulty, "
                            "difficulty_average) VALUES ('moonboard', ?, ?, ?, ?)", (uuid, angle, 16 + i % 12, 16 + i % 12))
                kept += 1
        out.execute("INSERT INTO snapshot_meta VALUES ('board_climbs', '2026-11-30T06:00:00Z', '1', ?, ?, 12, 1)",
                    (n_problems, STAMP))
        out.commit()
    return publish_snapshot(root, 'moonboard', layout_id, plain), kept
