"""
The training loop of train_gen.py and train_grade.py, kept in one place so the two cannot drift
apart: distributed data parallel (torchrun; gloo on CPU, nccl on GPUs), AdamW, linear warmup then
cosine decay, gradient accumulation and clipping, AMP, torch.compile, periodic evaluation,
atomic checkpoints (last.pt and best.pt) and exact resume, progress lines, optional wandb.

A script sets its config as module-level globals, then calls

    train(config, model_args, build_model, get_batch, evaluate)

build_model(model_args) -> a fresh model; get_batch(split, generator) -> a tuple of tensors the
model takes as model(*batch) -> (output, loss), the first of them token ids with 0 as padding;
evaluate(model) -> dict of metrics with 'val_loss' (lower is better). Batches are drawn from a
generator seeded by (seed, iteration, micro-step, rank), so a resumed run sees exactly the
batches the uninterrupted run would have seen.
"""

import math
import os
import time
from contextlib import nullcontext

import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP


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
        dtype = 'bfloat16' if device.startswith('cuda') and torch.cuda.is_bf16_supported() else 'float32'
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)
    torch.manual_seed(seed + rank)
    return dict(ddp=ddp, rank=rank, local_rank=local_rank, world=world, master=rank == 0,
                device=device, device_type=device_type, dtype=dtype, ctx=ctx)


def get_lr(it, c):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then flat."""
    if it < c['warmup_iters']:
        return c['learning_rate'] * (it + 1) / (c['warmup_iters'] + 1)
    if it > c['lr_decay_iters']:
        return c['min_lr']
    ratio = (it - c['warmup_iters']) / max(1, c['lr_decay_iters'] - c['warmup_iters'])
    return c['min_lr'] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c['learning_rate'] - c['min_lr'])


def save_atomic(obj, path):
    """Write to a temporary file, then rename: a crash mid-write leaves the old file whole."""
    torch.save(obj, path + '.tmp')
    os.replace(path + '.tmp', path)


def load_checkpoint(path, device='cpu'):
    """weights_only=True: a checkpoint from elsewhere cannot run code on load."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}: train one first (python train_gen.py <config>)")
    return torch.load(path, map_location=device, weights_only=True)


def format_seconds(s):
    s = int(s)
    return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def train(c, model_args, build_model, get_batch, evaluate):
    """c: the script's config dict. Returns the trained (raw) model on its device."""
    env = setup(c['device'], c['dtype'], c['seed'])
    device, master = env['device'], env['master']
    accum = c['gradient_accumulation_steps']
    assert accum % env['world'] == 0, f"gradient_accumulation_steps {accum} must divide among {env['world']} processes"
    accum //= env['world']
    out_dir = c['out_dir']
    if master:
        os.makedirs(out_dir, exist_ok=True)

    iter_num, best_val_loss, checkpoint = 0, float('inf'), None
    if c['init_from'] == 'resume':
        checkpoint = load_checkpoint(os.path.join(out_dir, 'last.pt'), device)
        model_args = checkpoint['model_args']
        iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    elif c['init_from'] != 'scratch':
        raise SystemExit(f"error: init_from must be 'scratch' or 'resume', got {c['init_from']!r}")
    model = build_model(model_args).to(device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint['model'])
    optimizer = model.configure_optimizer(c['weight_decay'], c['learning_rate'], (c['beta1'], c['beta2']),
                                          env['device_type'])
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint['optimizer'])
        print(f"resuming from {out_dir}/last.pt at iteration {iter_num} (best val loss {best_val_loss:.4f})")
    checkpoint = None  # free it
    scaler = torch.amp.GradScaler(env['device_type'], enabled=env['dtype'] == 'float16')
    raw_model = model
    if c['compile']:
        print('compiling the model...')
        model = torch.compile(model)
    if env['ddp']:
        model = DDP(model, device_ids=[env['local_rank']] if env['device_type'] == 'cuda' else None)
    if master:
        print(f"{type(raw_model).__name__}: {raw_model.num_params() / 1e6:.2f}M parameters, "
              f"{env['world']} process(es) on {device}, {env['dtype']}, compile={c['compile']}")
    wandb = None
    if c['wandb_log'] and master:
        import wandb  # optional: only behind the flag
        wandb.init(project=c['wandb_project'], name=c['wandb_run_name'], config=c)

    def batch_for(it, micro):
        g = torch.Generator()
        g.manual_seed(c['seed'] * 1_000_003 + (it * accum + micro) * env['world'] + env['rank'])
        return tuple(t.to(device, non_blocking=True) for t in get_batch('train', g))

    def checkpoint_state(val_loss):
        return dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(), model_args=model_args,
                    iter_num=iter_num, best_val_loss=val_loss, config=c)

    def eval_and_save():
        nonlocal best_val_loss
        raw_model.eval()
        with torch.no_grad(), env['ctx']:
            metrics = evaluate(raw_model)
        raw_model.train()
        improved = metrics['val_loss'] < best_val_loss
        best_val_loss = min(best_val_loss, metrics['val_loss'])
        print(f"eval at iteration {iter_num}: " + ', '.join(
            f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in metrics.items())
            + (' (best)' if improved else ''))
        if wandb:
            wandb.log(dict(iter=iter_num, lr=lr, **metrics))
        if iter_num > 0:
            state = checkpoint_state(best_val_loss)
            save_atomic(state, os.path.join(out_dir, 'last.pt'))
            if improved:
                save_atomic(state, os.path.join(out_dir, 'best.pt'))
        return metrics

    batch = batch_for(iter_num, 0)
    t0 = time.time()
    tokens = torch.zeros((), dtype=torch.long, device=device)  # counted on the device: no sync per step
    last_log_iter, start_iter, metrics, lr = iter_num, iter_num, None, get_lr(iter_num, c)
    while True:
        lr = get_lr(iter_num, c)
        for group in optimizer.param_groups:
            group['lr'] = lr
        if iter_num % c['eval_interval'] == 0 and master and iter_num > start_iter:
            metrics = eval_and_save()
        if iter_num >= c['max_iters']:
            break
        torch.manual_seed(c['seed'] * 7919 + iter_num * env['world'] + env['rank'])  # dropout, reproducibly
        for micro in range(accum):
            if env['ddp']:  # sync gradients on the last micro-step only
                model.require_backward_grad_sync = micro == accum - 1
            with env['ctx']:
                _, loss = model(*batch)
                loss = loss / accum
            tokens += batch[0].ne(0).sum()
            batch = batch_for(iter_num, micro + 1) if micro + 1 < accum else batch_for(iter_num + 1, 0)
            scaler.scale(loss).backward()
        if c['grad_clip'] > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), c['grad_clip'])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        if iter_num % c['log_interval'] == 0 and master:
            dt = time.time() - t0
            n = tokens.item() * env['world']  # the one host sync, at log time
            per_iter = dt / (iter_num - last_log_iter)
            left = per_iter * (c['max_iters'] - iter_num)
            print(f"iter {iter_num}/{c['max_iters']}: loss {loss.item() * accum:.4f}, lr {lr:.2e}, "
                  f"{n / dt:,.0f} tok/s, {per_iter * 1000:.0f} ms/iter, {format_seconds(left)} left")
            t0, last_log_iter = time.time(), iter_num
            tokens.zero_()
    if master and (metrics is None or iter_num > start_iter and iter_num % c['eval_interval'] != 0):
        metrics = eval_and_save()
    if env['ddp']:
        destroy_process_group()
    return raw_model, metrics
