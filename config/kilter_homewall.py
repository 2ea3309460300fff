# Kilter Board Homewall, layout 8, on the 10x12 Full Ride (product size 25), from boardsesh's snapshots.
# Not checked against data here: the ids are boardsesh's
# (boardsesh/boardsesh, packages/board-constants/src/generated/product-sizes-data.ts).
# Role ids, colours, sizes, sets and angles come from the snapshot's catalogue.
#   python prepare.py config/kilter_homewall.py --download
dataset = 'kilter_homewall'
boards = [dict(
    name='kilter_homewall', board_type='kilter', format='aurora', path='data/board-snapshots',
    layout_id=8, product_size_id=25,  # a climber knows these; the rest is read from the catalogue
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = '7x10 Full Ride' (or 17), sets = 'Mainline' (or 26)
size = ''
sets = ''
