"""trainer.py's early stopping, on a one-weight model whose val figures are scripted, so the
evaluation after which a run stops is known exactly; alone, resumed, and under torchrun."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from trainer import iterations_for, sized_schedule, train

VAL = [5.0, 4.0, 4.5, 4.2, 4.1, 4.3, 3.0, 2.0, 1.0, 0.5]  # best at the 2nd evaluation, then 3 worse

CONFIG = dict(max_iters=20, eval_interval=2, log_interval=100, warmup_iters=0, lr_decay_iters=20, learning_rate=1e-2,
              min_lr=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.99, grad_clip=1.0, gradient_accumulation_steps=1,
              dropout=0.0, dtype='float32', device='cpu', compile=False, init_from='scratch', seed=1, patience=3,
              wandb_log=False)


class Line(torch.nn.Module):
    def __init__(self, model_args):
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def forward(self, x, y):
        return None, ((self.w(x) - y) ** 2).mean()

    def configure_optimizer(self, weight_decay, learning_rate, betas, device_type):
        return torch.optim.AdamW(self.parameters(), lr=learning_rate, betas=betas, weight_decay=weight_decay)

    def num_params(self):
        return 2


def get_batch(split, generator):
    x = torch.rand(8, 1, generator=generator) + 1  # no zeros: the trainer counts non-zero inputs as tokens
    return x, 3 * x


def scripted(values):
    calls = []

    def evaluate(model):
        calls.append(1)
        return dict(val_loss=values[len(calls) - 1])
    return evaluate


def history(out):
    return json.load(open(out / 'history.json'))


def test_a_run_stops_after_patience_evaluations_without_a_better_val_loss(tmp_path, capsys):
    train(dict(CONFIG, out_dir=str(tmp_path)), {}, Line, get_batch, scripted(VAL))
    assert 'stopping at iteration 10 of 20' in capsys.readouterr().out
    assert [h['iter'] for h in history(tmp_path)] == [2, 4, 6, 8, 10]
    assert torch.load(tmp_path / 'best.pt', weights_only=True)['iter_num'] == 4
    assert torch.load(tmp_path / 'last.pt', weights_only=True)['iter_num'] == 10
    # patience 0 runs to max_iters, through the same evaluations
    train(dict(CONFIG, out_dir=str(tmp_path / 'all'), patience=0), {}, Line, get_batch, scripted(VAL))
    assert [h['iter'] for h in history(tmp_path / 'all')][-1] == 20
    assert torch.load(tmp_path / 'all' / 'best.pt', weights_only=True)['iter_num'] == 20


def test_a_resumed_run_counts_the_evaluations_since_its_best(tmp_path, capsys):
    out = tmp_path / 'paused'
    train(dict(CONFIG, out_dir=str(out), max_iters=8, patience=3), {}, Line, get_batch, scripted(VAL))
    assert 'stopping' not in capsys.readouterr().out  # 2 evaluations since the best: not yet
    # resumed: one more evaluation without a better loss is the third, and it stops there
    train(dict(CONFIG, out_dir=str(out), init_from='resume'), {}, Line, get_batch, scripted([4.1, 3.0]))
    assert 'stopping at iteration 10 of 20' in capsys.readouterr().out
    assert [h['iter'] for h in history(out)] == [2, 4, 6, 8, 10]
    # a better loss resets the count
    train(dict(CONFIG, out_dir=str(tmp_path / 'better'), patience=3), {}, Line, get_batch,
          scripted([5.0, 4.0, 4.5, 4.2, 3.9, 4.0, 4.1, 4.2, 1.0, 0.5]))
    assert 'stopping at iteration 16 of 20' in capsys.readouterr().out


def test_every_process_stops_with_the_master(tmp_path):
    """Under torchrun only the master evaluates; the others must stop at the same iteration or
    the next gradient all-reduce would wait for ever."""
    script = tmp_path / 'run.py'
    script.write_text(f"""
import os, sys
sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from test_trainer import CONFIG, VAL, Line, get_batch, scripted
import test_trainer
drawn = []
def counting(split, generator):
    drawn.append(1)
    return get_batch(split, generator)
train = __import__('trainer').train
train(dict(CONFIG, out_dir={str(tmp_path / 'out')!r}, gradient_accumulation_steps=2), {{}}, Line, counting,
      scripted(VAL))
print(f"rank {{os.environ['RANK']}} drew {{len(drawn)}} batches")
""")
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           str(script)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'stopping at iteration 10 of 20' in proc.stdout
    # one micro-step a rank (2 shared by 2), a batch drawn ahead of each: 10 steps, 11 batches, on both ranks
    assert 'rank 0 drew 11 batches' in proc.stdout and 'rank 1 drew 11 batches' in proc.stdout


def test_a_schedule_sized_by_the_data():
    assert iterations_for(17, 22_600, 128) == 3002  # Kilter's graded routes: the default grade schedule
    assert iterations_for(17, 2_260, 128) == 301  # a tenth of the data, a tenth of the iterations
    assert iterations_for(0.001, 10, 128) == 1


# a time budget: CONFIG as sized_schedule leaves a budgeted run, its epochs a cap it cannot reach
BUDGET = dict(CONFIG, max_iters=1_000_000, budgeted=True, max_minutes=0.05, epochs=1e6, iters_per_epoch=1.0,
              lr_decay_iters=0, warmup_iters=10, eval_interval=200, patience=0)


def constant(calls=None):
    def evaluate(model):
        if calls is not None:
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt  # the run stopped by hand after two evaluations of training
        return dict(val_loss=1.0)
    return evaluate


def planned(out):
    m = re.search(r'budget [\d.]+ minutes: (\d+) iterations.*--max_iters=(\d+)', out.replace(',', ''))
    assert m and m.group(1) == m.group(2), out
    return int(m.group(1))


@pytest.mark.parametrize('warmup', [10, 40])  # planned once from the probe; planned again after a warm-up of 40
def test_a_budget_sizes_the_run_to_end_on_time_at_min_lr(tmp_path, capsys, warmup):
    t0 = time.time()
    train(dict(BUDGET, out_dir=str(tmp_path), warmup_iters=warmup), {}, Line, get_batch, constant())
    took, n = time.time() - t0, planned(capsys.readouterr().out)
    assert 10 < n < BUDGET['max_iters'] and took < 2 * 60 * BUDGET['max_minutes'] + 2  # within it, far from the cap
    last = torch.load(tmp_path / 'last.pt', weights_only=True)
    assert last['iter_num'] == n and last['config']['max_iters'] == n and last['config']['lr_decay_iters'] == n
    assert last['optimizer']['param_groups'][0]['lr'] == pytest.approx(BUDGET['min_lr'])
    # the same run anywhere: --max_iters=N (no budget) gives the same weights, bit for bit
    train(dict(CONFIG, out_dir=str(tmp_path / 'again'), max_iters=n, lr_decay_iters=0, warmup_iters=warmup,
               eval_interval=200, patience=0), {}, Line, get_batch, constant())
    again = torch.load(tmp_path / 'again' / 'last.pt', weights_only=True)
    assert all(torch.equal(last['model'][k], again['model'][k]) for k in last['model'])
    # an explicit max_iters wins over the budget
    assert sized_schedule(dict(BUDGET, max_iters=30, batch_size=8), 100)['budgeted'] is False
    assert sized_schedule(dict(BUDGET, max_iters=0, batch_size=8), 100)['budgeted'] is True


def test_a_resumed_budgeted_run_keeps_its_schedule(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        train(dict(BUDGET, out_dir=str(tmp_path), eval_interval=20), {}, Line, get_batch, constant([]))
    n = planned(capsys.readouterr().out)
    assert torch.load(tmp_path / 'last.pt', weights_only=True)['iter_num'] == 40  # stopped after its second evaluation
    # resumed with another budget: the schedule it chose before, not a new one
    train(dict(BUDGET, out_dir=str(tmp_path), eval_interval=20, max_minutes=10.0, init_from='resume'), {}, Line,
          get_batch, constant())
    out = capsys.readouterr().out
    assert f'resuming the budgeted schedule of {n:,} iterations' in out and 'budget ' not in out
    last = torch.load(tmp_path / 'last.pt', weights_only=True)
    assert last['iter_num'] == n and last['config']['lr_decay_iters'] == n
    assert last['optimizer']['param_groups'][0]['lr'] == pytest.approx(BUDGET['min_lr'])
