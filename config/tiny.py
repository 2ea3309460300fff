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
