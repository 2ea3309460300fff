# A tiny board and a tiny model, for the tests. The tests build the board themselves
# (tests/fixtures.py: a 6 x 8 grid in the Aurora app schema) and pass --db and --data_root.
dataset = 'tiny'
boards = [dict(
    name='tiny', format='aurora', path='data/tiny.db',
    layout_id=1, product_size_id=10,
    role_ids=dict(start=12, middle=13, finish=14, foot=15),
    angles=list(range(0, 75, 5)),
    max_start=2, max_finish=2,
)]

# a tiny model that trains in seconds
n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.0
batch_size = 16
max_iters = 40
eval_interval = 20
log_interval = 10
warmup_iters = 5
lr_decay_iters = 40
learning_rate = 1e-2
min_lr = 1e-3
ensemble = 1  # one grade model: the tests' checkpoints are out_dir/best.pt
