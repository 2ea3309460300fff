"""boardsesh snapshots: prepare.py reads them into the same data as the boards' own files."""
import gzip
import json
import os
import pickle
import shutil
import uuid

import numpy as np
import pytest

from conftest import error_line, run, shared
from fixtures import make_aurora_db, make_moonboard_snapshot, make_snapshot, remap_board
from routes import SPLITS


def prepared(root, dataset):
    folder = os.path.join(root, dataset)
    with open(os.path.join(folder, 'meta.pkl'), 'rb') as f:
        meta = pickle.load(f)  # our own test output
    bins = {s: np.fromfile(os.path.join(folder, f'{s}.bin'), dtype=np.uint16) for s in SPLITS}
    return meta, bins


def assert_same_data(a, b, extra_removed):
    """Two prepared datasets are the same but for where they were read from, the quality's last
    bits (boardsesh stores it times 5/3) and the rows only one source has."""
    (meta_a, bins_a), (meta_b, bins_b) = a, b
    for s in SPLITS:
        assert np.array_equal(bins_a[s], bins_b[s])
        qa, qb = (m['splits'][s].pop('quality') for m in (meta_a, meta_b))
        assert np.allclose(np.array(qa, dtype=float), np.array(qb, dtype=float), equal_nan=True)
    for m in (meta_a, meta_b):
        for board in m['boards']:
            board.pop('source')
    table_a, table_b = meta_a.pop('table'), meta_b.pop('table')
    assert meta_a == meta_b
    for name, t in table_a.items():
        u = table_b[name]
        assert u['read'] == t['read'] + sum(extra_removed.values())
        assert u['removed'] == {r: t['removed'].get(r, 0) + extra_removed.get(r, 0)
                                for r in set(t['removed']) | set(extra_removed)}


@pytest.fixture
def snapshot(tmp_path):
    db = str(tmp_path / 'tiny.db')
    make_aurora_db(db)
    folder, extra = make_snapshot(db, str(tmp_path / 'bucket'))
    return dict(db=db, folder=folder, extra=extra, tmp=tmp_path)


def test_tiny_snapshot_prepares_as_its_database(snapshot):
    tmp = snapshot['tmp']
    run('prepare.py', 'config/tiny.py', f"--db={snapshot['db']}", f'--data_root={tmp}/native')
    proc = run('prepare.py', 'config/tiny.py', f"--db={snapshot['folder']}", f'--data_root={tmp}/snap')
    assert 'removed: hidden' in proc.stdout and 'removed: missing holds' in proc.stdout
    assert_same_data(prepared(f'{tmp}/native', 'tiny'), prepared(f'{tmp}/snap', 'tiny'), snapshot['extra'])


def test_a_climbs_file_plain_or_gzip_with_its_catalogue(snapshot):
    tmp, folder = snapshot['tmp'], snapshot['folder']
    gz = next(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(folder, 'v1-gzip')) for f in fs if f.endswith('.db'))
    cat = next(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(folder, 'v1-catalog')) for f in fs if f.endswith('.db'))
    plain = str(tmp / 'climbs.sqlite')  # the same file gunzipped, as an HTTP client may have left it
    open(plain, 'wb').write(gzip.decompress(open(gz, 'rb').read()))
    run('prepare.py', 'config/tiny.py', f"--db={folder}", f'--data_root={tmp}/a')
    for path in (gz, plain):
        run('prepare.py', 'config/tiny.py', f'--db={path}', f'--catalog={cat}', f'--data_root={tmp}/b')
        assert prepared(f'{tmp}/a', 'tiny')[1]['train'].tolist() == prepared(f'{tmp}/b', 'tiny')[1]['train'].tolist()
    err = error_line(run('prepare.py', 'config/tiny.py', f'--db={gz}', f'--data_root={tmp}/c', check=False))
    assert 'needs its board catalogue' in err


def test_both_storage_shapes_and_manifest_versions(tmp_path):
    db = str(tmp_path / 'tiny.db')
    make_aurora_db(db)
    trains = []
    for shape, version in ((1, 1), (2, 2)):
        folder, _ = make_snapshot(db, str(tmp_path / f'b{shape}'), shape=shape, format_version=version)
        run('prepare.py', 'config/tiny.py', f'--db={folder}', f'--data_root={tmp_path}/d{shape}')
        trains.append(prepared(f'{tmp_path}/d{shape}', 'tiny')[1]['train'].tolist())
    assert trains[0] == trains[1] and trains[0]


def _corrupt(folder, case):
    manifest = os.path.join(folder, 'v1-gzip', 'manifest.json')
    m = json.load(open(manifest))
    entry = m['entries'][0]
    path = os.path.join(folder, entry['key'][len('board-snapshots/'):])
    if case == 'privacy':
        entry['privacyVersion'] = 2
    elif case == 'future prefix':
        entry['key'] = entry['key'].replace('v1-gzip', 'v2')
    elif case == 'format version':
        m['formatVersion'] = 3
    elif case == 'no board':
        entry['boardType'] = 'decoy'
    elif case == 'wrong size':
        entry['bytes'] += 1
    elif case == 'truncated':
        body = open(path, 'rb').read()
        open(path, 'wb').write(body[:len(body) // 2])
        entry['bytes'] = len(body) // 2
    elif case == 'quick_check':  # a valid gzip of an SQLite file whose pages are damaged
        raw = bytearray(gzip.decompress(open(path, 'rb').read()))
        page = int.from_bytes(raw[16:18], 'big')
        for i in range(page, len(raw) - page, page):
            raw[i + 8:i + 60] = b'\xff' * 52
        body = gzip.compress(bytes(raw))
        open(path, 'wb').write(body)
        entry['bytes'] = len(body)
    json.dump(m, open(manifest, 'w'))


@pytest.mark.parametrize('case, expect', [
    ('privacy', 'privacyVersion 2'), ('future prefix', 'not under board-snapshots/v1-gzip/'),
    ('format version', 'formatVersion 3'), ('no board', 'has no tiny layout 1'), ('wrong size', 'a damaged copy'),
    ('truncated', 'damaged gzip'), ('quick_check', 'quick_check')])
def test_a_snapshot_it_cannot_vouch_for_is_refused(snapshot, case, expect):
    _corrupt(snapshot['folder'], case)
    out = snapshot['tmp'] / 'out'
    proc = run('prepare.py', 'config/tiny.py', f"--db={snapshot['folder']}", f'--data_root={out}', check=False)
    assert expect in error_line(proc)
    assert not os.path.exists(out / 'tiny' / 'meta.pkl')


def test_a_filter_that_leaves_nothing_is_an_error(tiny, tmp_path):
    proc = run('prepare.py', 'config/tiny.py', f"--db={tiny['db']}", f'--data_root={tmp_path}', '--angle_min=80',
               check=False)
    err = error_line(proc)
    assert 'no route left' in err and 'angle outside 80..90' in err
    assert not os.path.exists(tmp_path / 'tiny' / 'meta.pkl')


# -----------------------------------------------------------------------------
# a config for every board boardsesh carries: each prepares from a small snapshot of that board's
# ids, its role ids and angles read from the catalogue (boardsesh's ids, as its source gives them)

AURORA_CONFIGS = {  # config: (product id, role ids start, middle, finish, foot)
    'kilter_homewall': (7, (42, 43, 44, 45)), 'tension_mirror': (5, (5, 6, 7, 8)), 'tension1': (4, (1, 2, 3, 4)),
    'decoy': (1, (1, 2, 3, 4)), 'touchstone': (1, (1, 2, 3, 4)), 'grasshopper': (1, (1, 2, 3, 4)),
    'soill': (1, (1, 2, 3, 4)),
}


def board_of(config):
    scope = {}
    exec(open(os.path.join('config', f'{config}.py')).read(), scope)  # our own config file
    return scope['boards'][0]


@pytest.mark.parametrize('config', sorted(AURORA_CONFIGS))
def test_every_aurora_config_prepares_from_its_snapshot(tmp_path, config):
    spec = board_of(config)
    assert set(spec) == {'name', 'board_type', 'format', 'path', 'layout_id', 'product_size_id'}  # what a climber knows
    product, codes = AURORA_CONFIGS[config]
    db = str(tmp_path / 'board.db')
    expected, _ = make_aurora_db(db)
    roles = dict(zip(('start', 'middle', 'finish', 'foot'), codes))
    remap_board(db, spec['layout_id'], product, spec['product_size_id'], roles)
    folder, _ = make_snapshot(db, str(tmp_path / 'bucket'), board_type=spec['board_type'], layout_id=spec['layout_id'])
    proc = run('prepare.py', f'config/{config}.py', f'--db={folder}', f'--data_root={tmp_path}')
    meta, bins = prepared(str(tmp_path), config)
    board = meta['boards'][0]
    assert board['role_codes'] == roles and board['angles'] == list(range(0, 75, 5))
    assert board['title'] == 'Tiny Layout 6 x 8' and len(board['holds']) == 47
    assert sum(len(meta['splits'][s]['climb_id']) for s in SPLITS) == len(expected)
    assert 'removed: hidden' in proc.stdout


@pytest.mark.parametrize('config', ['moonboard2024', 'moonboard_masters2017', 'moonboard_masters2019'])
def test_every_moonboard_config_prepares_from_its_snapshot(tmp_path, config):
    spec = board_of(config)
    folder, kept = make_moonboard_snapshot(str(tmp_path / 'bucket'), spec['layout_id'])
    run('prepare.py', f'config/{config}.py', f'--db={folder}', f'--data_root={tmp_path}')
    meta, _ = prepared(str(tmp_path), config)
    angles = [a for s in SPLITS for a in meta['splits'][s]['angle']]
    assert len(angles) == kept and set(angles) == {25, 40} and meta['boards'][0]['angles'] == [25, 40]
    assert meta['boards'][0]['title'] == spec['title']


# -----------------------------------------------------------------------------
# the local copy of boardsesh's public data (CI has it)

def test_kilter_snapshot_equals_kilter_db(tmp_path):
    folder = shared('boardsesh/board-snapshots')
    run('prepare.py', 'config/kilter.py', f"--db={shared('kilter.db')}", f'--data_root={tmp_path}/native')
    run('prepare.py', 'config/kilter.py', f'--db={folder}', f'--data_root={tmp_path}/snap')
    # the copy's 11 flagged climbs (its README), each with one stats row
    flagged = {'draft': 3, 'unlisted': 3, 'animated (several frames)': 2, 'hidden': 2, 'missing holds': 1}
    assert_same_data(prepared(f'{tmp_path}/native', 'kilter'), prepared(f'{tmp_path}/snap', 'kilter'), flagged)


def test_moonboard_snapshot_equals_the_json(tmp_path):
    folder = shared('boardsesh/board-snapshots')
    run('prepare.py', 'config/moonboard.py', f"--db={shared('moonboard2016.json')}", f'--data_root={tmp_path}/native')
    run('prepare.py', 'config/moonboard.py', f'--db={folder}', f'--data_root={tmp_path}/snap')
    (native, native_bins), (snap, snap_bins) = prepared(f'{tmp_path}/native', 'moonboard'), prepared(f'{tmp_path}/snap', 'moonboard')

    def rows(meta, bins, climb_id):
        out = {}
        for s in SPLITS:
            a = meta['splits'][s]
            for i, cid in enumerate(a['climb_id']):
                out[climb_id(cid)] = (bins[s][a['offset'][i]:a['offset'][i + 1]].tolist(), a['angle'][i],
                                      a['difficulty'][i], a['ascents'][i], a['name'][i], a['sizes'][i])
        return out
    # boardsesh's MoonBoard climb id: uuid5 of 'moonboard:<problem id>' (its README)
    ns = uuid.UUID('6ba7b810-9dad-11d1-80b4-00c04fd430c8')
    mine = rows(native, native_bins, lambda cid: str(uuid.uuid5(ns, f'moonboard:{cid}')))
    theirs = rows(snap, snap_bins, str)
    # the format writes a hold the JSON lists twice once, so those 9 problems are kept from it
    assert native['table']['moonboard']['removed'].pop('duplicated hold') == 9
    assert set(theirs) - set(mine) and len(set(theirs) - set(mine)) == 9
    assert {k: theirs[k] for k in mine} == mine
    for m in (native, snap):
        for b in m['boards']:
            for key in ('source', 'sets', 'hold_set'):  # the format names no hold's set
                b.pop(key)
    assert native['boards'] == snap['boards'] and native['itos'] == snap['itos']
    assert snap['table']['moonboard']['removed'] == native['table']['moonboard']['removed']
