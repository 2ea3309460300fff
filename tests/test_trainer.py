"""trainer.py's early stopping, on a one-weight model whose val figures are scripted, so the
evaluation after which a run stops is known exactly; alone, resumed, and under torchrun."""
import json
import os
import subprocess
import sys

import torch

from conftest import ROOT
from trainer import iterations_for, train

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
