"""
The training loop of train_gen.py and train_grade.py, kept in one place so the two cannot drift
apart: distributed data parallel (torchrun; gloo on CPU, nccl on GPUs), AdamW, linear warmup then
cosine decay, gradient accumulation and clipping, AMP, torch.compile, periodic evaluation,
atomic checkpoints (last.pt and best.pt) and exact resume, the loss history (history.json, one entry
per evaluation, carried in the checkpoint so a resumed run continues it), progress lines, optional wandb.

A script sets its config as module-level globals, then calls

    train(config, model_args, build_model, get_batch, evaluate)

build_model(model_args) -> a fresh model; get_batch(split, generator) -> a tuple of tensors the
model takes as model(*batch) -> (output, loss), the first of them token ids with 0 as padding;
evaluate(model) -> dict of metrics with 'val_loss' (lower is better). Batches are drawn from a
generator seeded by (seed, iteration, micro-step, rank), so a resumed run sees exactly the
batches the uninterrupted run would have seen.
"""

import copy
import json
import math
import os
import time
from contextlib import nullcontext

import torch
from torch.distributed import barrier, broadcast, destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from model import HISTORY, bf16_is_fast, check_device, load_checkpoint
from routes import InputError

EVAL_ROWS = 2048  # val routes an evaluation during training scores, the same ones each time (routes.sample_rows)
START = time.time()  # when the script started, near enough (it imports this first): what a time budget counts from


def setup(device, dtype, seed):
    """Process, device and precision: (ddp info, device, autocast context). Single process unless
    launched by torchrun."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world = 0, 0, 1
    if ddp:
        rank, local_rank, world = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
        cuda = device.startswith('cuda') and torch.cuda.is_available()
        init_process_group(backend='nccl' if cuda else 'gloo')
        if cuda:
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
        else:  # share the cores between the processes on this node
            local_world = int(os.environ.get('LOCAL_WORLD_SIZE', world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if device.startswith('cuda'):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if dtype == 'auto':
        dtype = 'bfloat16' if bf16_is_fast(device) else 'float32'
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)
    torch.manual_seed(seed + rank)
    return dict(ddp=ddp, rank=rank, local_rank=local_rank, world=world, master=rank == 0,
                device=device, device_type=device_type, dtype=dtype, ctx=ctx)


def get_lr(it, config):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then flat."""
    if it < config['warmup_iters']:
        return config['learning_rate'] * (it + 1) / (config['warmup_iters'] + 1)
    if it > config['lr_decay_iters']:
        return config['min_lr']
    ratio = (it - config['warmup_iters']) / max(1, config['lr_decay_iters'] - config['warmup_iters'])
    return config['min_lr'] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (config['learning_rate'] - config['min_lr'])


def save_atomic(obj, path):
    """Write to a temporary file, then rename: a crash mid-write leaves the old file whole."""
    torch.save(obj, path + '.tmp')
    os.replace(path + '.tmp', path)


def similar_length_batch(by_length, batch_size, pool, generator):
    """Indices of a batch drawn from a window of pool * batch_size routes of similar length
    (by_length: route indices sorted by length), the window wrapping around so every route is as
    likely to be drawn: almost no padding to compute. pool 0: from all routes."""
    n = len(by_length)
    if not pool:
        return torch.randint(n, (batch_size,), generator=generator)
    start = torch.randint(n, (1,), generator=generator)
    return by_length[(start + torch.randint(min(n, pool * batch_size), (batch_size,), generator=generator)) % n]


def iterations_for(epochs, routes, per_iter):
    """The iterations of a schedule sized by the data: epochs passes over routes training routes at
    per_iter routes an iteration (batch_size * gradient_accumulation_steps), at least one."""
    if not epochs > 0:
        raise InputError(f"epochs must be positive (or set max_iters), got {epochs}")
    return max(1, math.ceil(epochs * routes / per_iter))


def sized_schedule(config, routes):
    """config with max_iters 0 replaced by config['epochs'] passes over routes training routes, said
    in one line. With a time budget (max_minutes) those epochs are only the cap: train() sizes the
    run to the budget once it has timed a few iterations (budgeted). An explicit max_iters wins."""
    per_iter = config['batch_size'] * config['gradient_accumulation_steps']
    max_iters, budget = config['max_iters'], config.get('max_minutes', 0)
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 0):
        raise InputError(f"max_minutes must be a number of minutes > 0 (0: no budget), got {budget!r}")
    if not max_iters:
        max_iters = iterations_for(config['epochs'], routes, per_iter)
        print(f"max_iters {max_iters:,}: {config['epochs']:g} epochs of {routes:,} routes"
              + (f", or fewer to end within the budget of {budget:g} minutes" if budget else ''))
    return dict(config, max_iters=max_iters, budgeted=bool(budget and not config['max_iters']),
                iters_per_epoch=routes / max(per_iter, 1))  # a batch_size of 0 is check_config's to refuse


def schedule(config, max_iters):
    """config with its schedule sized to max_iters iterations: the cosine decays to min_lr at the end
    (lr_decay_iters 0) and the warm-up takes at most half the run, so that a short budget still ends
    at min_lr. max_iters alone decides it, so a budgeted run is repeated anywhere by --max_iters=N.
    Evaluations stay every eval_interval iterations, and one ends every run."""
    return dict(config, max_iters=max_iters, lr_decay_iters=config['lr_decay_iters'] or max_iters,
                warmup_iters=min(config['warmup_iters'], max_iters // 2))


def budget_share(max_minutes, parts=1):
    """Minutes of a process's budget left now (from START), shared among parts trainings still to run
    (0: no budget)."""
    return max(1e-3, (max_minutes * 60 - (time.time() - START)) / parts / 60) if max_minutes else 0


def fit_budget(seconds, step, evaluation, reserve, interval, cap):
    """The most iterations, at most cap, whose steps and evaluations (one every interval, and the last)
    take at most seconds, less reserve evaluations' worth for after training."""
    return min(cap, max(1, int((seconds - (reserve + 1) * evaluation) / (step + evaluation / interval))))


def format_seconds(s):
    s = int(s)
    return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def check_config(config):
    """The training settings a run cannot start with, as one-line errors, before anything is written."""
    for key in ('batch_size', 'gradient_accumulation_steps', 'eval_interval', 'log_interval', 'n_layer', 'n_head', 'n_embd'):
        if key in config and config[key] < 1:
            raise InputError(f"{key} must be at least 1, got {config[key]}")
    for key in ('max_iters', 'warmup_iters', 'lr_decay_iters', 'weight_decay', 'grad_clip', 'min_lr', 'patience'):
        if config[key] < 0:
            raise InputError(f"{key} must not be negative, got {config[key]}")
    if not config['learning_rate'] > 0:
        raise InputError(f"learning_rate must be positive, got {config['learning_rate']}")
    if not 0 <= config['dropout'] < 1:
        raise InputError(f"dropout must be in [0, 1), got {config['dropout']}")
    if 'n_embd' in config and config['n_embd'] % config['n_head']:
        raise InputError(f"n_embd {config['n_embd']} must be a multiple of n_head {config['n_head']}")
    if config['dtype'] not in ('auto', 'float32', 'bfloat16', 'float16'):
        raise InputError(f"dtype must be auto, float32, bfloat16 or float16, got {config['dtype']!r}")
    if config['init_from'] not in ('scratch', 'resume'):
        raise InputError(f"init_from must be 'scratch' or 'resume', got {config['init_from']!r}")
    check_device(config['device'])


def train(config, model_args, build_model, get_batch, evaluate, reserve=0.0):
    """config: the script's config dict (sized_schedule's). Returns the trained (raw) model on its
    device and the last evaluation's metrics. A budgeted run (max_minutes, no max_iters given) ends
    within max_minutes of this call: it times a few steps and one evaluation, puts the model and
    optimizer back as they were, and sizes its schedule to fit, leaving reserve evaluations' worth of
    time for what the script does after training."""
    t_call = time.time()
    check_config(config)
    env = setup(config['device'], config['dtype'], config['seed'])
    device, master = env['device'], env['master']
    accum = config['gradient_accumulation_steps']
    assert accum % env['world'] == 0, f"gradient_accumulation_steps {accum} must divide among {env['world']} processes"
    accum //= env['world']
    out_dir = config['out_dir']
    if master:
        os.makedirs(out_dir, exist_ok=True)

    iter_num, best_val_loss, checkpoint, history = 0, float('inf'), None, []
    budgeted = config.get('budgeted', False)
    if config['init_from'] == 'resume':
        checkpoint = load_checkpoint(os.path.join(out_dir, 'last.pt'), device)
        model_args = checkpoint['model_args']
        iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
        history = list(checkpoint.get('history', []))  # up to last.pt: a resumed run's curve continues it exactly
        if budgeted and checkpoint.get('config', {}).get('max_iters'):  # the schedule the budget chose, not a new one
            config = dict(config, max_iters=checkpoint['config']['max_iters'])
            print(f"resuming the budgeted schedule of {config['max_iters']:,} iterations")
            budgeted = False
    if not budgeted:
        config = schedule(config, config['max_iters'])
    patience = config.get('patience', 0)
    # evaluations since the best one (early stopping counts them): a resumed run takes them from its history
    stale = next((i for i, h in enumerate(reversed(history)) if h.get('best')), len(history))
    model = build_model(model_args).to(device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint['model'])
    optimizer = model.configure_optimizer(config['weight_decay'], config['learning_rate'], (config['beta1'], config['beta2']),
                                          env['device_type'])
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint['optimizer'])
        print(f"resuming from {out_dir}/last.pt at iteration {iter_num} (best val loss {best_val_loss:.4f})")
    checkpoint = None  # free it
    scaler = torch.amp.GradScaler(env['device_type'], enabled=env['dtype'] == 'float16')
    raw_model = model
    if config['compile']:
        print('compiling the model...')
        model = torch.compile(model)
    if env['ddp']:
        model = DDP(model, device_ids=[env['local_rank']] if env['device_type'] == 'cuda' else None)
    if master:
        print(f"{type(raw_model).__name__}: {raw_model.num_params() / 1e6:.2f}M parameters, "
              f"{env['world']} process(es) on {device}, {env['dtype']}, compile={config['compile']}")
    wandb = None
    if config['wandb_log'] and master:
        import wandb  # optional: only behind the flag
        wandb.init(project=config['wandb_project'], name=config['wandb_run_name'], config=config)

    def batch_for(it, micro):
        g = torch.Generator()
        g.manual_seed(config['seed'] * 1_000_003 + (it * accum + micro) * env['world'] + env['rank'])
        return tuple(t.to(device, non_blocking=True) for t in get_batch('train', g))

    def checkpoint_state(val_loss):
        return dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(), model_args=model_args,
                    iter_num=iter_num, best_val_loss=val_loss, config=config, history=history)

    def eval_and_save():
        nonlocal best_val_loss, eval_seconds, eval_total, eval_count, stale
        t_eval = time.time()
        raw_model.eval()
        with torch.no_grad(), env['ctx']:
            metrics = evaluate(raw_model)
        raw_model.train()
        improved = metrics['val_loss'] < best_val_loss
        best_val_loss = min(best_val_loss, metrics['val_loss'])
        stale = 0 if improved else stale + 1
        print(f"eval at iteration {iter_num}: " + ', '.join(
            f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in metrics.items())
            + (' (best)' if improved else ''))
        if wandb:
            wandb.log(dict(iter=iter_num, lr=lr, **metrics))
        # the history: the training batches' mean loss since the last evaluation, and the eval's metrics
        seen = int(loss_count.item()) if iter_num > start_iter else 0
        if not history or history[-1]['iter'] != iter_num:  # a resumed run with nothing left to train adds none
            history.append(dict(iter=iter_num, batch_loss=float(loss_sum.item()) / seen if seen else None, **metrics,
                                best=improved))
        loss_sum.zero_()
        loss_count.zero_()
        with open(os.path.join(out_dir, HISTORY + '.tmp'), 'w', encoding='utf-8') as f:
            json.dump(history, f)
        os.replace(os.path.join(out_dir, HISTORY + '.tmp'), os.path.join(out_dir, HISTORY))
        if iter_num > 0:
            state = checkpoint_state(best_val_loss)
            save_atomic(state, os.path.join(out_dir, 'last.pt'))
            if improved:
                save_atomic(state, os.path.join(out_dir, 'best.pt'))
        eval_seconds += time.time() - t_eval
        eval_total, eval_count = eval_total + time.time() - t_eval, eval_count + 1
        return metrics

    def step(it, batch):
        """One optimizer step of iteration it on batch (its first micro-batch) -> (the last micro-step's
        loss, the next iteration's first batch)."""
        torch.manual_seed(config['seed'] * 7919 + it * env['world'] + env['rank'])  # dropout, reproducibly
        for micro in range(accum):
            if env['ddp']:  # sync gradients on the last micro-step only
                model.require_backward_grad_sync = micro == accum - 1
            with env['ctx']:
                _, loss = model(*batch)
                loss = loss / accum
            tokens.add_(batch[0].ne(0).sum())
            loss_sum.add_(loss.detach().float())
            loss_count.add_(int(micro == accum - 1))
            batch = batch_for(it, micro + 1) if micro + 1 < accum else batch_for(it + 1, 0)
            scaler.scale(loss).backward()
        if config['grad_clip'] > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config['grad_clip'])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss, batch

    def probe():
        """(seconds a step, seconds an evaluation): a few steps timed (from the second: the first pays
        for allocations) and one evaluation, the model, optimizer and scaler put back as they were."""
        saved = copy.deepcopy((raw_model.state_dict(), optimizer.state_dict(), scaler.state_dict()))
        b, steps, t_first = batch_for(iter_num, 0), 0, time.time()
        for group in optimizer.param_groups:
            group['lr'] = config['min_lr']  # undone below: any rate costs the same
        while steps < 4 or (steps < 50 and time.time() - t_first < 2.0):
            loss, b = step(iter_num + steps, b)
            loss.item()  # wait for the device
            steps += 1
            t_first = time.time() if steps == 1 else t_first
        per_step = (time.time() - t_first) / (steps - 1)
        raw_model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        scaler.load_state_dict(saved[2])
        for t in (tokens, loss_sum, loss_count):
            t.zero_()
        t_eval = time.time()
        if master:
            raw_model.eval()
            with torch.no_grad(), env['ctx']:
                evaluate(raw_model)
            raw_model.train()
        return per_step, time.time() - t_eval

    def plan(per_step, per_eval, say):
        """The schedule that ends within the budget at per_step seconds a step from here on (every rank
        runs the master's), said in one line if say."""
        n = torch.tensor([unsized['max_iters']], device=device)
        if master:
            left = unsized['max_minutes'] * 60 - (time.time() - t_call)
            n[0] = iter_num + fit_budget(0.95 * left, per_step, per_eval, reserve, unsized['eval_interval'],
                                         unsized['max_iters'] - iter_num)
            n[0] = max(int(n[0]), 2 * unsized['warmup_iters'] if iter_num else 1)  # past the warm-up: it stays whole
        if env['ddp']:
            broadcast(n, 0)
        sized = schedule(unsized, int(n.item()))
        if master and say:
            epochs = sized['max_iters'] / unsized['iters_per_epoch']
            cap = 'all the epochs fit' if sized['max_iters'] == unsized['max_iters'] else \
                f"of {unsized['max_iters']:,} for {unsized['epochs']:g} epochs"
            print(f"budget {unsized['max_minutes']:.2f} minutes: {sized['max_iters']:,} iterations, {epochs:.2f} epochs "
                  f"({cap}), at {per_step * 1000:.0f} ms an iteration and {per_eval:.1f} s an evaluation every "
                  f"{sized['eval_interval']:,}; to repeat it anywhere: --max_iters={sized['max_iters']}")
        return sized

    tokens = torch.zeros((), dtype=torch.long, device=device)  # counted on the device: no sync per step
    loss_sum = torch.zeros((), device=device)  # the training loss since the last eval, summed there too
    loss_count = torch.zeros((), dtype=torch.long, device=device)
    # a budgeted run plans from a probe, then plans again at the end of its warm-up from the steps it
    # has timed, with the other work on the machine as it is by then (a probe's steps, each of a new
    # batch shape, ran slow on a CPU: 1,880 of Kilter's 3,002 where 2,700 fit); the warm-up's rates
    # do not depend on the plan, so --max_iters=N still repeats the run
    replan_at, t_mark, evals_mark, unsized = 0, None, 0.0, config  # unsized: max_iters the epochs' cap
    if budgeted:
        per_step, per_eval = probe()
        config = plan(per_step, per_eval, say=False)
        whole = config['warmup_iters'] == unsized['warmup_iters']  # a shorter one would change with the plan
        replan_at = config['warmup_iters'] if whole and config['warmup_iters'] >= 20 else 0
        if not replan_at:
            config = plan(per_step, per_eval, say=True)
    batch = batch_for(iter_num, 0)
    t0 = time.time()
    last_log_iter, start_iter, metrics, lr = iter_num, iter_num, None, get_lr(iter_num, config)
    # time left counts training and evaluations apart, so an eval does not make the estimate jump
    eval_seconds, eval_total, eval_count = 0.0, 0.0, 0
    while True:
        lr = get_lr(iter_num, config)
        for group in optimizer.param_groups:
            group['lr'] = lr
        at_eval = iter_num % config['eval_interval'] == 0 and iter_num > start_iter
        if at_eval and master:
            metrics = eval_and_save()
        if at_eval and patience and iter_num < config['max_iters']:
            stop = torch.tensor([int(stale >= patience)], device=device)
            if env['ddp']:
                broadcast(stop, 0)  # the master evaluated: every rank stops with it, or none does
            if stop.item():
                if master:
                    best = max((h['iter'] for h in history if h.get('best')), default='?')
                    print(f"stopping at iteration {iter_num} of {config['max_iters']}: val_loss has not improved "
                          f"for {stale} evaluations (patience {patience}); best.pt is from iteration {best}")
                break
        if iter_num >= config['max_iters']:
            break
        loss, batch = step(iter_num, batch)
        iter_num += 1
        if replan_at and iter_num == replan_at // 2:
            t_mark, evals_mark = time.time(), eval_total
        if replan_at and iter_num == replan_at:
            loss.item()  # wait for the device
            per_step = (time.time() - t_mark - (eval_total - evals_mark)) / (replan_at - replan_at // 2)
            config = plan(per_step, per_eval, say=True)
        if iter_num % config['log_interval'] == 0 and master:
            dt = time.time() - t0 - eval_seconds
            n = tokens.item() * env['world']  # the one host sync, at log time
            per_iter = dt / (iter_num - last_log_iter)
            interval = config['eval_interval']
            evals_left = len(range(-(-iter_num // interval) * interval, config['max_iters'] + 1, interval))
            left = per_iter * (config['max_iters'] - iter_num) + evals_left * eval_total / max(eval_count, 1)
            print(f"iter {iter_num}/{config['max_iters']}: loss {loss.item() * accum:.4f}, lr {lr:.2e}, "
                  f"{n / dt:,.0f} tok/s, {per_iter * 1000:.0f} ms/iter, {format_seconds(left)} left")
            t0, last_log_iter, eval_seconds = time.time(), iter_num, 0.0
            tokens.zero_()
    if master and (metrics is None or iter_num > start_iter and iter_num % config['eval_interval'] != 0):
        metrics = eval_and_save()
    if env['ddp']:
        # the others wait for the master's last eval and save: a rank leaving gloo while its peer is
        # still connected aborts ("terminate called without an active exception")
        barrier()
        destroy_process_group()
    return raw_model, metrics
