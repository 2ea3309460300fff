"""prepare.py --download against a boardsesh-like bucket served on 127.0.0.1: fetched once per
build, checked, kept under data_root, and every failure one error line with nothing half-written."""
import gzip
import json
import os
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import error_line, run, shared
from fixtures import make_aurora_db, make_snapshot


class Bucket:
    """A copy of a snapshot folder served over HTTP as boardsesh's bucket serves it (objects with
    Content-Encoding: gzip), the manifests' urls pointed at it; faults[path] = 500 answers an
    error, 'truncate' sends half the object under the whole one's Content-Length."""

    def __init__(self, folder, root):
        self.root = os.path.join(root, 'served')
        shutil.copytree(folder, os.path.join(self.root, 'board-snapshots'))
        self.faults, self.requests, self.decoded = {}, [], False  # decoded: objects sent gunzipped
        bucket = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                bucket.requests.append(self.path)
                path = os.path.normpath(os.path.join(bucket.root, self.path.lstrip('/')))
                fault = bucket.faults.get(self.path)
                if fault == 500 or not path.startswith(bucket.root) or not os.path.isfile(path):
                    self.send_error(500 if fault == 500 else 404)
                    return
                body = open(path, 'rb').read()
                decoded = bucket.decoded and path.endswith('.db')
                body = gzip.decompress(body) if decoded else body
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                if path.endswith('.db') and not decoded:
                    self.send_header('Content-Encoding', 'gzip')
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if fault == 'truncate' else body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/board-snapshots'
        for sub in ('v1-gzip', 'v1-catalog'):
            self.edit(sub, lambda m: m)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def manifest(self, sub):
        return os.path.join(self.root, 'board-snapshots', sub, 'manifest.json')

    def edit(self, sub, change):
        """Rewrite a served manifest: change(parsed) -> parsed; urls always point here."""
        with open(self.manifest(sub)) as f:
            m = change(json.load(f))
        for e in m.get('entries', []) + ([m['artifact']] if 'artifact' in m else []):
            e['url'] = f"{self.url}/{e['key'][len('board-snapshots/'):]}"
        with open(self.manifest(sub), 'w') as f:
            json.dump(m, f)

    def entry(self, sub):
        with open(self.manifest(sub)) as f:
            m = json.load(f)
        return m['entries'][0] if 'entries' in m else m['artifact']

    def fetched(self):
        """The objects (not manifests) requested so far."""
        return [p for p in self.requests if p.endswith('.db')]


@pytest.fixture
def bucket(tmp_path):
    db = str(tmp_path / 'tiny.db')
    make_aurora_db(db)
    folder, _ = make_snapshot(db, str(tmp_path / 'made'))
    b = Bucket(folder, str(tmp_path))
    yield b
    b.server.shutdown()


def download(bucket, data_root, *args, check=True):
    return run('prepare.py', 'config/tiny.py', '--download', f'--snapshot_url={bucket.url}', f'--data_root={data_root}',
               *args, check=check)


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_download_prepares_and_reuses_the_build(bucket, tmp_path):
    data = str(tmp_path / 'data')
    proc = download(bucket, data)
    assert 'tiny layout 1 snapshot: fetched' in proc.stdout and 'catalogue snapshot: fetched' in proc.stdout
    assert os.path.isfile(os.path.join(data, 'tiny', 'meta.pkl'))
    # kept as the bucket lays it out: --db= of that folder prepares the same without a network
    kept = os.path.join(data, 'board-snapshots')
    assert files_under(kept) == sorted(['v1-gzip/manifest.json', 'v1-catalog/manifest.json',
                                        bucket.entry('v1-gzip')['key'][len('board-snapshots/'):],
                                        bucket.entry('v1-catalog')['key'][len('board-snapshots/'):]])
    offline = run('prepare.py', 'config/tiny.py', f'--db={kept}', f'--data_root={tmp_path}/again')
    assert offline.stdout.splitlines()[-3:-1] == proc.stdout.splitlines()[-3:-1]
    # a second run fetches the manifests only
    assert len(bucket.fetched()) == 2
    proc = download(bucket, data)
    assert len(bucket.fetched()) == 2 and 'tiny layout 1 snapshot: have' in proc.stdout
    # a newer build of the climbs is fetched, and the superseded one removed
    old = bucket.entry('v1-gzip')['key']
    new = old.replace('2026-11-30', '2026-12-01')
    os.rename(os.path.join(bucket.root, old), os.path.join(bucket.root, new))
    bucket.edit('v1-gzip', lambda m: dict(m, entries=[dict(m['entries'][0], key=new)]))
    proc = download(bucket, data)
    assert bucket.fetched()[-1].endswith(new[len('board-snapshots'):]) and len(bucket.fetched()) == 3
    assert not os.path.exists(os.path.join(data, old)) and os.path.exists(os.path.join(data, new))
    # no network now: the snapshot already here is prepared, with a warning
    bucket.server.shutdown()
    bucket.server.server_close()
    proc = download(bucket, data)
    assert 'warning: could not reach' in proc.stdout and os.path.isfile(os.path.join(data, 'tiny', 'meta.pkl'))


def test_a_server_that_sends_objects_decoded(bucket, tmp_path):
    """Some servers gunzip for a client that did not ask for gzip: the plain SQLite file is kept
    (its size is the manifest's uncompressedBytes), prepared, reused and read again offline."""
    bucket.decoded = True
    data = str(tmp_path / 'data')
    first = download(bucket, data)
    assert 'tiny layout 1 snapshot: fetched' in first.stdout and len(bucket.fetched()) == 2
    assert 'tiny layout 1 snapshot: have' in download(bucket, data).stdout and len(bucket.fetched()) == 2
    offline = run('prepare.py', 'config/tiny.py', f'--db={data}/board-snapshots', f'--data_root={tmp_path}/again')
    assert offline.stdout.splitlines()[-3:-1] == first.stdout.splitlines()[-3:-1]


def closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('case, expect', [
    ('truncated', 'the download broke off'),
    ('wrong size', 'the download broke off'),
    ('bigger than listed', 'sent more than'),
    ('no board', 'has no tiny layout 1 (it has tension 11)'),
    ('server error', 'answered 500'),
    ('manifest error', 'answered 500'),
    ('not gzip', 'neither an SQLite file nor a gzip'),
    ('no network', 'could not reach'),
    ('file url', "is not an http(s) URL"),
])
def test_a_failed_download_is_one_line_and_leaves_nothing(bucket, tmp_path, case, expect):
    climbs = bucket.entry('v1-gzip')
    path = '/' + climbs['key']
    url = bucket.url
    if case == 'truncated':
        bucket.faults[path] = 'truncate'
    elif case == 'wrong size':
        bucket.edit('v1-gzip', lambda m: dict(m, entries=[dict(climbs, bytes=climbs['bytes'] + 1)]))
    elif case == 'bigger than listed':
        bucket.edit('v1-gzip', lambda m: dict(m, entries=[dict(climbs, bytes=100, uncompressedBytes=200)]))
    elif case == 'no board':
        bucket.edit('v1-gzip', lambda m: dict(m, entries=[dict(climbs, boardType='tension', layoutId=11)]))
    elif case == 'server error':
        bucket.faults[path] = 500
    elif case == 'manifest error':
        bucket.faults['/board-snapshots/v1-catalog/manifest.json'] = 500
    elif case == 'not gzip':
        body = b'<html>not here</html>' * 10
        with open(os.path.join(bucket.root, climbs['key']), 'wb') as f:
            f.write(body)
        bucket.edit('v1-gzip', lambda m: dict(m, entries=[dict(climbs, bytes=len(body))]))
    elif case == 'no network':
        url = f'http://127.0.0.1:{closed_port()}/board-snapshots'
    elif case == 'file url':
        bucket.edit('v1-gzip', lambda m: m)
        with open(bucket.manifest('v1-gzip')) as f:
            m = json.load(f)
        m['entries'][0]['url'] = 'file:///etc/passwd'
        with open(bucket.manifest('v1-gzip'), 'w') as f:
            json.dump(m, f)
    data = str(tmp_path / 'data')
    proc = run('prepare.py', 'config/tiny.py', '--download', f'--snapshot_url={url}', f'--data_root={data}', check=False)
    assert expect in error_line(proc)
    assert not [f for f in files_under(data) if f.endswith('.db') or f.endswith('.part')] if os.path.isdir(data) else True
    assert not os.path.exists(os.path.join(data, 'tiny'))


def test_download_then_train_and_sample(tmp_path):
    """The newcomer's path on the real data, served from 127.0.0.1: download, prepare, train, sample."""
    bucket = Bucket(shared('boardsesh/board-snapshots'), str(tmp_path))
    try:
        data, out = str(tmp_path / 'data'), str(tmp_path / 'out')
        proc = run('prepare.py', 'config/kilter.py', '--download', f'--snapshot_url={bucket.url}', f'--data_root={data}')
        assert 'kilter layout 1 snapshot: fetched' in proc.stdout
        run('train_gen.py', 'config/kilter.py', f'--data_root={data}', f'--out_dir={out}', '--max_iters=20',
            '--eval_interval=10', '--warmup_iters=2', '--lr_decay_iters=20', '--n_layer=1', '--n_head=2', '--n_embd=32', '--batch_size=8')
        proc = run('sample.py', 'config/kilter.py', f'--data_root={data}', f'--out_dir={out}', '--num_samples=3',
                   '--grade=V4', '--angle=40', '--jsonl', f'--out={tmp_path}')
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        assert len(records) == 3 and all(r['board'] == 'kilter' and r['angle'] == 40 for r in records)
    finally:
        bucket.server.shutdown()
