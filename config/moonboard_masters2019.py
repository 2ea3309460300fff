# MoonBoard Masters 2019 (11 columns A..K x 18 rows, at 25 or 40 degrees): layout 5 of boardsesh's snapshots.
# Not checked against data here: the layout id is boardsesh's (boardsesh/boardsesh
# packages/db/scripts/moonboard-hardware.ts); the grid, roles and angles are fixed by its format.
#   python prepare.py config/moonboard_masters2019.py --download
dataset = 'moonboard_masters2019'
boards = [dict(
    name='moonboard_masters2019', board_type='moonboard', format='moonboard', path='data/board-snapshots',
    title='MoonBoard Masters 2019', layout_id=5)]

# your wall: boardsesh's snapshots name no hold's set, so a MoonBoard wall is its one size here
size = ''
sets = ''
