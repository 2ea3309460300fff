"""bench.py --page: the README's database-to-page block, run on the tiny board."""
import os
import tempfile

from conftest import error_line, run


def test_page_times_every_step_and_scores_the_models(tiny, tmp_path):
    before = sorted(os.listdir(tiny['root']))
    proc = run('bench.py', '--config=config/tiny.py', '--page=True', f"--db={tiny['db']}", '--device=cpu')
    out = proc.stdout
    table = out[out.index('step '):]
    for what in ('prepare', 'train_gen', 'train_grade --member=1', 'train_grade --member=0', 'the trainings, at once',
                 'serve (up, one page)', 'database to page'):
        assert f'\n{what} ' in '\n' + table, what
    assert 'matmul peak float32' in out and 'generator: val loss' in out
    assert 'grade model (2 grade models joined by the generator; and those alone), test split' in out
    assert 'model (all)' in out and 'grade models (all)' in out and 'MAE' in out and 'V within 1' in out
    assert sorted(os.listdir(tiny['root'])) == before  # it worked in a folder of its own
    tmp = tempfile.gettempdir()
    assert not [d for d in os.listdir(tmp) if d.startswith('boardgpt-page-')
                and os.path.getmtime(os.path.join(tmp, d)) > os.path.getmtime(tiny['db'])]  # and removed it


def test_page_dir_must_be_a_new_folder(tiny, tmp_path):
    proc = run('bench.py', '--config=config/tiny.py', '--page=True', f"--db={tiny['db']}", f'--page_dir={tmp_path}',
               check=False)
    assert 'must be a new folder' in error_line(proc)
