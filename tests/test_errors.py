"""Every script, every kind of bad input a user can give: one line `error: ...`, a non-zero exit,
no traceback, and nothing half-written left behind."""
import argparse
import json
import os
import sqlite3

import pytest
import torch

from conftest import error_line, make_aurora_db, run, run_many, shared

TINY_ROUTE = 'p1002r12p1014r13p1021r13p1027r13p1044r14'


@pytest.fixture(scope='module')
def bad(tiny, tmp_path_factory):
    """Tiny models trained for a few iterations, and a folder of broken things to give the scripts."""
    root = tmp_path_factory.mktemp('bad')
    data = tiny['root']
    run('train_gen.py', 'config/tiny.py', f'--data_root={data}', f'--out_dir={root}/gen', '--max_iters=4', '--eval_interval=2')
    run('train_grade.py', 'config/tiny.py', f'--data_root={data}', f'--out_dir={root}/grade', '--max_iters=4',
        '--eval_interval=2')
    good = open(root / 'gen' / 'best.pt', 'rb').read()
    (root / 'truncated').mkdir()
    (root / 'truncated' / 'best.pt').write_bytes(good[:len(good) // 3])
    (root / 'garbage').mkdir()
    (root / 'garbage' / 'best.pt').write_bytes(os.urandom(5000))
    (root / 'unsafe').mkdir()  # torch will not unpickle an arbitrary class with weights_only: neither will we
    torch.save(dict(model={}, model_args={}, extra=argparse.Namespace(x=1)), root / 'unsafe' / 'best.pt')
    (root / 'empty').mkdir()
    (root / 'typo.py').write_text("max_itres = 10\n")
    (root / 'syntax.py').write_text("max_iters = = 10\n")
    (root / 'latin1.py').write_bytes("name = 'caf\xe9'\n".encode('latin-1'))
    (root / 'raises.py').write_text("max_iters = 1 // 0\n")
    (root / 'not.db').write_text('this is not a database\n' * 50)
    make_aurora_db(str(root / 'nostats.db'), n_climbs=5)
    con = sqlite3.connect(root / 'nostats.db')
    con.execute('DROP TABLE climb_stats')
    con.commit()
    con.close()
    (root / 'moon.json').write_text('{"problems": 7}')
    many_hands = ''.join(f'p{p}r13' for p in range(1001, 1042))  # 41 hand holds: no room for a start and a finish
    (root / 'lines.jsonl').write_bytes(
        json.dumps(dict(frames=TINY_ROUTE, angle=40)).encode() + b'\n'
        + b'{"frames": "' + TINY_ROUTE.encode() + b'", "angle": 1e400}\n'
        + b'{"frames": "p1002r12\xff\xfe", "angle": 40}\n')
    return dict(root=str(root), data=data, many_hands=many_hands)


def cases():
    """(script, arguments, what the error line must say). {root} is the fixture folder, {data} the
    prepared tiny data; every case also gets an output folder that must stay empty."""
    sample = ['sample.py', 'config/tiny.py', '--data_root={data}', '--out_dir={root}/gen', '--grade_dir={root}/grade',
              '--out={out}']
    train_gen = ['train_gen.py', 'config/tiny.py', '--data_root={data}', '--out_dir={out}']
    train_grade = ['train_grade.py', 'config/tiny.py', '--data_root={data}', '--out_dir={out}']
    grade = ['grade.py', 'config/tiny.py', '--data_root={data}', '--checkpoint={root}/grade']
    one = [f'--frames={TINY_ROUTE}', '--angle=40']
    prepare = ['prepare.py', 'config/tiny.py', '--data_root={out}']
    evaluate = ['evaluate.py', 'config/tiny.py', '--data_root={data}', '--gen_dir={root}/gen', '--grade_dir={root}/grade',
                '--report_dir={out}']
    return [
        # sample.py: prompts that cannot be completed, sampling settings, devices, checkpoints, data
        (sample + ['--prompt=p1002r12p1003r12p1004r12'], 'the prompt has 3 start holds'),
        (sample + ['--prompt={many_hands}'], 'needs 2 more for a start and finish'),
        (sample + ['--prompt=p1002r12p1044r14p1045r14p1046r14'], 'the prompt has 3 finish holds'),
        (sample + ['--temperature=-1'], 'temperature must be a number >= 0'),
        (sample + ['--top_p=0'], 'top_p must be in (0, 1]'),
        (sample + ['--top_p=1.5'], 'top_p must be in (0, 1]'),
        (sample + ['--top_k=-5'], 'top_k must be a whole number >= 0'),
        (sample + ['--device=gpu'], "unknown device 'gpu'"),
        (sample + ['--device=cuda'], 'no CUDA GPU') if not torch.cuda.is_available() else None,
        (sample + ['--num_samples=0'], 'num_samples must be 1..100000'),
        (sample + ['--best_of=0'], 'best_of must be a whole number 1..64'),
        (sample + ['--tolerance=-1'], 'tolerance must be a number of grades >= 0'),
        (sample + ['--grade=V20'], 'out of range'),
        (sample + ['--grade=hard'], "unknown grade 'hard'"),
        (sample + ['--angle=42'], 'angle 42 is impossible'),
        (sample + ['--angle=1e400'], 'angle must be'),
        (sample + ['--board=kilter'], "unknown board 'kilter'"),
        (sample + ['--prompt=p1002x'], 'malformed frames string'),
        (sample + ['--prompt=p9999r12'], 'unknown placement p9999'),
        (sample + ['--out_dir={root}/truncated'], 'is truncated or not a checkpoint'),
        (sample + ['--out_dir={root}/garbage'], 'is truncated or not a checkpoint'),
        (sample + ['--out_dir={root}/unsafe'], 'cannot be loaded safely'),
        (sample + ['--out_dir={root}/grade'], 'is a grade model, not a route generator'),
        (sample + ['--out_dir={root}/empty'], 'no checkpoint at'),
        (sample + ['--data_root={root}/empty'], 'prepare the data first'),
        (sample + ['{root}/typo.py'], "sets 'max_itres', which no boardgpt script reads (did you mean max_iters?)"),
        (sample + ['--grade'], 'expected --key=value'),
        (sample + ['--lights', '--led_api=4'], 'led_api must be 2 or 3'),
        (['sample.py', 'config/nope.py'], 'config file config/nope.py not found'),
        # walls: a size or set the database lacks, a wall too small for any route, a hold off the wall
        (sample + ['--size=9 x 9'], "Tiny Layout has no size '9 x 9': its sizes are 10 '6 x 8', 11 '4 x 5', 12 '1 x 2'"),
        (sample + ['--sets=Wood'], "has no hold set 'Wood': its hold sets are 1 'Bolt Ons', 2 'Screw Ons'"),
        (sample + ['--size=12'], "has 1 of this board's holds; a route needs at least 3"),
        (sample + ['--size=11', '--prompt=p1002r12'], 'hold p1002 is not on the wall Tiny Layout 4 x 5'),
        (grade + one + ['--size=11'], 'hold p1002 is not on the wall Tiny Layout 4 x 5'),
        (prepare + ['--db={data}/tiny.db', '--sets=3'], "has no hold set '3'"),
        (evaluate + ['--split=train2'], 'split must be one of train, val, test or all'),
        (evaluate + ['--max_rows=-5'], 'max_rows must be a whole number of routes >= 0'),
        (evaluate + ['--size=4 x 5', '--sets=2'], 'no test route fits the wall Tiny Layout 4 x 5, Screw Ons'),
        # train_gen.py and train_grade.py
        (train_gen + ['--data_root={root}/empty'], 'prepare the data first'),
        (train_gen + ['--batch_size=0'], 'batch_size must be at least 1'),
        (train_gen + ['--device=gpu'], "unknown device 'gpu'"),
        (train_gen + ['--init_from=resume'], 'no checkpoint at'),
        (train_gen + ['--init_from=bogus'], "init_from must be 'scratch' or 'resume'"),
        (train_gen + ['--dtype=float8'], 'dtype must be auto, float32, bfloat16 or float16'),
        (train_gen + ['--n_embd=33'], 'must be a multiple of n_head'),
        (train_gen + ['--max_itres=10'], "unknown config key 'max_itres' for train_gen.py (did you mean max_iters?)"),
        (train_gen + ['--max_iters=ten'], 'max_iters must be int'),
        (train_gen + ['{root}/typo.py'], "sets 'max_itres'"),
        (train_gen + ['--max_minutes=-1'], 'max_minutes must be a number of minutes > 0 (0: no budget), got -1'),
        (train_gen + ['--max_minutes=1e400'], 'max_minutes must be a number of minutes > 0'),
        (train_gen + ['--max_minutes=soon'], 'max_minutes must be float'),
        (train_grade + ['--max_minutes=-0.5'], 'max_minutes must be a number of minutes > 0'),
        (train_gen + ['{root}/syntax.py'], 'syntax.py, line 1: invalid syntax'),
        (train_gen + ['{root}/latin1.py'], 'is not readable Python text'),
        (train_gen + ['{root}/raises.py'], 'failed: ZeroDivisionError'),
        (train_grade + ['--data_root={root}/empty'], 'prepare the data first'),
        (train_grade + ['--learning_rate=0'], 'learning_rate must be positive'),
        (train_grade + ['--dropout=1.5'], 'dropout must be in [0, 1)'),
        (train_grade + ['--device=tpu'], "unknown device 'tpu'"),
        (train_grade + ['--pretrain_epochs=2', '--pretrain_mask=0'], 'pretrain_mask in (0, 1]'),
        # grade.py: arguments, routes, checkpoints, and JSON lines with bad lines among good ones
        (grade, 'give one route with --frames'),
        (grade + one + ['--input=x.jsonl'], 'give one route with --frames'),
        (grade + ['--input={root}/none.jsonl'], 'no input file'),
        (grade + ['--frames=p1002r12p10', '--angle=40'], 'malformed frames string'),
        (grade + [f'--frames={TINY_ROUTE}', '--angle=40.5'], 'angle 40.5 is not a whole number'),
        (grade + one[:1] + ['--angle=None'], 'need an angle'),
        (grade + one + ['--checkpoint={root}/gen/best.pt'], 'is a route generator, not a grade model'),
        (grade + one + ['--checkpoint={root}/truncated/best.pt'], 'is truncated or not a checkpoint'),
        (grade + one + ['--checkpoint={root}/empty'], 'no grade model at'),
        (grade + one + ['--board=moon'], "unknown board 'moon'"),
        (grade + one + ['--device=gpu'], "unknown device 'gpu'"),
        (grade + ['--input={root}/lines.jsonl'], '2 of 3 routes could not be graded (lines 2, 3)'),
        # prepare.py: databases and filters
        (prepare + ['--db={root}/none.db'], 'no database at'),
        (prepare + ['--db={root}/not.db'], 'is not an SQLite database'),
        (prepare + ['--db={root}/nostats.db'], 'has neither climb_stats nor climb_cache_fields'),
        (prepare + ['--db={root}/nostats.db', '--min_holds=50'], 'min_holds <= max_holds'),
        (['prepare.py', 'config/moonboard.py', '--db={root}/moon.json', '--data_root={out}'], 'is not MoonBoard problem JSON'),
        (['prepare.py', '--data_root={out}'], 'no boards configured'),
        # evaluate.py and bench.py
        (evaluate + ['--gen_dir={root}/empty'], 'no checkpoint at'),
        (evaluate + ['--num_samples=0'], 'num_samples and sample_batch must be at least 1'),
        (evaluate + ['--tolerance=-0.5'], 'tolerance must be a number of grades >= 0'),
        (evaluate + ['--device=gpu'], "unknown device 'gpu'"),
        (['bench.py', '--device=gpu'], "unknown device 'gpu'"),
        (['bench.py', '--config=config/nope.py'], 'config file config/nope.py not found'),
    ]


CASES = [c for c in cases() if c is not None]


def test_the_table_covers_every_script_and_is_long():
    scripts = {args[0] for args, _ in CASES}
    assert {'sample.py', 'train_gen.py', 'train_grade.py', 'grade.py', 'prepare.py', 'evaluate.py', 'bench.py'} <= scripts
    assert len(CASES) >= 40


@pytest.fixture(scope='module')
def runs(bad, tmp_path_factory):
    """Every case run once, four at a time, forked from one process that has imported torch (each
    is mostly a Python start-up): case -> (process, its output folder)."""
    outs = [tmp_path_factory.mktemp(f'case{i}') / 'out' for i in range(len(CASES))]
    commands = [[a.format(root=bad['root'], data=bad['data'], out=str(out), many_hands=bad['many_hands']) for a in args]
                for (args, _), out in zip(CASES, outs)]
    return dict(enumerate(zip(run_many(commands), outs)))


@pytest.mark.parametrize('case', range(len(CASES)), ids=[f'{a[0]} {" ".join(a[2:])[-60:]}' for a, _ in CASES])
def test_bad_input_is_one_error_line(runs, case):
    message = CASES[case][1]
    proc, out = runs[case]
    assert proc.returncode != 0
    line = error_line(proc)  # exactly one line, `error: ...`, and no traceback
    assert message in line, line
    assert not out.exists() or not os.listdir(out), f'left behind: {os.listdir(out)}'


def test_bad_json_lines_leave_the_good_ones_graded(bad):
    proc = run('grade.py', 'config/tiny.py', f"--data_root={bad['data']}", f"--checkpoint={bad['root']}/grade",
               f"--input={bad['root']}/lines.jsonl", check=False)
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o['line'] for o in out] == [1, 2, 3]
    assert out[0]['angle'] == 40 and 'difficulty' in out[0]
    assert 'not a whole number' in out[1]['error'] and 'not UTF-8' in out[2]['error']



def test_a_board_without_an_led_map_cannot_be_lit(tmp_path):
    """A database that lists no LEDs: --lights says so, before any model is loaded."""
    db = str(tmp_path / 'noleds.db')
    make_aurora_db(db, n_climbs=40)
    con = sqlite3.connect(db)
    con.execute('DELETE FROM leds')
    con.commit()
    con.close()
    run('prepare.py', 'config/tiny.py', f'--db={db}', f'--data_root={tmp_path}')
    proc = run('grade.py', 'config/tiny.py', f'--data_root={tmp_path}', f'--frames={TINY_ROUTE}', '--angle=40', '--lights',
               f'--checkpoint={tmp_path}/none', check=False)
    assert 'has no LED map' in error_line(proc)
