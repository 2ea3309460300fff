# So iLL Board (Summer 2024), layout 1, on the 12 x 12 (product size 2), from boardsesh's snapshots.
# Not checked against data here: the ids are boardsesh's
# (boardsesh/boardsesh, packages/board-constants/src/generated/product-sizes-data.ts).
# Role ids, colours, sizes, sets and angles come from the snapshot's catalogue.
#   python prepare.py config/soill.py --download
dataset = 'soill'
boards = [dict(
    name='soill', board_type='soill', format='aurora', path='data/board-snapshots',
    layout_id=1, product_size_id=2,  # a climber knows these; the rest is read from the catalogue
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = '8 x 12' (or 1), sets = 'The Set'
size = ''
sets = ''
