# Kilter Board Original (layout 1) on the 12 x 12 with kickboard, angles 0..70.
# Point it at your database: copy it to data/kilter.db, or add --db=PATH to prepare.py.
dataset = 'kilter'
boards = [dict(
    name='kilter', format='aurora', path='data/kilter.db',
    layout_id=1, product_size_id=10,
    role_ids=dict(start=12, middle=13, finish=14, foot=15),  # placement_roles ids of the product
    angles=list(range(0, 75, 5)),
    max_start=2, max_finish=2,  # the app allows one or two start holds and one or two finish holds
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = '7 x 10' (or 14), sets = 'Bolt Ons' (or 1)
size = ''
sets = ''
