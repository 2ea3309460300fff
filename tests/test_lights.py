"""lights.py against byte sequences worked out by hand from the Aurora and MoonBoard protocol notes."""
import os
import sqlite3
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import lights as L  # noqa: E402
from lights import LightsError  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'data')


def real_db(name):
    path = os.path.join(SHARED, name)
    if not os.path.exists(path):
        pytest.skip(f'no {path}')
    return sqlite3.connect(f'file:{path}?mode=ro', uri=True)


# -----------------------------------------------------------------------------
# Aurora framing and encoding

def test_frame_and_checksum():
    # payload 54 2a 00 1c: sum = 0x54+0x2a+0x00+0x1c = 0x9a, checksum = ~0x9a & 0xff = 0x65
    assert L.aurora_frame(bytes([0x54, 0x2A, 0x00, 0x1C])) == bytes([0x01, 0x04, 0x65, 0x02, 0x54, 0x2A, 0x00, 0x1C, 0x03])
    # sum wraps: 0xff+0x02 = 0x101 -> 0x01, checksum 0xfe
    assert L.aurora_frame(bytes([0xFF, 0x02])) == bytes([0x01, 0x02, 0xFE, 0x02, 0xFF, 0x02, 0x03])
    # empty payload: sum 0 -> checksum 0xff
    assert L.aurora_frame(b'') == bytes([0x01, 0x00, 0xFF, 0x02, 0x03])
    assert len(L.aurora_frame(bytes(255))) == 260
    with pytest.raises(LightsError):
        L.aurora_frame(bytes(256))


def test_color_bytes_v3():
    # (r//32)<<5 | (g//32)<<2 | b//64
    assert L.aurora_color_byte('00FF00') == 0x1C  # 7<<2 = 28
    assert L.aurora_color_byte('FF00FF') == 0xE3  # 7<<5 = 0xe0, 255//64 = 3
    assert L.aurora_color_byte('00FFFF') == 0x1F  # 0x1c | 3
    assert L.aurora_color_byte('FFA500') == 0xF4  # 0xe0 | (0xa5=165)//32=5 -> 5<<2 = 0x14
    assert L.aurora_color_byte('ffa500') == 0xF4  # lower-case hex is the same colour
    assert L.aurora_color_byte('3F3F3F') == 0x24  # 63//32=1 -> 0x20 | 1<<2 = 0x04 | 63//64=0


def test_color_bytes_v2():
    # (r//64)<<6 | (g//64)<<4 | (b//64)<<2, low two bits left for the position
    assert L.aurora_color_byte('00FF00', api=2) == 0x30  # 3<<4
    assert L.aurora_color_byte('FF00FF', api=2) == 0xCC  # 3<<6 | 3<<2
    assert L.aurora_color_byte('00FFFF', api=2) == 0x3C  # 3<<4 | 3<<2
    assert L.aurora_color_byte('FFA500', api=2) == 0xE0  # 3<<6 | (165//64=2)<<4
    assert L.aurora_color_byte('FFFFFF', api=2, scale=0.6) == 0xA8  # int(255*0.6)=153 -> 2 each: 0x80|0x20|0x08


@pytest.mark.parametrize('bad', ['00FF0', '#00FF00', '00GG00', '', None, 0x00FF00, '00FF001'])
def test_bad_color(bad):
    with pytest.raises(LightsError, match='6 hex digits'):
        L.aurora_color_byte(bad)


def test_single_frame_v3():
    # pos 42 = 0x002a -> 2a 00, 00FF00 -> 1c; command T = 0x54; checksum 0x65 (see test_frame_and_checksum)
    assert L.aurora_frames([(42, '00FF00')]) == [bytes.fromhex('01 04 65 02 54 2a 00 1c 03')]
    # pos 0x1234 -> 34 12, FF00FF -> e3; payload 54 34 12 e3: sum = 84+52+18+227 = 381 -> 0x7d, ~ = 0x82
    assert L.aurora_frames([(0x1234, 'FF00FF')], api=3) == [bytes.fromhex('01 04 82 02 54 34 12 e3 03')]


def test_single_frame_v2():
    # pos 10 -> 0a 30; pos 256 = 0x100 -> 00, 0x0c|1 = 0d; pos 500 = 0x1f4 -> f4, 0xc0|1 = c1
    # payload 50 0a 30 00 0d f4 c1: sum = 80+10+48+0+13+244+193 = 588 -> 0x4c, ~ = 0xb3
    frames = L.aurora_frames([(10, '00FF00'), (256, '0000FF'), (500, 'FF0000')], api=2)
    assert frames == [bytes.fromhex('01 07 b3 02 50 0a 30 00 0d f4 c1 03')]
    # 1023 = 0x3ff -> ff, 0x30|3 = 33; payload 50 ff 33: sum = 80+255+51 = 386 -> 0x82, ~ = 0x7d
    assert L.aurora_frames([(1023, '00FF00')], api=2) == [bytes.fromhex('01 03 7d 02 50 ff 33 03')]


def test_two_frames_v3():
    # 90 holds -> 84 + 6; first frame R = 0x52, last S = 0x53
    frames = L.aurora_frames([(i, '00FF00') for i in range(90)], api=3)
    assert len(frames) == 2
    # first: length 1+84*3 = 253 = 0xfd; sum = 82 + (0+..+83 = 3486) + 84*28 = 5920 = 23*256+32 -> ~0x20 = 0xdf
    assert frames[0][:5] == bytes([0x01, 0xFD, 0xDF, 0x02, 0x52]) and len(frames[0]) == 258 and frames[0][-1] == 0x03
    # last: positions 84..89 = 0x54..0x59; length 1+18 = 19 = 0x13;
    # sum = 83 + (84+..+89 = 519) + 6*28 = 770 = 3*256+2 -> ~0x02 = 0xfd
    assert frames[1] == bytes.fromhex('01 13 fd 02 53 54 00 1c 55 00 1c 56 00 1c 57 00 1c 58 00 1c 59 00 1c 03')


def test_two_frames_v2():
    # 130 holds -> 127 + 3; first N = 0x4e, last O = 0x4f; 0000FF -> 0x0c
    leds = [(i, '0000FF') for i in range(127)] + [(1021, '0000FF'), (1022, '0000FF'), (1023, '0000FF')]
    frames = L.aurora_frames(leds, api=2, leds_per_hold=1)  # 130*3 = 390 colour steps <= 540: no dimming
    assert len(frames) == 2
    # first: length 1+127*2 = 255; sum = 78 + (0+..+126 = 8001) + 127*12 = 9603 = 37*256+131 -> ~0x83 = 0x7c
    assert frames[0][:5] == bytes([0x01, 0xFF, 0x7C, 0x02, 0x4E]) and len(frames[0]) == 260
    # last: 1021 = 0x3fd -> fd 0f, 1022 -> fe 0f, 1023 -> ff 0f
    # sum = 79 + 253+254+255 + 3*15 = 886 = 3*256+118 -> ~0x76 = 0x89
    assert frames[1] == bytes.fromhex('01 07 89 02 4f fd 0f fe 0f ff 0f 03')


def test_three_frames_first_middle_last():
    v3 = L.aurora_frames([(i, 'FF00FF') for i in range(200)], api=3)  # 84 + 84 + 32
    assert [f[4] for f in v3] == [0x52, 0x51, 0x53]  # R Q S
    assert [f[1] for f in v3] == [253, 253, 1 + 32 * 3]
    v2 = L.aurora_frames([(i, '000040') for i in range(300)], api=2, leds_per_hold=1)  # 127 + 127 + 46
    assert [f[4] for f in v2] == [0x4E, 0x4D, 0x4F]  # N M O
    assert [f[1] for f in v2] == [255, 255, 1 + 46 * 2]
    assert v2[2][5:7] == bytes([0xFE, 0x04])  # frame 3 opens with LED 254 = 0x0fe: fe, (0x40//64=1)<<2 | 0


def test_frame_capacity_edges():
    assert [f[4] for f in L.aurora_frames([(i, '00FF00') for i in range(84)])] == [0x54]  # T: exactly fits
    assert [f[4] for f in L.aurora_frames([(i, '00FF00') for i in range(85)])] == [0x52, 0x53]
    assert [f[4] for f in L.aurora_frames([(i, '000040') for i in range(127)], api=2)] == [0x50]  # P
    assert [f[4] for f in L.aurora_frames([(i, '000040') for i in range(128)], api=2)] == [0x4E, 0x4F]


def test_v2_power_dimming():
    # white is 3+3+3 = 9 steps of 1/30 W; two LEDs a hold; budget 18 W = 540 steps
    # 30 holds: 2*30*9 = 540 <= 540 -> full brightness 0xfc
    assert L.aurora_frames([(i, 'FFFFFF') for i in range(30)], api=2)[0][5:7] == bytes([0x00, 0xFC])
    # 31 holds: 558 > 540; scale 0.8 -> 204//64 = 3, still 558; 0.6 -> 153//64 = 2: 2*31*6 = 372 -> 0xa8
    assert L.aurora_frames([(i, 'FFFFFF') for i in range(31)], api=2)[0][5:7] == bytes([0x00, 0xA8])
    # 80 holds: 0.6 -> 960 > 540; 0.4 -> 102//64 = 1: 2*80*3 = 480 -> 0x54
    assert L.aurora_frames([(i, 'FFFFFF') for i in range(80)], api=2)[0][5:7] == bytes([0x00, 0x54])
    # one LED per hold halves the power: 31 holds fit at full brightness (279 steps)
    assert L.aurora_frames([(i, 'FFFFFF') for i in range(31)], api=2, leds_per_hold=1)[0][6] == 0xFC
    # v3 never dims
    assert L.aurora_frames([(i, 'FFFFFF') for i in range(80)], api=3)[0][7] == 0xFF
    # 100 holds: 0.4 -> 600 > 540, 0.2 -> 51//64 = 0: every hold dark -> refuse
    with pytest.raises(LightsError, match='power budget'):
        L.aurora_frames([(i, 'FFFFFF') for i in range(100)], api=2)


def test_positions_out_of_range():
    with pytest.raises(LightsError, match='1023'):
        L.aurora_frames([(1024, '00FF00')], api=2)
    assert L.aurora_frames([(1024, '00FF00')], api=3)[0][5:7] == bytes([0x00, 0x04])
    assert L.aurora_frames([(65535, '00FF00')], api=3)[0][5:7] == bytes([0xFF, 0xFF])
    for bad in (65536, -1, 1.5, '3'):
        with pytest.raises(LightsError):
            L.aurora_frames([(bad, '00FF00')], api=3)
    with pytest.raises(LightsError, match='API level'):
        L.aurora_frames([(1, '00FF00')], api=4)


def test_api_level_from_name():
    assert L.aurora_api_level('Kilter Board#abc123@3') == 3
    assert L.aurora_api_level('Kilter Board@2') == 2
    assert L.aurora_api_level('Kilter Board') == 2  # no '@N': level 2
    assert L.aurora_api_level(None) == 2


def test_constants():
    assert L.AURORA_WRITE_UUID.startswith('6e400002') and L.AURORA_SERVICE_UUID.startswith('6e400001')
    assert L.AURORA_ADVERTISED_UUID == '4488b571-7806-4df6-bcff-a2897e4953ff'
    assert L.MOONBOARD_WRITE_UUID.startswith('6e400002') and L.MOONBOARD_REDBEARLAB_WRITE_UUID.startswith('713d0003')
    uuids = [v for k, v in vars(L).items() if k.endswith('_UUID')]
    assert all(u == u.lower() and len(u) == 36 for u in uuids)  # Web Bluetooth rejects upper case
    assert L.AURORA_COMMANDS[2] == dict(single=ord('P'), first=ord('N'), middle=ord('M'), last=ord('O'))
    assert L.AURORA_COMMANDS[3] == dict(single=ord('T'), first=ord('R'), middle=ord('Q'), last=ord('S'))


# -----------------------------------------------------------------------------
# MoonBoard

def test_moonboard_positions():
    # up column A (0..17), down B (35..18), up C (36..53), ... K is even: up (180..197)
    assert L.moonboard_led('A1') == 0
    assert L.moonboard_led('A18') == 17
    assert L.moonboard_led('K1') == 180  # 10*18 + 0
    assert L.moonboard_led('K18') == 197  # 10*18 + 17
    assert L.moonboard_led('B1') == 35  # 18 + (17-0)
    assert L.moonboard_led('A2') == 1
    assert L.moonboard_led('B18') == 18  # 18 + (17-17)
    assert L.moonboard_led('C5') == 40  # 36 + 4
    assert L.moonboard_led('F10') == 98  # 5*18 + (17-9)
    assert L.moonboard_led('E8') == 79  # 4*18 + 7
    assert sorted(L.moonboard_led(f'{c}{r}') for c in 'ABCDEFGHIJK' for r in range(1, 19)) == list(range(198))


@pytest.mark.parametrize('bad', ['L1', 'A0', 'A19', 'A', '', '1A', 'AA1', 'a1 ', None])
def test_moonboard_off_grid(bad):
    with pytest.raises(LightsError, match='off the grid'):
        L.moonboard_led(bad)


def test_moonboard_message():
    assert L.moonboard_message([('A1', 'start'), ('B1', 'middle'), ('K18', 'finish')]) == b'l#S0,P35,E197#'
    # C5 -> 40, E8 -> 79, F10 -> 98, D18 -> 3*18 + 0 = 54
    msg = L.moonboard_message([('C5', 'start'), ('E8', 'middle'), ('F10', 'middle'), ('D18', 'finish')])
    assert msg == b'l#S40,P79,P98,E54#'
    with pytest.raises(LightsError, match='foot'):
        L.moonboard_message([('A1', 'foot')])
    with pytest.raises(LightsError, match='no holds'):
        L.moonboard_message([])


# -----------------------------------------------------------------------------
# chunking and the route-level entry point

def test_chunks():
    data = bytes(range(45))
    parts = L.chunks(data)
    assert [len(p) for p in parts] == [20, 20, 5] and b''.join(parts) == data
    assert [len(p) for p in L.chunks(bytes(40))] == [20, 20]
    assert L.chunks(b'') == []
    assert [len(p) for p in L.chunks(data, 16)] == [16, 16, 13]
    # two 258-byte frames go back to back, then are cut: 516 bytes -> 25 full writes and one of 16
    frames = L.aurora_frames([(i, '00FF00') for i in range(168)])
    writes = L.ble_writes(frames)
    assert [len(w) for w in writes] == [20] * 25 + [16] and b''.join(writes) == b''.join(frames)


KILTERISH = dict(format='aurora', title='Test board', leds={101: 42, 102: 300, 103: 7, 104: 1000},
                 role_colors=dict(start='00FF00', middle='00FFFF', finish='FF00FF', foot='FFA500'))


def test_route_packets_aurora():
    # 42 -> 2a 00 1c; 300 = 0x12c -> 2c 01 1f; 1000 = 0x3e8 -> e8 03 e3
    # sum = 84 + 42+0+28 + 44+1+31 + 232+3+227 = 692 = 2*256+180 -> ~0xb4 = 0x4b
    frames = L.route_packets(KILTERISH, [(101, 'start'), (102, 'middle'), (104, 'finish')])
    assert frames == [bytes.fromhex('01 0a 4b 02 54 2a 00 1c 2c 01 1f e8 03 e3 03')]
    # v2: 2a 30; 2c 0x3c|1 = 3d; 7 -> 07 e0; sum = 80 + 42+48 + 44+61 + 7+224 = 506 = 256+250 -> ~0xfa = 0x05
    frames = L.route_packets(dict(KILTERISH, led_api=2), [(101, 'start'), (102, 'middle'), (103, 'foot')])
    assert frames == [bytes.fromhex('01 07 05 02 50 2a 30 2c 3d 07 e0 03')]
    assert L.hex_lines(frames) == '01 07 05 02 50 2a 30 2c 3d 07 e0 03'


def test_route_packets_moonboard():
    board = dict(format='moonboard', title='MoonBoard 2016')
    assert L.route_packets(board, [('A1', 'start'), ('K18', 'finish')]) == [b'l#S0,E197#']
    with pytest.raises(LightsError, match='off the grid'):
        L.route_packets(board, [('A1', 'start'), ('L3', 'finish')])


def test_route_packets_errors():
    with pytest.raises(LightsError, match='Tension.*no LED map'):
        L.route_packets(dict(format='aurora', title='Tension', leds={}, role_colors={}), [(1, 'start')])
    with pytest.raises(LightsError, match='no LED map'):
        L.route_packets(dict(format='aurora', title='Tension'), [(1, 'start')])
    with pytest.raises(LightsError, match='hold 999 has no LED'):
        L.route_packets(KILTERISH, [(101, 'start'), (999, 'finish')])
    with pytest.raises(LightsError, match='6 hex digits'):
        L.route_packets(dict(KILTERISH, role_colors=dict(start='green')), [(101, 'start')])
    with pytest.raises(LightsError, match="no LED colour for role 'foot'"):
        L.route_packets(dict(KILTERISH, role_colors=dict(start='00FF00', foot=None)), [(101, 'foot')])
    with pytest.raises(LightsError, match="unknown role 'hand'"):
        L.route_packets(KILTERISH, [(101, 'hand')])
    with pytest.raises(LightsError, match='no holds'):
        L.route_packets(KILTERISH, [])
    with pytest.raises(LightsError, match='format'):
        L.route_packets(dict(KILTERISH, format='spraywall'), [(101, 'start')])
    with pytest.raises(LightsError, match='1023'):
        L.route_packets(dict(KILTERISH, led_api=2, leds={101: 1500}), [(101, 'start')])
    assert issubclass(LightsError, ValueError)


def test_hex_lines():
    assert L.hex_lines([bytes([0x01, 0x0A, 0x3F]), b'l#S0#']) == '01 0a 3f\n6c 23 53 30 23'
    assert L.hex_lines([]) == ''


# -----------------------------------------------------------------------------
# reading the LED map from an Aurora database

def test_read_led_map_synthetic():
    con = sqlite3.connect(':memory:')
    con.executescript("""
        CREATE TABLE placements(id, layout_id, hole_id, set_id, default_placement_role_id);
        CREATE TABLE placement_roles(id, product_id, position, name, full_name, led_color, screen_color);
        INSERT INTO placements VALUES (1, 1, 10, 1, 12), (2, 1, 11, 1, 13), (3, 2, 10, 1, 12);
        INSERT INTO placement_roles VALUES (12, 1, 1, 'start', 'Start', '00FF00', '00DD00'),
                                           (13, 1, 2, 'middle', 'Middle', NULL, NULL);
    """)
    assert L.read_led_map(con, 10, 1) == ({}, {12: '00FF00', 13: None})  # no leds table
    con.executescript("""
        CREATE TABLE leds(id, product_size_id, hole_id, position);
        INSERT INTO leds VALUES (1, 10, 10, 5), (2, 10, 11, 6), (3, 11, 10, 99);
    """)
    assert L.read_led_map(con, 10, 1)[0] == {1: 5, 2: 6}
    assert L.read_led_map(con, 11, 1)[0] == {1: 99}
    assert L.read_led_map(con, 10, 2)[0] == {3: 5}
    assert L.read_led_map(con, 12, 1)[0] == {}  # no rows for that size


def test_read_led_map_kilter():
    con = real_db('kilter.db')
    leds, colors = L.read_led_map(con, 10, 1)
    assert len(leds) == 476 and len(set(leds.values())) == 476
    assert all(isinstance(p, int) and 0 <= p <= 1023 for p in leds.values())
    for role_id in (12, 13, 14, 15):
        L.aurora_color_byte(colors[role_id])  # a usable 6-hex-digit colour
    board = dict(format='aurora', title='Kilter', leds=leds, led_api=2,
                 role_colors=dict(zip(('start', 'middle', 'finish', 'foot'), (colors[r] for r in (12, 13, 14, 15)))))
    some = sorted(leds)[:4]
    frames = L.route_packets(board, list(zip(some, ('start', 'middle', 'finish', 'foot'))))
    assert len(frames) == 1 and frames[0][1] == 1 + 4 * 2
    data = frames[0][5:-1]  # v2: position low byte, then colour bits | position bits 9..8
    assert [data[i] | (data[i + 1] & 3) << 8 for i in range(0, 8, 2)] == [leds[p] for p in some]


def test_read_led_map_tension():
    """The Tension Board 2 Spray can be lit: every size has its own LED map, and each role a colour."""
    con = real_db('tension.db')
    sizes = {6: 498, 7: 407, 8: 328, 9: 267}  # the LEDs of each size of layout 11, counted in the database
    for size, n in sizes.items():
        expected = dict(con.execute("SELECT p.id, l.position FROM placements p JOIN leds l ON l.hole_id = p.hole_id "
                                    "WHERE p.layout_id = 11 AND l.product_size_id = ?", (size,)))
        leds, colors = L.read_led_map(con, size, 11)
        assert leds == expected and len(leds) == n and len(set(leds.values())) == n
    assert {r: colors[r] for r in (5, 6, 7, 8)} == {5: '00FF00', 6: '0000FF', 7: 'FF0000', 8: 'FF00FF'}
