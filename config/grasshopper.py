# Grasshopper Board 2020, layout 1, on the GrandMaster 12x12 with Tweeners (product size 4), from boardsesh's snapshots.
# Not checked against data here: the ids are boardsesh's
# (boardsesh/boardsesh, packages/board-constants/src/generated/product-sizes-data.ts).
# Role ids, colours, sizes, sets and angles come from the snapshot's catalogue.
#   python prepare.py config/grasshopper.py --download
dataset = 'grasshopper'
boards = [dict(
    name='grasshopper', board_type='grasshopper', format='aurora', path='data/board-snapshots',
    layout_id=1, product_size_id=4,  # a climber knows these; the rest is read from the catalogue
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = 'Master 8x12' (or 2), sets = 'Engage,Flow'
size = ''
sets = ''
