# Touchstone Board (Winter 2020), layout 1, on the Full Size (product size 1), from boardsesh's snapshots.
# Not checked against data here: the ids are boardsesh's
# (boardsesh/boardsesh, packages/board-constants/src/generated/product-sizes-data.ts).
# Role ids, colours, sizes, sets and angles come from the snapshot's catalogue.
#   python prepare.py config/touchstone.py --download
dataset = 'touchstone'
boards = [dict(
    name='touchstone', board_type='touchstone', format='aurora', path='data/board-snapshots',
    layout_id=1, product_size_id=1,  # a climber knows these; the rest is read from the catalogue
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = 'Full Size' (or 1; its one size), sets = 'All Holds'
size = ''
sets = ''
