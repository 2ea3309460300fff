import json
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'data')  # real data, where CI has it
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixtures import make_aurora_db, make_moonboard_json  # noqa: E402,F401  (the tests import them from here)


def run(*args, check=True):
    """Run a boardgpt script from the repo root, as a user would."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_many(commands, workers=4):
    """run(*args, check=False) for each of commands (lists of arguments), workers at a time, each
    forked from one process that imports torch once (tests/forkrun.py): for dozens of short
    commands, a third of the time."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [[list(args), os.path.join(tmp, f'{i}.out'), os.path.join(tmp, f'{i}.err')] for i, args in enumerate(commands)]
        proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'forkrun.py')], cwd=ROOT, capture_output=True,
                              text=True, timeout=900, input=json.dumps(dict(root=ROOT, workers=workers, jobs=jobs)))
        assert proc.returncode == 0, proc.stderr
        codes = json.loads(proc.stdout.splitlines()[-1])
        return [subprocess.CompletedProcess(args, code, open(out).read(), open(err).read())
                for (args, out, err), code in zip(jobs, codes)]


def shared(name):
    path = os.path.join(SHARED, name)
    if not os.path.exists(path):
        pytest.skip(f'no {path}')
    return path


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    """The tiny board prepared once: (data_root, expected kept rows, planted removals)."""
    root = tmp_path_factory.mktemp('tiny')
    db = str(root / 'tiny.db')
    expected, removed = make_aurora_db(db)
    proc = run('prepare.py', 'config/tiny.py', f'--db={db}', f'--data_root={root}')
    return dict(root=str(root), db=db, expected=expected, removed=removed, stdout=proc.stdout)


def error_line(proc):
    """The one line a failed script printed about its failure (stderr less the config echo)."""
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith('config:')]
    assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr
    return lines[0]
