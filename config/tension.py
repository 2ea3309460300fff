# Tension Board 2 Spray (layout 11) on the 12 high x 12 wide. The shared database carries
# per-climb grades (climb_cache_fields) and no angles, so its routes get the <angle:?> token;
# a database with climb_stats is read per angle instead.
dataset = 'tension'
boards = [dict(
    name='tension', format='aurora', path='data/tension.db',
    layout_id=11, product_size_id=6,
    role_ids=dict(start=5, middle=6, finish=7, foot=8),
    angles=list(range(0, 70, 5)),
    max_start=2, max_finish=2,
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. size = '12 high x 8 wide' (or 8), sets = 'Wood,Plastic'
size = ''
sets = ''
