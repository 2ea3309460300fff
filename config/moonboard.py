# MoonBoard 2016 (11 columns A..K x 18 rows, 40 degrees), problems as scraped from the website.
dataset = 'moonboard'
boards = [dict(
    name='moonboard', format='moonboard', path='data/moonboard2016.json', title='MoonBoard 2016',
    layout_id=2,  # boardsesh's id of the MoonBoard 2016 (its snapshots: board moonboard, layout 2)
    role_ids=dict(start='SH', middle='IH', finish='FH'),  # no foot role: feet are free
    angles=[40],
    max_start=2, max_finish=2,
    # the JSON names the hold sets mounted for each problem; these are their ids in boardsesh's catalogue
    set_ids={'Hold Set A 2016': 2, 'Hold Set B 2016': 3, 'Original School Holds 2016': 4},
)]

# your wall: the board's size and the hold sets mounted on it, by id or name ('' = the whole board);
# prepare.py lists them and how many routes fit each. Or on any command: --size=... --sets=...
# e.g. sets = 'Hold Set A 2016,Hold Set B 2016' (the MoonBoard 2016 has one size)
size = ''
sets = ''
