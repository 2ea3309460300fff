"""
A route -> the bytes a climbing board's LED controller takes over Bluetooth LE.

Two public protocols, facts taken from boardsesh's notes (Apache-2.0; code and wording here are our own):
- Aurora boards (Kilter, Tension, ...): docs/AURORA_BLUETOOTH_PROTOCOL_SPEC.md, sections cited as A§n.
- MoonBoard: docs/MOONBOARD_BLUETOOTH_PROTOCOL_SPEC.md, sections cited as M§n.
The CLI (sample.py / grade.py --lights) and the web page (serve.py) share it. Every message is
written to the write characteristic in BLE_CHUNK-byte pieces: see ble_writes().
"""
import numbers
import re

from routes import InputError


class LightsError(InputError):
    """A route this board cannot show; raised instead of sending wrong lights."""

BLE_CHUNK = 20  # bytes per GATT write in both apps (A§9, M§5.4)
ROLES = ('start', 'middle', 'finish', 'foot')

# Aurora. UUIDs lower-case, as Web Bluetooth wants them (A§2, A§16)
AURORA_ADVERTISED_UUID = '4488b571-7806-4df6-bcff-a2897e4953ff'  # scan filter only; data goes over UART below
AURORA_SERVICE_UUID = '6e400001-b5a3-f393-e0a9-e50e24dcca9e'  # Nordic UART service
AURORA_WRITE_UUID = '6e400002-b5a3-f393-e0a9-e50e24dcca9e'  # its RX characteristic: the app writes here
AURORA_NAME_FILTERS = ('Kilter', 'Tension', 'Decoy')  # the device name contains the product (A§3)
AURORA_DEFAULT_API = 2  # a device name without '@N' means API level 2 (A§4)
SOH, STX, ETX = 0x01, 0x02, 0x03  # frame delimiters (A§6)
MAX_PAYLOAD = 255  # bytes, command byte included (A§6)
# command byte that opens each frame's payload (A§8): ASCII P/N/M/O for v2, T/R/Q/S for v3
AURORA_COMMANDS = {2: dict(single=0x50, first=0x4E, middle=0x4D, last=0x4F),
                   3: dict(single=0x54, first=0x52, middle=0x51, last=0x53)}
AURORA_LEDS_PER_FRAME = {2: 127, 3: 84}  # (255 - 1) // bytes per LED (A§7)
AURORA_MAX_POSITION = {2: 1023, 3: 65535}  # 10-bit vs 16-bit positions (A§7)
V2_POWER_LIMIT = 18 * 30  # 18 W budget, in units of 1/30 W = one 2-bit colour step per LED (A§10)
V2_SCALES = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05)  # dimming steps tried in order (A§10)

# MoonBoard (M§2, M§3, M§5)
MOONBOARD_SERVICE_UUID = '6e400001-b5a3-f393-e0a9-e50e24dcca9e'  # Nordic UART, newer LED boxes
MOONBOARD_WRITE_UUID = '6e400002-b5a3-f393-e0a9-e50e24dcca9e'
MOONBOARD_REDBEARLAB_SERVICE_UUID = '713d0000-503e-4c75-ba94-3148f18d941e'  # original boxes; needs write-with-response
MOONBOARD_REDBEARLAB_WRITE_UUID = '713d0003-503e-4c75-ba94-3148f18d941e'
MOONBOARD_NAME_PREFIXES = ('MoonBoard', 'Moonboard')
MOONBOARD_COLUMNS = 'ABCDEFGHIJK'
MOONBOARD_ROWS = 18
MOONBOARD_MARKERS = {'start': 'S', 'middle': 'P', 'finish': 'E'}  # the format has no foot marker (M§5.2)
MOONBOARD_CLEAR = b'l##'  # empty message: darkens the wall (M§5.5); never sent for a route


# -----------------------------------------------------------------------------
# Aurora


def aurora_api_level(device_name):
    """API level from an advertised name like 'Kilter Board#abc123@3'; 2 when it has no '@N'."""
    m = re.search(r'@(\d+)', device_name or '')
    return int(m.group(1)) if m else AURORA_DEFAULT_API


def _rgb(rgb_hex):
    if not isinstance(rgb_hex, str) or not re.fullmatch(r'[0-9A-Fa-f]{6}', rgb_hex):
        raise LightsError(f"LED colour {rgb_hex!r} is not 6 hex digits RRGGBB")
    return tuple(int(rgb_hex[i:i + 2], 16) for i in (0, 2, 4))


def aurora_color_byte(rgb_hex, api=3, scale=1.0):
    """The colour byte: v3 packs RRRGGGBB; v2 packs RRGGBB00 (low 2 bits are left for the position)."""
    r, g, b = _rgb(rgb_hex)
    if api == 3:
        return (r // 32) << 5 | (g // 32) << 2 | b // 64
    r, g, b = (int(v * scale) // 64 for v in (r, g, b))  # v2 dims on the client side (A§10)
    return r << 6 | g << 4 | b << 2


def _v2_scale(colors, leds_per_hold):
    """The brightest v2 scale within the board's power budget, as the Aurora app picks it (A§10)."""
    for scale in V2_SCALES:
        packed = [aurora_color_byte(c, 2, scale) for c in colors]
        steps = sum((x >> s) & 3 for x in packed for s in (6, 4, 2))  # the three 2-bit levels of each LED
        if leds_per_hold * steps <= V2_POWER_LIMIT:
            return scale
    return 0.0


def aurora_frame(payload):
    """Wrap one payload: SOH, length, checksum (NOT of the byte sum), STX, payload, ETX (A§6)."""
    if len(payload) > MAX_PAYLOAD:
        raise LightsError(f"Aurora payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return bytes([SOH, len(payload), ~sum(payload) & 0xFF, STX, *payload, ETX])


def aurora_frames(leds, api=3, leds_per_hold=2):
    """[(LED position, 'RRGGBB')] -> framed packets, one per frame (A§7, A§8).
    leds_per_hold only matters for v2, where the client dims to the power budget; Kilter's app uses 2."""
    if api not in AURORA_COMMANDS:
        raise LightsError(f"unknown Aurora LED API level {api!r}; expected 2 or 3")
    for pos, _ in leds:
        if not isinstance(pos, numbers.Integral) or isinstance(pos, bool) or not 0 <= pos <= AURORA_MAX_POSITION[api]:
            raise LightsError(f"LED position {pos!r} does not fit API v{api} (0..{AURORA_MAX_POSITION[api]})")
    leds = [(int(pos), c) for pos, c in leds]
    colors = [c for _, c in leds]
    scale = 1.0
    if api == 2:
        scale = _v2_scale(colors, leds_per_hold)
        if any(aurora_color_byte(c, 2) for c in colors) and not any(aurora_color_byte(c, 2, scale) for c in colors):
            raise LightsError(f"{len(leds)} lit holds exceed the API v2 power budget (18 W): dimming would darken them all")
    data = []
    for pos, c in leds:
        if api == 3:
            data.append(bytes([pos & 0xFF, pos >> 8, aurora_color_byte(c, 3)]))
        else:
            data.append(bytes([pos & 0xFF, aurora_color_byte(c, 2, scale) | pos >> 8]))
    n = AURORA_LEDS_PER_FRAME[api]
    parts = [data[i:i + n] for i in range(0, len(data), n)] or [[]]
    cmd = AURORA_COMMANDS[api]
    frames = []
    for i, part in enumerate(parts):
        kind = 'single' if len(parts) == 1 else 'first' if i == 0 else 'last' if i == len(parts) - 1 else 'middle'
        frames.append(aurora_frame(bytes([cmd[kind]]) + b''.join(part)))
    return frames


def table_names(con):
    """The tables of an open database, and its views (prepare.py reads a boardsesh snapshot through
    temporary views named like the app's tables)."""
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                      "UNION SELECT name FROM sqlite_temp_master WHERE type = 'view'")}


def read_led_map(con, product_size_id, layout_id):
    """From an open Aurora app database (read-only SELECTs): ({placement id: LED position} for this
    size and layout, {placement role id: led_color 'RRGGBB' or None}). An empty map means no LEDs known."""
    tables = table_names(con)
    leds, colors = {}, {}
    if {'leds', 'placements'} <= tables:
        rows = con.execute("SELECT p.id, l.position FROM placements p JOIN leds l ON l.hole_id = p.hole_id "
                           "WHERE p.layout_id = ? AND l.product_size_id = ?", (layout_id, product_size_id))
        leds = {int(pid): int(pos) for pid, pos in rows}
    if 'placement_roles' in tables:
        colors = {int(rid): c for rid, c in con.execute("SELECT id, led_color FROM placement_roles")}
    return leds, colors


# -----------------------------------------------------------------------------
# MoonBoard


def moonboard_led(hold, rows=MOONBOARD_ROWS):
    """Grid hold 'C5' -> its index on the LED string, which snakes up column A, down B, up C, ... (M§5.3)."""
    m = re.fullmatch(r'([A-K])(\d{1,2})', hold) if isinstance(hold, str) else None
    if not m or not 1 <= int(m.group(2)) <= rows:
        raise LightsError(f"MoonBoard hold {hold!r} is off the grid (A..K, 1..{rows})")
    col, row = MOONBOARD_COLUMNS.index(m.group(1)), int(m.group(2)) - 1
    return col * rows + (row if col % 2 == 0 else rows - 1 - row)


def moonboard_message(holds, rows=MOONBOARD_ROWS):
    """[(hold like 'C5', role)] -> ASCII 'l#S0,P35,E197#' (M§5.1, M§5.2)."""
    if not holds:
        raise LightsError("no holds to light (the empty MoonBoard message would clear the wall)")
    parts = []
    for hold, role in holds:
        if role not in MOONBOARD_MARKERS:
            raise LightsError(f"MoonBoard cannot light role {role!r} (only {', '.join(MOONBOARD_MARKERS)})")
        parts.append(f'{MOONBOARD_MARKERS[role]}{moonboard_led(hold, rows)}')
    return ('l#' + ','.join(parts) + '#').encode('ascii')


# -----------------------------------------------------------------------------
# both boards


def chunks(data, size=BLE_CHUNK):
    """Split bytes into pieces of at most `size`, one per GATT write."""
    return [data[i:i + size] for i in range(0, len(data), size)]


def ble_writes(packets, size=BLE_CHUNK):
    """The GATT writes for a route: the frames back to back, then cut into chunks (A§8 step 5, A§9)."""
    return chunks(b''.join(packets), size)


def route_packets(board, holds):
    """One route on one board -> its frames (Aurora) or its single message (MoonBoard).
    board: a plain dict, format 'aurora' (leds {placement: position}, role_colors {role: 'RRGGBB'},
    led_api 2|3, default 3, optional leds_per_hold) or 'moonboard' (holds are grid names); title for errors.
    holds: [(placement or grid name, role)]."""
    title = board.get('title') or board.get('name') or 'this board'
    if not holds:
        raise LightsError(f"{title}: no holds to light")
    for _, role in holds:
        if role not in ROLES:
            raise LightsError(f"{title}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
    if board.get('format') == 'moonboard':
        return [moonboard_message(holds, board.get('rows', MOONBOARD_ROWS))]
    if board.get('format') != 'aurora':
        raise LightsError(f"{title}: unknown board format {board.get('format')!r}")
    leds, colors = board.get('leds') or {}, board.get('role_colors') or {}
    if not leds:
        raise LightsError(f"{title} has no LED map (its database lists no LEDs for this size)")
    out = []
    for placement, role in holds:
        if placement not in leds:
            raise LightsError(f"{title}: hold {placement} has no LED on this board")
        if not colors.get(role):
            raise LightsError(f"{title}: no LED colour for role {role!r}")
        out.append((leds[placement], colors[role]))
    return aurora_frames(out, board.get('led_api', 3), board.get('leds_per_hold', 2))


def hex_lines(packets):
    """Packets as hex, one frame a line ('01 04 65 02 ...'), for the CLI's --lights."""
    return '\n'.join(' '.join(f'{b:02x}' for b in p) for p in packets)
