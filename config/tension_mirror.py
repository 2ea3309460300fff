# Tension Board 2 Mirror, layout 10, on the 12 high x 12 wide (product size 6), from boardsesh's snapshots.
# Not checked against data here: the ids are boardsesh's
# (boardsesh/boardsesh, packages/board-constants/src/generated/product-sizes-data.ts).
# Role ids, colours, sizes, sets and angles come from the snapshot's catalogue.
#   python prepare.py config/tension_mirror.py --download
dataset = 'tension_mirror'
boards = [dict(
    name='tension_mirror', board_type='tension', format='aurora', path='data/board-snapshots',
    layout_id=10, product_size_id=6,  # a climber knows these; the rest is read from the catalogue
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = '12 high x 8 wide' (or 8), sets = 'Wood,Plastic'
size = ''
sets = ''
