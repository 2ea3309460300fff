"""prepare.py on fixture boards made by the tests, and on ../shared/data when it is there."""
import os
import sqlite3
from collections import defaultdict

import numpy as np
import pytest

from conftest import error_line, make_aurora_db, make_moonboard_json, run, shared
from routes import SPLITS, Grammar, block_size, load_meta, load_split, sample_rows, sample_split


def decode_splits(root, dataset):
    """Every route in the written bins, decoded with the grammar, per split."""
    meta = load_meta(os.path.join(root, dataset))
    g = Grammar(meta)
    out = {}
    for split in SPLITS:
        data = np.fromfile(os.path.join(root, dataset, f'{split}.bin'), dtype=np.uint16)
        arrays = meta['splits'][split]
        offsets = arrays['offset']
        assert offsets[-1] == len(data)
        routes = []
        for i in range(len(offsets) - 1):
            r = g.decode(data[offsets[i]:offsets[i + 1]])
            assert r['board'] == arrays['board'][i]
            assert r['angle'] == arrays['angle'][i]
            g.validate(r['board'], r['holds'])
            routes.append(dict(r, climb_id=arrays['climb_id'][i], difficulty=arrays['difficulty'][i]))
        out[split] = routes
    return meta, out


def assert_split_by_climb(splits):
    where = defaultdict(set)
    holdsets = defaultdict(set)
    for split, routes in splits.items():
        for r in routes:
            where[(r['board'], r['climb_id'])].add(split)
            holdsets[(r['board'], frozenset(r['holds']))].add(split)
    assert all(len(s) == 1 for s in where.values()), 'a climb is in two splits'
    assert all(len(s) == 1 for s in holdsets.values()), 'the same hold set is in two splits'


def test_tiny_bins_decode_to_exactly_the_kept_rows(tiny):
    meta, splits = decode_splits(tiny['root'], 'tiny')
    got = {(r['climb_id'], r['angle']): (sorted(r['holds']), r['difficulty']) for s in splits.values() for r in s}
    assert got == tiny['expected']
    assert sum(len(s) for s in splits.values()) == len(tiny['expected'])
    assert all(len(splits[s]) > 0 for s in SPLITS)
    assert_split_by_climb(splits)


def test_tiny_every_removed_row_is_counted(tiny):
    meta = load_meta(os.path.join(tiny['root'], 'tiny'))
    t = meta['table']['tiny']
    assert dict(t['removed']) == tiny['removed']
    assert t['read'] == sum(t['removed'].values()) + sum(t[s] for s in SPLITS)
    for reason, n in tiny['removed'].items():
        assert any(line.strip().startswith(f'removed: {reason}') and line.split()[-1] == str(n)
                   for line in tiny['stdout'].splitlines()), reason
    assert 'vocabulary:' in tiny['stdout']


def test_tiny_meta_describes_the_board(tiny):
    meta = load_meta(os.path.join(tiny['root'], 'tiny'))
    board = meta['boards'][0]
    assert len(board['holds']) == 47  # 6 x 8 grid less the hole without an LED; the outside hole is off the size
    assert {p for p, _, _ in board['holds']} == set(range(1001, 1048))
    assert meta['kind'].count('hold') == 47 * 4 and len(meta['itos']) == len(meta['kind'])
    assert board['max_start'] == 2 and board['min_finish'] == 1
    assert block_size(meta) >= max(np.diff(meta['splits'][s]['offset']).max() for s in SPLITS)  # every route fits
    assert block_size(meta) == 3 + board['max_holds'] + 1


def test_min_ascents_filter_is_counted(tmp_path, tiny):
    proc = run('prepare.py', 'config/tiny.py', f"--db={tiny['db']}", f'--data_root={tmp_path}', '--min_ascents=10')
    meta = load_meta(tmp_path / 'tiny')
    few = sum(1 for k, v in tiny['expected'].items())
    kept = sum(len(meta['splits'][s]['climb_id']) for s in SPLITS)
    assert kept < few
    assert meta['table']['tiny']['removed']['fewer than 10 ascents'] == few - kept + 1  # + the never-logged climb
    assert 'fewer than 10 ascents' in proc.stdout
    assert all(a >= 10 for s in SPLITS for a in meta['splits'][s]['ascents'])


def test_per_climb_grades_without_angles(tmp_path):
    """A Tension-style database: climb_cache_fields, no climb_stats, so no angle."""
    db = str(tmp_path / 'cache.db')
    expected, removed = make_aurora_db(db, n_climbs=60, per_angle=False)
    run('prepare.py', 'config/tiny.py', f'--db={db}', f'--data_root={tmp_path}')
    meta, splits = decode_splits(str(tmp_path), 'tiny')
    got = {(r['climb_id'], r['angle']): (sorted(r['holds']), r['difficulty']) for s in splits.values() for r in s}
    assert got == expected
    assert all(k[1] is None for k in got) and not meta['boards'][0]['angle_known']
    assert dict(meta['table']['tiny']['removed']) == removed


def test_moonboard_json(tmp_path):
    path = str(tmp_path / 'mb.json')
    expected, removed = make_moonboard_json(path)
    run('prepare.py', 'config/moonboard.py', f'--db={path}', f'--data_root={tmp_path}')
    meta, splits = decode_splits(str(tmp_path), 'moonboard')
    got = {r['climb_id']: (sorted(r['holds']), r['difficulty']) for s in splits.values() for r in s}
    assert got == expected
    assert dict(meta['table']['moonboard']['removed']) == removed
    assert all(r['angle'] == 40 for s in splits.values() for r in s)


@pytest.mark.parametrize('case', ['missing', 'not sqlite', 'not aurora', 'wrong layout'])
def test_bad_database_is_a_clear_one_line_error(tmp_path, case):
    db = tmp_path / 'x.db'
    args = []
    if case == 'not sqlite':
        db.write_text('this is not a database\n' * 100)
    elif case == 'not aurora':
        sqlite3.connect(db).execute('CREATE TABLE foo (x INT)')
    elif case == 'wrong layout':
        make_aurora_db(str(db), n_climbs=5)
        args = ['--boards=' + repr([dict(name='tiny', format='aurora', path=str(db), layout_id=7, product_size_id=10,
                                         role_ids=dict(start=12, middle=13, finish=14, foot=15), angles=[40],
                                         max_start=2, max_finish=2)])]
    proc = run('prepare.py', 'config/tiny.py', f'--db={db}', f'--data_root={tmp_path}', *args, check=False)
    err = error_line(proc)
    expect = {'missing': 'db.sqlite3 inside the board app', 'not sqlite': 'not an SQLite database', 'not aurora': 'not an Aurora board database',
              'wrong layout': 'no layout 7'}[case]
    assert expect in err


def test_prepare_never_writes_to_the_database(tmp_path, tiny):
    before = os.stat(tiny['db']).st_mtime_ns, open(tiny['db'], 'rb').read()
    run('prepare.py', 'config/tiny.py', f"--db={tiny['db']}", f'--data_root={tmp_path}')
    assert (os.stat(tiny['db']).st_mtime_ns, open(tiny['db'], 'rb').read()) == before


# -----------------------------------------------------------------------------
# the real data, where it is present (CI has it)

@pytest.mark.parametrize('config', ['kilter', 'tension', 'moonboard', 'boards'])
def test_shared_data_prepares_and_decodes(tmp_path, config):
    for name in ('kilter.db', 'tension.db', 'moonboard2016.json'):
        shared(name)
    spec = {'kilter': 'kilter.db', 'tension': 'tension.db', 'moonboard': 'moonboard2016.json'}
    if config == 'boards':  # each board's path, pointed at the shared data
        from config.boards import boards  # noqa: the config file is plain Python
        boards = [dict(b, path=shared(spec[b['name']])) for b in boards]
        args = ['--boards=' + repr(boards)]
    else:
        args = [f'--db={shared(spec[config])}']
    proc = run('prepare.py', f'config/{config}.py', f'--data_root={tmp_path}', *args)
    meta, splits = decode_splits(str(tmp_path), config)
    assert_split_by_climb(splits)
    for b in meta['boards']:
        t = meta['table'][b['name']]
        kept = sum(t.get(s, 0) for s in SPLITS)
        assert t['read'] == kept + sum(t['removed'].values())
        assert kept == sum(1 for s in splits.values() for r in s if r['board'] == b['name'])
        fracs = [t[s] / kept for s in SPLITS]
        assert 0.87 < fracs[0] < 0.93 and 0.03 < fracs[1] < 0.07 and 0.03 < fracs[2] < 0.07
    assert 'rows kept' in proc.stdout


def test_a_fixed_sample_of_a_split(tiny):
    """What evaluations and reports count of a large split: the rows of least hash, the same rows
    whatever asks, a smaller sample inside a larger one, and every row where the split is small."""
    meta = load_meta(os.path.join(tiny['root'], 'tiny'))
    rows = load_split(os.path.join(tiny['root'], 'tiny'), meta, 'train')
    flat = load_split(os.path.join(tiny['root'], 'tiny'), meta, 'train', lists=False)
    n = len(rows['tokens'])
    assert n > 100
    small, large = sample_rows(rows, 40), sample_rows(rows, 80)
    assert small.sum() == 40 and large.sum() == 80 and not (small & ~large).any()
    assert (sample_rows(flat, 40) == small).all() and sample_rows(rows, n).all() and sample_rows(rows, 10 * n).all()
    # by each row's own key, not its place: the same rows in any order of the split
    order = np.random.default_rng(0).permutation(n)
    shuffled = {k: v[order] for k, v in flat.items() if k not in ('flat', 'offset')}
    def keys(r, keep):
        return {(c, a) for c, a, k in zip(r['climb_id'], r['angle'], keep) if k}
    assert keys(shuffled, sample_rows(shuffled, 40)) == keys(rows, small)
    picked = sample_split(flat, 40)
    assert picked['tokens'] == [t for t, keep in zip(rows['tokens'], small) if keep]
    assert list(picked['climb_id']) == list(rows['climb_id'][small]) and set(picked) == set(rows)
    assert sample_split(flat, n)['tokens'] == rows['tokens']
