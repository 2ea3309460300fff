# MoonBoard 2024 (11 columns A..K x 18 rows, at 25 or 40 degrees): layout 3 of boardsesh's snapshots.
# Not checked against data here: the layout id is boardsesh's (boardsesh/boardsesh
# packages/db/scripts/moonboard-hardware.ts); the grid, roles and angles are fixed by its format.
#   python prepare.py config/moonboard2024.py --download
dataset = 'moonboard2024'
boards = [dict(
    name='moonboard2024', board_type='moonboard', format='moonboard', path='data/board-snapshots',
    title='MoonBoard 2024', layout_id=3)]

# your wall: boardsesh's snapshots name no hold's set, so a MoonBoard wall is its one size here
size = ''
sets = ''
