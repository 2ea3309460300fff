"""The route grammar: round-trips on real routes, and a clear one-line error for every bad input."""
import json
import os
import sqlite3

import pytest

from conftest import run, shared
from routes import END, GRADES, Grammar, InputError, RouteError, grade_name, load_meta, parse_grade


@pytest.fixture(scope='module')
def tiny_grammar(tiny):
    return Grammar(load_meta(os.path.join(tiny['root'], 'tiny')))


def real_grammar(tmp_path, config, source):
    run('prepare.py', f'config/{config}.py', f'--db={shared(source)}', f'--data_root={tmp_path}')
    return Grammar(load_meta(tmp_path / config))


def test_frames_round_trip_on_every_real_kilter_and_tension_climb(tmp_path):
    for config, source in (('kilter', 'kilter.db'), ('tension', 'tension.db')):
        g = real_grammar(tmp_path, config, source)
        con = sqlite3.connect(f'file:{shared(source)}?mode=ro', uri=True)
        parsed = 0
        for (frames,) in con.execute('SELECT frames FROM climbs'):
            holds = g.parse(config, frames)
            assert g.format(config, holds) == frames  # the apps sort frames by placement id, and so do we
            assert g.parse(config, g.format(config, holds)) == holds
            parsed += 1
        assert parsed > 1000


def test_moonboard_round_trip_on_every_real_problem(tmp_path):
    g = real_grammar(tmp_path, 'moonboard', 'moonboard2016.json')
    problems = json.load(open(shared('moonboard2016.json')))['problems']
    checked = 0
    for p in problems:
        h = p['holds']
        if len(set(h['SH'] + h['IH'] + h['FH'])) < len(h['SH'] + h['IH'] + h['FH']):
            with pytest.raises(RouteError, match='appears twice'):
                g.parse('moonboard', h)
            continue
        holds = g.parse('moonboard', h)
        text = g.format('moonboard', holds)
        assert g.parse('moonboard', text) == holds
        by_role = {code: sorted(p for p, r in holds if r == role) for role, code in g.boards['moonboard']['role_codes'].items()}
        assert by_role == {k: sorted(v) for k, v in h.items()}
        checked += 1
    assert checked > 9000


def test_tokens_round_trip_in_canonical_order(tiny_grammar):
    g = tiny_grammar
    holds = g.parse('tiny', 'p1044r14p1002r12p1020r13p1015r13p1003r15')
    tokens = g.encode('tiny', 40, 20.4, holds)
    assert tokens[-1] == END and len(tokens) == len(holds) + 4
    r = g.decode(tokens)
    assert (r['board'], r['angle'], r['grade']) == ('tiny', 40, 20)
    assert r['holds'] == holds
    assert [role for _, role in holds] == ['start', 'middle', 'middle', 'finish', 'foot']
    ys = [g.xy['tiny'][p][1] for p, role in holds if role == 'middle']
    assert ys == sorted(ys)  # bottom to top within a role
    with pytest.raises(RouteError, match='canonical order'):
        g.decode(tokens[:3] + tokens[3:-1][::-1] + [END])


@pytest.mark.parametrize('route, message', [
    ('p1002r12p9999r13p1044r14', 'unknown placement p9999'),
    ('p1002r12p1020r77p1044r14', 'role r77 of p1020 is not a role'),
    ('p1002r12p1002r13p1044r14', 'hold p1002 appears twice'),
    ('p1002r12p10x', "malformed frames string at 'p10x'"),
    ('', 'malformed frames string (empty)'),
    ('p1000r12p1020r13p1044r14', 'unknown placement p1000'),  # exists in the db, but has no LED
])
def test_bad_frames_give_one_line_errors(tiny_grammar, route, message):
    with pytest.raises(RouteError) as e:
        tiny_grammar.parse('tiny', route)
    assert message in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('route, message', [
    ('p1020r13p1044r14p1021r13', 'route has 0 start holds'),
    ('p1002r12p1020r13p1021r13', 'route has 0 finish holds'),
    ('p1002r12p1003r12p1004r12p1044r14', 'route has 3 start holds'),
    ('p1002r12p1044r14', 'route has 2 holds'),
])
def test_incomplete_routes_fail_validation(tiny_grammar, route, message):
    holds = tiny_grammar.parse('tiny', route)  # a prompt may be partial: parsing accepts it
    with pytest.raises(RouteError, match=message):
        tiny_grammar.validate('tiny', holds)


def test_moonboard_bad_input(tmp_path):
    path = tmp_path / 'mb.json'
    from fixtures import make_moonboard_json
    make_moonboard_json(str(path), n_problems=30)
    run('prepare.py', 'config/moonboard.py', f'--db={path}', f'--data_root={tmp_path}')
    g = Grammar(load_meta(tmp_path / 'moonboard'))
    assert g.parse('moonboard', 'SH:C5,E6/IH:E8/FH:D18') == [('C5', 'start'), ('E6', 'start'), ('E8', 'middle'), ('D18', 'finish')]
    for route, message in [('SH:C5/IH:L8/FH:D18', "unknown hold 'L8'"), ('SH:C5/XX:E8/FH:D18', "role 'XX'"),
                           ('SH:C5/IH:C5/FH:D18', 'C5 appears twice'), ('C5 E8 D18', 'malformed MoonBoard route'),
                           ('SH:C5/IH:C19/FH:D18', "unknown hold 'C19'")]:
        with pytest.raises(RouteError, match=message):
            g.parse('moonboard', route)
    with pytest.raises(RouteError, match='angle 25 is impossible'):
        g.check_angle('moonboard', 25)


def test_angles(tiny_grammar):
    g = tiny_grammar
    assert g.check_angle('tiny', 40) == 40 and g.check_angle('tiny', '45') == 45
    for bad, message in [(42, 'angle 42 is impossible on .* 0..70 in steps of 5'), (75, 'impossible'),
                         ('steep', 'not a number'), (None, 'need an angle')]:
        with pytest.raises(RouteError, match=message):
            g.check_angle('tiny', bad)
    with pytest.raises(RouteError, match="unknown board 'moon'"):
        g.check_angle('moon', 40)


def test_grade_parsing():
    assert parse_grade('V5') == [20, 21] and parse_grade('v0') == [10, 11, 12] and parse_grade('V16') == [33]
    assert parse_grade('6c+') == [21] and parse_grade('7A') == [22] and parse_grade('8C+') == [33]
    assert parse_grade('20') == [20] and parse_grade(20.4) == [20] and parse_grade(' 19.6 ') == [20]
    for bad, message in [('V17', 'out of range'), ('9a', 'out of range'), ('3c', 'out of range'),
                         ('40', 'out of range'), ('5', 'out of range'), ('hard', 'unknown grade')]:
        with pytest.raises(RouteError, match=message):
            parse_grade(bad)
    assert grade_name(20.4) == '6c/V5' and grade_name(None) == '?'
    assert [d for d, _, _ in GRADES] == list(range(10, 34))


def test_meta_pickle_refuses_code(tmp_path):
    import pickle
    evil = tmp_path / 'meta.pkl'
    evil.write_bytes(pickle.dumps({'a': os.getcwd, 'b': [1, 2]}))
    with pytest.raises(InputError, match='only plain values'):
        load_meta(tmp_path)
    with pytest.raises(InputError, match='prepare the data first'):
        load_meta(tmp_path / 'nothing')
