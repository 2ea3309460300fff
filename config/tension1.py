# Tension Board 1 (Original Layout), layout 9, on the Full Wall (product size 1), from boardsesh's snapshots.
# Not checked against data here: the ids are boardsesh's
# (boardsesh/boardsesh, packages/board-constants/src/generated/product-sizes-data.ts).
# Role ids, colours, sizes, sets and angles come from the snapshot's catalogue.
#   python prepare.py config/tension1.py --download
dataset = 'tension1'
boards = [dict(
    name='tension1', board_type='tension', format='aurora', path='data/board-snapshots',
    layout_id=9, product_size_id=1,  # a climber knows these; the rest is read from the catalogue
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = 'Short' (or 4), sets = 'Set A,Foot Set'
size = ''
sets = ''
