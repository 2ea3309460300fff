"""The generator: model.py's GPT, train_gen.py and sample.py."""
import json
import os
import random

import numpy as np
import pytest
import torch

from conftest import ROOT, error_line, run, shared
from engine import generate
from model import GPT, ModelConfig, SelfAttention, read_history
from routes import END, DecodingRules, Grammar, load_meta


def train_tiny(tiny, out_dir, *args):
    return run('train_gen.py', 'config/tiny.py', f"--data_root={tiny['root']}", f'--out_dir={out_dir}', *args)


def eval_losses(stdout):
    return [float(line.split('val_loss ')[1].split(',')[0]) for line in stdout.splitlines() if line.startswith('eval at')]


@pytest.fixture(scope='module')
def trained(tiny, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('gen')
    proc = train_tiny(tiny, out_dir, '--max_iters=60', '--lr_decay_iters=60')
    return dict(out_dir=str(out_dir), stdout=proc.stdout)


def test_tiny_training_loss_falls(trained):
    losses = eval_losses(trained['stdout'])
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.3
    for name in ('last.pt', 'best.pt'):
        assert os.path.isfile(os.path.join(trained['out_dir'], name))
    assert 'tok/s' in trained['stdout'] and 'left' in trained['stdout']
    # the loss history beside the checkpoints: one entry per evaluation, as the progress lines say
    history = read_history(trained['out_dir'])
    assert [h['iter'] for h in history] == [20, 40, 60] and [h['val_loss'] for h in history] == pytest.approx(losses, abs=1e-4)
    assert all(h['batch_loss'] > 0 and h['train_loss'] > 0 for h in history)
    best = min(history, key=lambda h: h['val_loss'])
    assert best['best'] and torch.load(os.path.join(trained['out_dir'], 'best.pt'), weights_only=True)['iter_num'] == best['iter']


def test_resume_continues_exactly(tiny, tmp_path):
    straight, paused = tmp_path / 'straight', tmp_path / 'paused'
    common = ['--dropout=0.1', '--eval_interval=10', '--lr_decay_iters=20']
    train_tiny(tiny, straight, '--max_iters=20', *common)
    train_tiny(tiny, paused, '--max_iters=10', *common)
    proc = train_tiny(tiny, paused, '--max_iters=20', '--init_from=resume', *common)
    assert 'at iteration 10' in proc.stdout
    a = torch.load(straight / 'last.pt', weights_only=True)
    b = torch.load(paused / 'last.pt', weights_only=True)
    assert a['iter_num'] == b['iter_num'] == 20
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]['exp_avg_sq'], sb[i]['exp_avg_sq']) for i in sa)
    assert read_history(paused) == read_history(straight) and len(read_history(paused)) == 2  # the curve continues


def test_checkpoint_write_is_atomic(trained, tmp_path):
    """The checkpoint goes to a temporary file first: a crash mid-write leaves last.pt whole."""
    from trainer import save_atomic
    path = str(tmp_path / 'last.pt')
    save_atomic({'x': torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('crash mid-write')
    with pytest.raises(RuntimeError):
        save_atomic({'x': torch.zeros(3), 'y': Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)['x'], torch.ones(3))


def test_kv_cache_matches_full_recompute():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=32)).eval()
    idx = torch.randint(0, 50, (4, 12))
    full, _ = model(idx)
    cache = model.new_cache(4, 'cpu')
    step, _ = model(idx[:, :3], cache=cache, pos=0)
    torch.testing.assert_close(step[:, -1], full[:, 2], atol=1e-5, rtol=1e-5)
    for t in range(3, 12):
        step, _ = model(idx[:, t:t + 1], cache=cache, pos=t)
        torch.testing.assert_close(step[:, -1], full[:, t], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_the_loss():
    """Rows are routes padded at the end: pad tokens are never attended to and never counted."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=30, block_size=20, n_layer=2, n_head=2, n_embd=16)).eval()
    x = torch.randint(2, 30, (1, 8))
    y = torch.randint(2, 30, (1, 8))
    _, loss = model(x, y)
    xp = torch.cat([x, torch.zeros(1, 6, dtype=torch.long)], 1)
    yp = torch.cat([y, torch.full((1, 6), -1)], 1)
    logits_p, loss_p = model(xp, yp)
    torch.testing.assert_close(loss, loss_p)
    torch.testing.assert_close(model(x)[0], logits_p[:, :8])


def prepared_grammars(tiny, tmp_path):
    """(grammar, data folder) for the tiny board, and for every real board where the data is present."""
    out = [(Grammar(load_meta(os.path.join(tiny['root'], 'tiny'))), os.path.join(tiny['root'], 'tiny'))]
    sources = {'kilter': 'kilter.db', 'tension': 'tension.db', 'moonboard': 'moonboard2016.json'}
    if all(os.path.exists(os.path.join(os.path.dirname(ROOT), 'shared', 'data', s)) for s in sources.values()):
        for config, source in sources.items():
            run('prepare.py', f'config/{config}.py', f'--db={shared(source)}', f'--data_root={tmp_path}')
            out.append((Grammar(load_meta(tmp_path / config)), str(tmp_path / config)))
    return out


def test_constrained_sampling_is_always_valid(tiny, tmp_path):
    """Property test: random weights, high temperature, random prompts; every route must pass the
    grammar's own validator and contain its prompt."""
    rng = random.Random(0)
    for g, folder in prepared_grammars(tiny, tmp_path):
        board = g.meta['boards'][0]
        real = [g.decode(r) for r in train_routes(g.meta, folder)[:40]]
        for seed in range(6):
            torch.manual_seed(seed)
            model = GPT(ModelConfig(vocab_size=g.vocab_size, block_size=board['max_holds'] + 4,
                                    n_layer=1, n_head=2, n_embd=16)).eval()
            B = 64
            prompts = []
            for _ in range(B):  # half without a prompt, half with a random part of a real route
                holds = rng.choice(real)['holds']
                prompts.append(rng.sample(holds, rng.randint(1, min(4, len(holds)))) if rng.random() < 0.5 else [])
            angle = board['angles'][seed % len(board['angles'])] if board['angle_known'] else None
            prefix = torch.tensor([g.prefix(board['name'], angle, rng.choice([None, 12, 20, 28])) for _ in range(B)])
            rules = DecodingRules(g, [(board['name'], p) for p in prompts])
            out = generate(model, prefix, rules, temperature=1.0 + seed, generator=torch.Generator().manual_seed(seed))
            for row, prompt in zip(out.tolist(), prompts):
                r = g.decode(row[:row.index(END) + 1])
                g.validate(board['name'], r['holds'])
                assert set(prompt) <= set(r['holds'])


def test_rules_alone_with_uniform_choices(tiny):
    """Without a model: uniformly random allowed tokens, many routes, all valid."""
    g = Grammar(load_meta(os.path.join(tiny['root'], 'tiny')))
    gen = torch.Generator().manual_seed(0)
    B = 500
    rules = DecodingRules(g, [('tiny', [])] * B)
    seqs = [[] for _ in range(B)]
    for _ in range(45):
        m = rules.mask()
        nxt = torch.multinomial(m.float(), 1, generator=gen)
        rules.update(nxt)
        for s, t in zip(seqs, nxt.view(-1).tolist()):
            if not s or s[-1] != END:
                s.append(t)
    prefix = g.prefix('tiny', 40, 20)
    for s in seqs:
        r = g.decode(prefix + s)
        g.validate('tiny', r['holds'])


def test_rules_allow_every_real_route(tiny, tmp_path):
    """The other half of the rules: they forbid nothing a real route does. Every route of the
    data, fed token by token with a random part of itself as the prompt, is allowed at every step."""
    rng = random.Random(1)
    for g, folder in prepared_grammars(tiny, tmp_path):
        board = g.meta['boards'][0]['name']
        routes = [g.decode(r) for r in train_routes(g.meta, folder)[:300]]
        prompts = [rng.sample(r['holds'], rng.randint(0, min(3, len(r['holds'])))) for r in routes]
        rules = DecodingRules(g, [(board, p) for p in prompts])
        seqs = [g.hold_tokens(board, r['holds']) + [END] for r in routes]
        for step in range(max(len(s) for s in seqs)):
            allowed = rules.mask()
            nxt = torch.tensor([s[step] if step < len(s) else END for s in seqs])
            assert allowed[torch.arange(len(seqs)), nxt].all(), f'step {step}: a real route was forbidden'
            rules.update(nxt[:, None])
        assert rules.done.all()


def train_routes(meta, folder):
    data = np.fromfile(os.path.join(folder, 'train.bin'), dtype=np.uint16).tolist()
    o = meta['splits']['train']['offset']
    return [data[o[i]:o[i + 1]] for i in range(len(o) - 1)]


def test_sample_cli(tiny, trained, tmp_path):
    args = ['sample.py', 'config/tiny.py', f"--data_root={tiny['root']}", f"--out_dir={trained['out_dir']}"]
    proc = run(*args, '--num_samples=6', '--grade=V5', '--angle=35', f'--out={tmp_path}', '--jsonl')
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 6
    g = Grammar(load_meta(os.path.join(tiny['root'], 'tiny')))
    for r in records:
        assert r['board'] == 'tiny' and r['angle'] == 35 and r['grade_asked'] == 'V5'
        assert r['grade'] in ('6c/V5', '6c+/V5')  # V5 spreads over its two Font grades
        g.validate('tiny', g.parse('tiny', r['frames']))
    svg = (tmp_path / 'samples.svg').read_text()
    assert svg.count('class="route"') == 6
    proc = run(*args, '--num_samples=3', '--prompt=p1002r12p1044r14', '--grade=20')
    assert proc.stdout.count('p1002r12') == 3 and proc.stdout.count('p1044r14') == 3
    for bad, message in [('--grade=V20', 'out of range'), ('--angle=42', 'angle 42 is impossible'),
                         ('--prompt=p1002r12p1002r13', 'appears twice'), ('--prompt=p9r12', 'unknown placement p9'),
                         ('--prompt=p1002x', 'malformed frames')]:
        assert message in error_line(run(*args, bad, check=False))


def test_torchrun_two_processes(tiny, tmp_path):
    proc = run('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train_gen.py', 'config/tiny.py',
               f"--data_root={tiny['root']}", f'--out_dir={tmp_path}', '--max_iters=10', '--eval_interval=5',
               '--gradient_accumulation_steps=2')
    assert '2 process(es)' in proc.stdout
    ckpt = torch.load(tmp_path / 'last.pt', weights_only=True)
    assert ckpt['iter_num'] == 10


def test_sampler_draws_from_the_model_distribution():
    """generate() samples the masked softmax exactly: frequencies match it, forbidden tokens never come."""
    probs = torch.tensor([0.1, 0.0, 0.2, 0.3, 0.25, 0.15])  # token 1 is <end>, forbidden below

    class Fixed(torch.nn.Module):  # a 'model' whose next-token logits never change
        config = ModelConfig(vocab_size=6, block_size=2, n_layer=1, n_head=1, n_embd=8)

        def __init__(self):
            super().__init__()
            self.lm_head = torch.nn.Linear(8, 6)

        def new_cache(self, batch_size, device, dtype):
            return None

        def forward(self, idx, cache=None, pos=0):
            return torch.ones(idx.size(0), idx.size(1), 6), None  # uniform: the rules shape the draw

    class Rules:  # forbid <end> and token 5
        def mask(self):
            return torch.tensor([True, False, True, True, True, False]).expand(n, -1)

        def update(self, tokens):
            pass

    n = 60_000
    out = generate(Fixed(), torch.zeros(n, 1, dtype=torch.long), Rules(), generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(out[:, 1], minlength=6).float() / n
    assert counts[1] == 0 and counts[5] == 0
    assert torch.allclose(counts[[0, 2, 3, 4]], torch.full((4,), 0.25), atol=0.01)
    # and with the model's own preferences: logits log(p) give frequencies p
    Fixed.forward = lambda self, idx, cache=None, pos=0: (probs.clamp(min=1e-12).log().expand(idx.size(0), idx.size(1), -1), None)
    Rules.mask = lambda self: (probs > 0).expand(n, -1)
    out = generate(Fixed(), torch.zeros(n, 1, dtype=torch.long), Rules(), generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(out[:, 1], minlength=6).float() / n
    assert counts[1] == 0 and torch.allclose(counts, probs, atol=0.01)


def test_short_attention_is_what_sdpa_computes():
    """The CPU's attention (plain matmuls, softmax written out) against scaled_dot_product_attention:
    causal, with a padding mask, and with neither."""
    torch.manual_seed(0)
    attention = SelfAttention(ModelConfig(n_embd=32, n_head=4, dropout=0.0)).eval()
    q, k, v = (torch.randn(3, 4, 7, 8) for _ in range(3))
    mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 5:] = False
    mask[2, ..., 1:] = False
    for causal, m in [(True, None), (False, mask), (False, None)]:
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal)
        assert torch.allclose(attention.short_attention(q, k, v, causal, m), want, atol=1e-6)
