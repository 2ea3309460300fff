"""
Draw routes on their board as self-contained SVG: no network, no fonts or images to fetch, so a
sheet can be opened anywhere and checked by eye (is the route on the wall, are the roles right).

    board_svg(board, holds, title, subtitle)  one route on one board, an <svg> element
    sheet_svg(board, routes)                   many routes in a grid, a standalone SVG document
    write_sheet(path, board, routes)           the same, written to a file atomically
    scatter_svg(true, pred), html_table(...), html_page(...)   the pieces of evaluate.py's report

Every hold of the board is a faint dot, and the route's holds are open rings in the apps' colours
(routes.ROLE_COLORS), so the hold itself stays visible as it does under the app's LEDs.
"""

import os
from xml.sax.saxutils import escape

from routes import FONT, MAX_DIFFICULTY, MIN_DIFFICULTY, ROLE_COLORS, ROLES

BOARD_FILL = '#2b2b2b'  # dark, like plywood under the LEDs; the rings show up well on it
HOLD_FILL = '#bdbdbd'
LABEL_FILL = '#8a8a8a'
TEXT_FILL = '#222222'
SUBTEXT_FILL = '#666666'
PAD = 6  # px around the board inside one drawing
# proportions of the drawing, in hold pitches (the web page draws with the same ones)
GEOMETRY = dict(hold=0.14, ring=0.42, stroke=0.11, label=0.45, gutter=0.8, corner=0.3)


def _f(v):
    """A number for an SVG attribute: one decimal is plenty on a screen, and keeps files small."""
    return f'{v:.1f}'.rstrip('0').rstrip('.')


def hold_pitch(board):
    """The usual distance between neighbouring holds in a row (Aurora boards 8 units, MoonBoard 1
    column), so hold and ring sizes follow the board's own grid whatever its units."""
    rows = {}
    for _, x, y in board['holds']:
        rows.setdefault(y, []).append(x)
    gaps = []
    for xs in rows.values():
        xs.sort()
        gaps += [b - a for a, b in zip(xs, xs[1:]) if b > a]
    if not gaps:
        left, right, _, _ = board['edges']
        return (right - left) / 10
    gaps.sort()
    return gaps[len(gaps) // 2]


def _layout(board, size):
    """Scale and sizes of one drawing: the board keeps the aspect ratio of its edges, and a line
    of text is reserved above (title) and below (subtitle) so sheets line up in a grid."""
    left, right, bottom, top = board['edges']
    pitch = hold_pitch(board)
    # the MoonBoard prints its column letters along the top and row numbers down the left side
    gutter = GEOMETRY['gutter'] * pitch if board['format'] == 'moonboard' else 0.0
    scale = size / (right - left + gutter)
    font = max(9.0, size / 20)
    line = font * 1.5
    board_w, board_h = size, (top - bottom + gutter) * scale
    return dict(left=left, top=top, gutter=gutter, scale=scale, pitch=pitch, font=font, line=line,
                board_w=board_w, board_h=board_h,
                width=board_w + 2 * PAD, height=board_h + 2 * PAD + 2 * line)


def _placement_name(board, placement):
    return str(placement) if board['format'] == 'moonboard' else f'p{placement}'


def board_svg(board, holds, title='', subtitle='', size=240):
    """One route on its board as an <svg> element, `size` px wide (plus a small margin).
    holds: [(placement, role)]. Raises ValueError for a hold or role the board does not have."""
    layout = _layout(board, size)
    xy = {p: (x, y) for p, x, y in board['holds']}
    for placement, role in holds:
        if placement not in xy:
            raise ValueError(f"hold {_placement_name(board, placement)} is not on {board['title']}")
        if role not in ROLE_COLORS:
            raise ValueError(f"hold {_placement_name(board, placement)} has role {role!r}; roles are {', '.join(ROLES)}")

    scale, gutter = layout['scale'], layout['gutter']
    ox, oy = PAD, PAD + layout['line']  # top-left corner of the board rectangle

    def to_svg(x, y):  # board units, y up -> px, y down
        return ox + (x - layout['left'] + gutter) * scale, oy + (layout['top'] - y + gutter) * scale

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(layout["width"])}" height="{_f(layout["height"])}" '
           f'viewBox="0 0 {_f(layout["width"])} {_f(layout["height"])}" font-family="sans-serif">']
    out.append(f'<text class="title" x="{_f(layout["width"] / 2)}" y="{_f(PAD + layout["font"])}" text-anchor="middle" '
               f'font-size="{_f(layout["font"])}" font-weight="bold" fill="{TEXT_FILL}">{escape(str(title))}</text>')
    out.append(f'<rect class="board" x="{_f(ox)}" y="{_f(oy)}" width="{_f(layout["board_w"])}" height="{_f(layout["board_h"])}" '
               f'rx="{_f(GEOMETRY["corner"] * layout["pitch"] * scale)}" fill="{BOARD_FILL}"/>')

    if board['format'] == 'moonboard':  # column letters and row numbers, faint, in the gutter
        label = _f(GEOMETRY['label'] * layout['pitch'] * scale)
        columns = sorted({(x, p.rstrip('0123456789')) for p, x, _ in board['holds']})
        rows = sorted({y for _, _, y in board['holds']})
        for x, letter in columns:
            cx, _ = to_svg(x, 0)
            out.append(f'<text class="label" x="{_f(cx)}" y="{_f(oy + 0.6 * gutter * scale)}" text-anchor="middle" '
                       f'font-size="{label}" fill="{LABEL_FILL}">{escape(letter)}</text>')
        for y in rows:
            _, cy = to_svg(0, y)
            out.append(f'<text class="label" x="{_f(ox + 0.5 * gutter * scale)}" y="{_f(cy)}" text-anchor="middle" '
                       f'dominant-baseline="central" font-size="{label}" fill="{LABEL_FILL}">{y}</text>')

    r_hold, r_ring = GEOMETRY['hold'] * layout['pitch'] * scale, GEOMETRY['ring'] * layout['pitch'] * scale
    stroke = max(1.5, GEOMETRY['stroke'] * layout['pitch'] * scale)
    # every hold of the board as a faint dot: one path of zero-length round-capped strokes, a few
    # bytes a hold where a <circle> each would make a sheet of Kilter boards megabytes
    dots = ''.join(f'M{_f(cx)} {_f(cy)}h0' for cx, cy in (to_svg(x, y) for _, x, y in board['holds']))
    out.append(f'<path class="holds" d="{dots}" stroke="{HOLD_FILL}" stroke-opacity="0.55" '
               f'stroke-width="{_f(2 * r_hold)}" stroke-linecap="round"/>')
    for placement, role in holds:
        cx, cy = to_svg(*xy[placement])
        out.append(f'<circle class="ring" data-role="{role}" data-hold="{escape(str(placement))}" cx="{_f(cx)}" cy="{_f(cy)}" '
                   f'r="{_f(r_ring)}" fill="none" stroke="{ROLE_COLORS[role]}" stroke-width="{_f(stroke)}"/>')

    out.append(f'<text class="subtitle" x="{_f(layout["width"] / 2)}" y="{_f(oy + layout["board_h"] + layout["font"] * 1.25)}" '
               f'text-anchor="middle" font-size="{_f(layout["font"] * 0.9)}" fill="{SUBTEXT_FILL}">{escape(str(subtitle))}</text>')
    out.append('</svg>')
    return '\n'.join(out)


def sheet_svg(board, routes, columns=5, size=240):
    """Many routes of one board in a grid, as one standalone SVG document with a role legend.
    routes: [dict(holds=[(placement, role)], title=str, subtitle=str)]; titles are optional."""
    layout = _layout(board, size)
    columns = max(1, min(columns, len(routes) or 1))
    header = 2 * layout['line'] + PAD  # board title, then the legend
    width = columns * layout['width']
    height = header + -(-len(routes) // columns) * layout['height'] + PAD
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(width)}" height="{_f(height)}" '
           f'viewBox="0 0 {_f(width)} {_f(height)}" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           f'<text class="sheet-title" x="{PAD}" y="{_f(PAD + layout["font"])}" font-size="{_f(layout["font"] * 1.1)}" '
           f'font-weight="bold" fill="{TEXT_FILL}">{escape(str(board["title"]))}</text>']

    # legend: only the roles this board has (the MoonBoard has no foot holds)
    out.append('<g class="legend">')
    x, y = PAD + layout['font'] / 2, PAD + layout['line'] + layout['font']
    for role in ROLES:
        if role not in board['role_codes']:
            continue
        out.append(f'<circle cx="{_f(x)}" cy="{_f(y - layout["font"] / 3)}" r="{_f(layout["font"] / 2.5)}" fill="none" '
                   f'stroke="{ROLE_COLORS[role]}" stroke-width="2"/>')
        out.append(f'<text x="{_f(x + layout["font"])}" y="{_f(y)}" font-size="{_f(layout["font"])}" fill="{TEXT_FILL}">{role}</text>')
        x += layout['font'] * 6.5  # room for the longest name, 'finish'/'middle'
    out.append('</g>')

    for i, route in enumerate(routes):
        gx, gy = (i % columns) * layout['width'], header + (i // columns) * layout['height']
        out.append(f'<g class="route" transform="translate({_f(gx)},{_f(gy)})">')
        out.append(board_svg(board, route['holds'], route.get('title', ''), route.get('subtitle', ''), size))
        out.append('</g>')
    out.append('</svg>')
    return '\n'.join(out) + '\n'


def write_sheet(path, board, routes, columns=5):
    """Write sheet_svg to path."""
    write_text(path, sheet_svg(board, routes, columns))


def write_text(path, text):
    """Write a file via a temporary one, so a reader never sees half of it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


# -----------------------------------------------------------------------------
# the report's HTML: tables, a scatter plot, the page around them

def html_table(header, rows):
    head = ''.join(f'<th>{escape(str(c))}</th>' for c in header)
    body = ''.join('<tr>' + ''.join(f'<td>{escape(str(c))}</td>' for c in row) + '</tr>' for row in rows)
    # in a box of its own that scrolls sideways, so a wide table never pushes the page past the window
    return f'<div class="table-box"><table><tr>{head}</tr>{body}</table></div>'


def scatter_svg(true, pred, size=320):
    """Predicted against true difficulty, with the diagonal a perfect model would sit on."""
    lo, hi = MIN_DIFFICULTY - 1, MAX_DIFFICULTY + 1

    def px(v):
        return 30 + (v - lo) / (hi - lo) * (size - 40)

    def py(v):
        return size - 30 - (v - lo) / (hi - lo) * (size - 40)
    dots = ''.join(f'<circle cx="{px(t):.1f}" cy="{py(p):.1f}" r="1.6" fill="#1f77b4" fill-opacity="0.35"/>'
                   for t, p in zip(true, pred))
    ticks = ''.join(f'<text x="{px(d):.1f}" y="{size - 14}" font-size="9" text-anchor="middle">{FONT[d]}</text>'
                    f'<text x="26" y="{py(d) + 3:.1f}" font-size="9" text-anchor="end">{FONT[d]}</text>'
                    for d in range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1, 3))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
            f'<line x1="{px(lo)}" y1="{py(lo)}" x2="{px(hi)}" y2="{py(hi)}" stroke="#aaa"/>{dots}{ticks}'
            f'<text x="{size / 2}" y="{size - 2}" font-size="10" text-anchor="middle">true</text>'
            f'<text x="8" y="12" font-size="10">predicted</text></svg>')


CURVE_COLORS = ('#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e')


def curve_svg(history, keys, width=360, height=200):
    """Training curves: each key of the history entries (a run's model.read_history) against the
    iteration, and a dashed line at the last evaluation that was the best so far: the checkpoint
    best.pt holds, the one kept."""
    kept = max((h['iter'] for h in history if h.get('best')), default=None)
    points = {k: [(h['iter'], h[k]) for h in history if isinstance(h.get(k), (int, float))] for k in keys}
    values = [v for p in points.values() for _, v in p]
    iters = [h['iter'] for h in history] + ([kept] if kept is not None else [])
    if not values or not iters:
        return '<p>no loss history</p>'
    x0, x1 = min(iters + [0]), max(iters) or 1
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1

    def px(i):
        return 40 + (i - x0) / max(x1 - x0, 1) * (width - 50)

    def py(v):
        return height - 30 - (v - lo) / (hi - lo) * (height - 50)
    lines, legend = '', ''
    for n, (k, p) in enumerate(points.items()):
        color = CURVE_COLORS[n % len(CURVE_COLORS)]
        if p:
            lines += (f'<polyline class="curve" fill="none" stroke="{color}" stroke-width="1.5" points="'
                      + ' '.join(f'{px(i):.1f},{py(v):.1f}' for i, v in p) + '"/>')
        if len(p) == 1:  # a line through one point draws nothing: a dot shows it
            lines += f'<circle class="point" cx="{px(p[0][0]):.1f}" cy="{py(p[0][1]):.1f}" r="2.5" fill="{color}"/>'
        legend += f'<text x="{45 + 110 * n}" y="12" font-size="10" fill="{color}">{escape(k)}</text>'
    mark = '' if kept is None else (
        f'<line class="kept" x1="{px(kept):.1f}" y1="18" x2="{px(kept):.1f}" y2="{height - 30}" stroke="#555" '
        f'stroke-dasharray="4 3"/><text x="{px(kept) - 3:.1f}" y="28" font-size="9" text-anchor="end">kept: {kept}</text>')
    axes = (f'<text x="36" y="{py(hi) + 3:.1f}" font-size="9" text-anchor="end">{hi:.3g}</text>'
            f'<text x="36" y="{py(lo) + 3:.1f}" font-size="9" text-anchor="end">{lo:.3g}</text>'
            f'<text x="{px(x0):.1f}" y="{height - 16}" font-size="9">{x0}</text>'
            f'<text x="{px(x1):.1f}" y="{height - 16}" font-size="9" text-anchor="end">{x1}</text>'
            f'<text x="{width / 2}" y="{height - 4}" font-size="10" text-anchor="middle">iteration</text>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{lines}{mark}{legend}{axes}</svg>'


REPORT_STYLE = ('body{font-family:sans-serif;margin:2em;color:#222;line-height:1.4} table{border-collapse:collapse} '
                'td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#f4f4f4} '
                '.table-box{max-width:100%;overflow-x:auto;margin:0.6em 0 1em} '
                '.row svg{margin:4px} h3{margin:0.8em 0 0.2em} code{font-size:0.95em;overflow-wrap:anywhere} '
                # cards side by side that wrap to the next line, with room between them; a title wider
                # than its drawing wraps within the card instead of running into the next one
                '.cards{display:flex;flex-wrap:wrap;gap:1.2em 1.5em;align-items:flex-start} .cards>div{min-width:0;max-width:100%} '
                '.curve-card{width:360px} .curve-card h4,.panel h4{margin:0.4em 0;overflow-wrap:anywhere} '
                # a panel's heading takes the width of its table or plot, not the other way round
                '.panel h4{width:0;min-width:100%} .models li{margin:0.2em 0} '
                'td:first-child,th:first-child{text-align:left}')  # row labels read from the left


def html_page(title, parts):
    """A self-contained page: inline style and SVG, nothing fetched from anywhere."""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<style>{REPORT_STYLE}</style></head><body>' + '\n'.join(parts) + '</body></html>')
