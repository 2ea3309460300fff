"""draw.py on small boards made by hand: the SVG parses, shows every hold, rings the route's holds
in the right colours at the right places, and refuses holds the board does not have."""
import os
import re
import xml.etree.ElementTree as ET

import pytest

from draw import board_svg, sheet_svg, write_sheet
from routes import ROLE_COLORS

NS = {'svg': 'http://www.w3.org/2000/svg'}

AURORA = dict(
    name='tiny', format='aurora', title='Tiny Board',
    role_codes={'start': 12, 'middle': 13, 'finish': 14, 'foot': 15},
    # a 3 x 3 grid on the apps' 8-unit pitch, plus one kickboard hold in between
    holds=[(100 + 3 * r + c, 8 + 16 * c, 8 + 16 * r) for r in range(3) for c in range(3)] + [(200, 16, 4)],
    edges=(0, 48, 0, 48),
)
MOON = dict(
    name='moon', format='moonboard', title='Moon <test>',
    role_codes={'start': 'SH', 'middle': 'IH', 'finish': 'FH'},
    holds=[(f'{col}{row}', ci, row) for ci, col in enumerate('ABC') for row in (1, 2, 3, 4)],
    edges=(-0.5, 2.5, 0.5, 4.5),
)
ROUTE = [(100, 'start'), (104, 'middle'), (108, 'finish'), (200, 'foot')]


def parse(svg):
    return ET.fromstring(svg)


def dots(root):
    """The (x, y) of every hold dot: the M x y h0 steps of the one 'holds' path."""
    paths = [p for p in root.iter('{%s}path' % NS['svg']) if p.get('class') == 'holds']
    assert len(paths) == 1 and paths[0].get('stroke-linecap') == 'round'
    return [(float(x), float(y)) for x, y in re.findall(r'M([-\d.]+) ([-\d.]+)h0', paths[0].get('d'))]


def circles(root, cls):
    return [c for c in root.iter('{%s}circle' % NS['svg']) if c.get('class') == cls]


def texts(root, cls):
    return [t.text or '' for t in root.iter('{%s}text' % NS['svg']) if t.get('class') == cls]


@pytest.mark.parametrize('board,route', [
    (AURORA, ROUTE),
    (MOON, [('A1', 'start'), ('B3', 'middle'), ('C4', 'finish')]),
])
def test_holds_and_rings(board, route):
    root = parse(board_svg(board, route, title='t', subtitle='s'))
    assert root.tag == '{%s}svg' % NS['svg']
    assert len(dots(root)) == len(board['holds'])
    rings = circles(root, 'ring')
    assert len(rings) == len(route)
    for ring, (placement, role) in zip(rings, route):
        assert ring.get('stroke') == ROLE_COLORS[role]
        assert ring.get('fill') == 'none'
        assert ring.get('data-role') == role


def test_rings_sit_on_their_holds():
    # each ring is centred on the faint dot of its own hold, not on some other hold
    root = parse(board_svg(AURORA, ROUTE))
    centres = dots(root)
    order = [p for p, _, _ in AURORA['holds']]
    for ring, (placement, _) in zip(circles(root, 'ring'), ROUTE):
        assert (float(ring.get('cx')), float(ring.get('cy'))) == centres[order.index(placement)]


def test_y_is_flipped_and_x_is_not():
    # 100 is bottom left (8, 8), 108 top right (40, 40): up on the board is up on the screen
    root = parse(board_svg(AURORA, [(100, 'start'), (108, 'finish')]))
    low, high = circles(root, 'ring')
    assert float(high.get('cy')) < float(low.get('cy'))
    assert float(high.get('cx')) > float(low.get('cx'))
    root = parse(board_svg(MOON, [('A1', 'start'), ('A4', 'finish')]))
    low, high = circles(root, 'ring')
    assert float(high.get('cy')) < float(low.get('cy'))
    assert float(high.get('cx')) == float(low.get('cx'))


def test_aspect_ratio_follows_edges():
    tall = dict(AURORA, edges=(0, 48, 0, 96))
    for board, ratio in ((AURORA, 1.0), (tall, 2.0)):
        rect = next(r for r in parse(board_svg(board, ROUTE, size=200)).iter('{%s}rect' % NS['svg'])
                    if r.get('class') == 'board')
        assert float(rect.get('width')) == 200
        assert float(rect.get('height')) == pytest.approx(200 * ratio, abs=0.1)


def test_titles_are_escaped():
    title, subtitle = 'a <b> & "c" </svg>', "x<&>y"
    root = parse(board_svg(AURORA, ROUTE, title=title, subtitle=subtitle))
    assert texts(root, 'title') == [title]
    assert texts(root, 'subtitle') == [subtitle]
    # the MoonBoard's own title goes through the sheet heading
    root = parse(sheet_svg(MOON, [dict(holds=[('A1', 'start')], title='<&>')]))
    assert texts(root, 'sheet-title') == ['Moon <test>']


def test_moonboard_labels():
    labels = texts(parse(board_svg(MOON, [])), 'label')
    assert labels == ['A', 'B', 'C', '1', '2', '3', '4']
    assert texts(parse(board_svg(AURORA, [])), 'label') == []


@pytest.mark.parametrize('board,route,name', [
    (AURORA, [(100, 'start'), (999, 'finish')], 'p999'),
    (MOON, [('A1', 'start'), ('K18', 'finish')], 'K18'),
])
def test_off_board_hold_raises(board, route, name):
    with pytest.raises(ValueError, match=name):
        board_svg(board, route)
    with pytest.raises(ValueError, match=name):
        sheet_svg(board, [dict(holds=route)])


def test_unknown_role_raises():
    with pytest.raises(ValueError, match='hand'):
        board_svg(AURORA, [(100, 'hand')])


def test_sheet_groups_and_legend():
    routes = [dict(holds=ROUTE[:k], title=f'route {k}', subtitle=f'{k} holds') for k in range(1, 8)]
    root = parse(sheet_svg(AURORA, routes, columns=3))
    groups = [g for g in root.iter('{%s}g' % NS['svg']) if g.get('class') == 'route']
    assert len(groups) == len(routes)
    for g, route in zip(groups, routes):
        assert len(circles(g, 'ring')) == len(route['holds'])
        assert texts(g, 'title') == [route['title']]
    # 7 routes in 3 columns: 3 rows of distinct positions
    offsets = {g.get('transform') for g in groups}
    assert len(offsets) == len(routes)
    legend = next(g for g in root.iter('{%s}g' % NS['svg']) if g.get('class') == 'legend')
    assert [c.get('stroke') for c in legend.iter('{%s}circle' % NS['svg'])] == [ROLE_COLORS[r] for r in AURORA['role_codes']]
    # the MoonBoard has no foot role, so its legend has no foot
    legend = next(g for g in parse(sheet_svg(MOON, [])).iter('{%s}g' % NS['svg']) if g.get('class') == 'legend')
    assert [t.text for t in legend.iter('{%s}text' % NS['svg'])] == ['start', 'middle', 'finish']


def test_write_sheet(tmp_path):
    path = str(tmp_path / 'new' / 'dir' / 'sheet.svg')
    routes = [dict(holds=ROUTE, title='one'), dict(holds=ROUTE[:2], title='two')]
    write_sheet(path, AURORA, routes, columns=2)
    assert os.listdir(os.path.dirname(path)) == ['sheet.svg']  # no .tmp left behind
    with open(path, encoding='utf-8') as f:
        text = f.read()
    assert text == sheet_svg(AURORA, routes, columns=2)
    assert ET.parse(path).getroot().tag == '{%s}svg' % NS['svg']
