# Decoy Board (Dungeon Trainer), layout 2, on the 12 x 12 (product size 1), from boardsesh's snapshots.
# Not checked against data here: the ids are boardsesh's
# (boardsesh/boardsesh, packages/board-constants/src/generated/product-sizes-data.ts).
# Role ids, colours, sizes, sets and angles come from the snapshot's catalogue.
#   python prepare.py config/decoy.py --download
dataset = 'decoy'
boards = [dict(
    name='decoy', board_type='decoy', format='aurora', path='data/board-snapshots',
    layout_id=2, product_size_id=1,  # a climber knows these; the rest is read from the catalogue
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = '8 x 12' (or 2), sets = 'Foundation,Footholds 1'
size = ''
sets = ''
