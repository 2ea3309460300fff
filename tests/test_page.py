"""The page in a real browser: headless Chromium driven by Selenium, against serve.py on the tiny
board with tiny models, and on the shared Tension Board 2 database where this machine has it (its
LED bytes checked against the database's own rows). Set BOARDGPT_SCREENSHOT=1 to write the
screenshot to assets/page.png."""
import os
import shutil
import sqlite3
import time
from contextlib import closing

import pytest

import lights
from conftest import ROOT, run, shared
from fixtures import db_wall, grid
from test_serve import ROUTE, SMALL_ROUTE, Server, db_writes, placements, served_models

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError:
    pytest.skip('no selenium (pip install selenium) for the browser test', allow_module_level=True)

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip('no chromium and chromedriver here (apt-get install chromium chromium-driver)', allow_module_level=True)

# a stand-in for Web Bluetooth that records what the page asks for and every byte it writes
FAKE_BLUETOOTH = """
(() => {
  const log = window.__bt = {requests: [], services: [], writes: []};
  const record = async (data) => {
    log.writes.push(Array.from(new Uint8Array(data.buffer || data, data.byteOffset || 0, data.byteLength)));
  };
  const ch = {writeValueWithoutResponse: record, writeValueWithResponse: record};
  const server = {async getPrimaryService(uuid) {
    log.services.push(uuid);
    return {async getCharacteristic(u) { log.characteristic = u; return ch; }};
  }};
  const gatt = {connected: false, async connect() { this.connected = true; return server; }};
  const device = {name: 'Kilter Board#AB12@3', gatt};
  const bluetooth = {async requestDevice(options) { log.requests.push(options); return device; }};
  Object.defineProperty(Navigator.prototype, 'bluetooth', {configurable: true, get: () => bluetooth});
})();
"""
LIT = 'p1002r12p1008r15p1014r13p1020r13p1026r13p1032r13p1038r13p1044r14'  # 8 holds: more than one 20-byte write
NO_BLUETOOTH = "Object.defineProperty(Navigator.prototype, 'bluetooth', {configurable: true, get: () => undefined});"


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    root = served_models(tmp_path_factory)
    s = Server(str(tmp_path_factory.mktemp('pagelog') / 'serve.log'), f'--data_root={root}', f'--gen_dir={root}/gen',
               f'--grade_dir={root}/grade')
    s.db = os.path.join(root, 'tiny.db')
    yield s
    s.stop()


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--window-size=1440,900', f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as e:
        pytest.skip(f"chromium did not start: {str(e).splitlines()[0][:120]}")
    yield driver
    driver.quit()


def wait(what, until, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = until()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f'timed out waiting for {what}')


def css(d, selector):
    return d.find_elements(By.CSS_SELECTOR, selector)


def text(d, element_id):
    return d.find_element(By.ID, element_id).text


def rings(d):
    return [(r.get_attribute('data-hold'), r.get_attribute('data-role')) for r in css(d, '#view .ring')]


def click_hold(d, placement, times=1):
    for _ in range(times):
        before = d.execute_script("return document.getElementById('view').dataset.holds + '|' + S.seq")
        css(d, f'#view .hit[data-hold="{placement}"]')[0].click()
        wait('the board to redraw', lambda before=before: d.execute_script(
            "return document.getElementById('view').dataset.holds + '|' + S.seq") != before)
    settled(d)


def settled(d):
    """Until the page's last route check has come back (the route text matches the holds drawn)."""
    wait('the route check', lambda: d.execute_script(
        "return S.check && S.check.holds.length === S.holds.length && S.route === S.check.route"))


def severe(d):
    return [e for e in d.get_log('browser') if e['level'] == 'SEVERE']


def hits(d):
    """The holds the board view can be clicked at: one target per hold drawn (read at once, as the
    view may be redrawn at any moment)."""
    return set(d.execute_script("return [...document.querySelectorAll('#view .hit')].map((e) => e.dataset.hold)"))


def dots(element):
    """How many hold dots a drawing has (one zero-length stroke each in its holds path)."""
    return element.find_element(By.CSS_SELECTOR, 'path.holds').get_attribute('d').count('h0')


def click_at(d, x, y):
    """A real click where board point (x, y) is drawn on the big view (y runs up the wall)."""
    at = d.execute_script("""
        const svg = document.querySelector('#view svg'), [left, right, bottom, top] = S.view.edges;
        const pt = svg.createSVGPoint();
        pt.x = arguments[0] - left; pt.y = top - arguments[1];
        const p = pt.matrixTransform(svg.getScreenCTM());
        return [p.x, p.y];""", x, y)
    action = ActionBuilder(d)
    action.pointer_action.move_to_location(round(at[0]), round(at[1])).click()
    action.perform()


def bt_writes(hexes):
    return [list(bytes.fromhex(h)) for h in hexes]


def test_generate_pick_edit_grade_complete_share(site, browser, tmp_path):
    d = browser
    d.get(site.url + '/')
    wait('the board', lambda: len(css(d, '#view .hit')) == 47)
    assert [li.text for li in css(d, '#legend li')][:4] == ['start', 'hand', 'finish', 'foot']
    assert d.find_element(By.ID, 'angle').get_attribute('value') == '40'  # the default angle
    Select(d.find_element(By.ID, 'angle')).select_by_value('35')
    Select(d.find_element(By.ID, 'grade')).select_by_value('20')
    Select(d.find_element(By.ID, 'count')).select_by_value('4')

    # Generate, then one thumbnail shown big
    d.find_element(By.ID, 'generate').click()
    thumbs = wait('4 thumbnails', lambda: len(css(d, '.thumb')) == 4 and css(d, '.thumb'))
    assert all('holds' in t.text for t in thumbs) and '4 at 35°' in text(d, 'gallery-meta')
    pick = thumbs[1]
    route, n = pick.get_attribute('title'), len(pick.find_elements(By.CSS_SELECTOR, '.ring'))
    pick.click()
    wait('the picked route', lambda: text(d, 'route') == route)
    assert len(rings(d)) == n and 'picked' in pick.get_attribute('class')
    assert text(d, 'route-meta').startswith('#2: asked 6c / V5')
    assert '✓' in text(d, 'rules') and f'board=tiny&angle=35&size=10&sets=all&route={route}' in d.current_url
    d.find_element(By.ID, 'grade-button').click()
    wait('the grade card', lambda: d.find_element(By.ID, 'grade-card').is_displayed())
    keep = os.environ.get('BOARDGPT_SCREENSHOT') == '1'
    shot = os.path.join(ROOT, 'assets', 'page.png') if keep else str(tmp_path / 'page.png')
    d.save_screenshot(shot)

    # edit by clicking holds: each click cycles none -> start -> hand -> finish -> foot -> none
    d.find_element(By.ID, 'clear').click()
    settled(d)
    assert rings(d) == [] and text(d, 'route') == 'no holds yet'
    click_hold(d, 1002)
    click_hold(d, 1044, 3)
    assert sorted(rings(d)) == [('1002', 'start'), ('1044', 'finish')]
    assert 'routes here have 3..40' in text(d, 'rules') and 'Complete can fill it in' in text(d, 'rules')
    assert not d.find_element(By.ID, 'grade-button').is_enabled()  # an incomplete route is not graded
    click_hold(d, 1003)
    click_hold(d, 1004)
    assert 'route has 3 start holds' in text(d, 'rules')  # the board's rule, as the grammar words it
    click_hold(d, 1004, 4)  # start -> hand -> finish -> foot -> none
    click_hold(d, 1003, 3)
    assert ('1003', 'foot') in rings(d) and len(rings(d)) == 3
    click_hold(d, 1003)
    click_hold(d, 1020, 2)
    assert text(d, 'route') == ROUTE.replace('p1029r13', '') and '✓' in text(d, 'rules')
    click_hold(d, 1029, 2)
    assert text(d, 'route') == ROUTE and text(d, 'hold-count') == '4 holds'

    # grade it: the grade, the three likely grades, the curve over every angle
    d.find_element(By.ID, 'grade-button').click()
    wait('the grade', lambda: d.find_element(By.ID, 'grade-card').is_displayed())
    assert '/ V' in text(d, 'grade-big') and text(d, 'grade-at') == 'at 35°'
    assert len(css(d, '#likely li')) == 3 and all(li.text.endswith('%') for li in css(d, '#likely li'))
    points = css(d, '#curve polyline')[0].get_attribute('points').split()
    assert len(points) == 15 and len(css(d, '#curve .dot.here')) == 1
    assert 'Distance' in text(d, 'nearest') or 'known climb' in text(d, 'nearest')
    assert ' by setter-' in text(d, 'nearest')  # the known climb's setter, named

    # complete a start and a finish into whole routes
    d.find_element(By.ID, 'clear').click()
    settled(d)
    click_hold(d, 1002)
    click_hold(d, 1044, 3)
    d.find_element(By.ID, 'complete').click()
    wait('the completions', lambda: 'completions' in text(d, 'gallery-meta'))
    titles = [t.get_attribute('title') for t in css(d, '.thumb')]
    assert len(titles) == 4 and all('p1002r12' in t and 'p1044r14' in t for t in titles)
    wait('the first completion shown', lambda: text(d, 'route') == titles[0])  # no click
    assert 'picked' in css(d, '.thumb')[0].get_attribute('class') and text(d, 'route-meta').startswith('#1: asked')

    # a shared link reproduces the view
    d.get(f'{site.url}/?board=tiny&angle=45&route={ROUTE}')
    wait('the shared route', lambda: text(d, 'route') == ROUTE)
    assert len(rings(d)) == 4 and d.find_element(By.ID, 'angle').get_attribute('value') == '45'
    d.find_element(By.ID, 'copy').click()
    wait('the copy', lambda: 'copied' in text(d, 'status') or ROUTE in text(d, 'status'))
    assert severe(d) == []
    assert os.path.getsize(shot) > 10_000


def test_generate_shows_first_route(site, browser):
    """Right after Generate, no click: the big board shows the first route, its holds ringed by
    role, with its grade and its nearest known climb, and its thumbnail picked; another
    thumbnail clicked is shown instead."""
    d = browser
    d.get(site.url + '/?board=tiny&angle=30&size=10&sets=all')
    wait('the board', lambda: len(css(d, '#view .hit')) == 47)
    assert rings(d) == [] and text(d, 'nearest') == 'No holds yet.'
    Select(d.find_element(By.ID, 'count')).select_by_value('4')
    d.find_element(By.ID, 'generate').click()
    thumbs = wait('4 thumbnails', lambda: len(css(d, '.thumb')) == 4 and css(d, '.thumb'))
    first = thumbs[0].get_attribute('title')
    wait('the first route, big', lambda: text(d, 'route') == first)
    settled(d)
    drawn = [(r.get_attribute('data-hold'), r.get_attribute('data-role')) for r in thumbs[0].find_elements(
        By.CSS_SELECTOR, '.ring')]
    assert sorted(rings(d)) == sorted(drawn) and len(rings(d)) == len(placements(first)) >= 3
    assert {role for _, role in rings(d)} >= {'start', 'finish'}  # roles, as the page's colours draw them
    colors = d.execute_script('return S.info.role_colors')
    assert all(r.get_attribute('stroke') == colors[r.get_attribute('data-role')] for r in css(d, '#view .ring'))
    meta = text(d, 'route-meta')  # its grade: asked, and the grade model's
    assert meta.startswith('#1: asked ') and ' / V' in meta and 'model says' in meta
    near = text(d, 'nearest')  # its nearest known climb, with its setter
    assert near != 'No holds yet.' and ('Distance' in near or 'known climb' in near) and ' by setter-' in near
    assert [('picked' in t.get_attribute('class')) for t in thumbs] == [True, False, False, False]
    assert '✓' in text(d, 'rules') and f'route={first}' in d.current_url

    thumbs[2].click()  # another one still shows that one
    wait('the third route', lambda: text(d, 'route') == thumbs[2].get_attribute('title'))
    assert [('picked' in t.get_attribute('class')) for t in thumbs] == [False, False, True, False]
    assert text(d, 'route-meta').startswith('#3: asked ')
    assert severe(d) == []


def marks(d):
    """The hold sets' marks on the big board and in the legend: {set id: (board attrs, holds
    marked)}, {set id: (legend attrs, name)}; the attributes are those that draw a mark."""
    return d.execute_script("""
        const look = (e) => ['fill', 'stroke', 'stroke-linecap', 'stroke-width'].map((a) => e.getAttribute(a));
        const board = {}, legend = {};
        for (const e of document.querySelectorAll('#view path.holds[data-set]')) {
          board[e.dataset.set] = [look(e).slice(0, 3), (e.getAttribute('d').match(/M/g) || []).length];
        }
        for (const li of document.querySelectorAll('#legend li.set-key')) {
          legend[li.dataset.set] = [look(li.querySelector('path')).slice(0, 3), li.textContent];
        }
        return [board, legend];""")


def check_sets_told_apart(d, db, size, names, layout_id=1):
    """The wall on screen has the board's two hold sets: each drawn with its own mark at its
    holds, named in the legend with that mark, every role ring drawn over them."""
    board, legend = marks(d)
    ids = sorted(board, key=int)
    assert len(ids) == 2 and len(css(d, '#view path.holds')) == 2
    assert [board[i][1] for i in ids] == [len(db_wall(db, size, {int(i)}, layout_id)) for i in ids]
    assert board[ids[0]][0] != board[ids[1]][0]  # drawn apart
    assert [legend[i] for i in ids] == [[board[i][0], name] for i, name in zip(ids, names)]
    assert [li.text for li in css(d, '#legend li')][4:6] == names  # after the roles
    assert d.execute_script("""  // the route's rings come after (over) every hold mark
        const kids = [...document.querySelector('#view svg').children];
        const last = Math.max(...kids.map((e, i) => (e.matches('path.holds') ? i : -1)));
        return kids.every((e, i) => !e.matches('.ring') || i > last) && kids.some((e) => e.matches('.ring'));""")
    return ids


def test_hold_sets_told_apart(site, browser):
    """A Kilter-like wall of Bolt Ons and Screw Ons: each set's holds drawn with their own mark and
    the set named in the legend; the route's role rings over them. A wall of one set looks as
    before: one kind of dot, no set in the legend."""
    d = browser
    d.get(f'{site.url}/?board=tiny&angle=40&size=10&sets=all&route={ROUTE}')
    wait('the route', lambda: text(d, 'route') == ROUTE and len(rings(d)) == 4)
    assert check_sets_told_apart(d, site.db, 10, ['Bolt Ons', 'Screw Ons']) == ['1', '2']
    thumb = d.execute_script("return drawBoard(S.view, [], false).querySelectorAll('path.holds').length")
    assert thumb == 2  # thumbnails the same

    d.get(f'{site.url}/?board=tiny&angle=40&size=10&sets=1')  # the bolt-ons only: as before
    wait('the bolt-ons', lambda: len(hits(d)) == len(db_wall(site.db, 10, {1})))
    assert marks(d) == [{}, {}] and len(css(d, '#view path.holds')) == 1
    assert dots(d.find_element(By.ID, 'view')) == len(hits(d))
    assert [li.text for li in css(d, '#legend li')][:4] == ['start', 'hand', 'finish', 'foot']
    assert len(css(d, '#legend li')) == 5  # the roles and the click hint
    assert severe(d) == []
    d.execute_script('localStorage.clear()')  # the other tests start on the server's wall


@pytest.fixture(scope='module')
def kilter(tmp_path_factory):
    """The shared Kilter database prepared, served on its 12 x 12 with every set; no models."""
    db = shared('kilter.db')
    root = tmp_path_factory.mktemp('kilter')
    run('prepare.py', 'config/kilter.py', f'--db={db}', f'--data_root={root}')
    s = Server(str(root / 'serve.log'), f'--data_root={root}', f'--gen_dir={root}/none', f'--grade_dir={root}/none',
               config='config/kilter.py')
    s.db = db
    yield s
    s.stop()


def test_hold_sets_kilter(kilter, browser):
    """On the real Kilter layout 1: set 1 'Bolt Ons' and set 20 'Screw Ons' drawn apart and named,
    around a known climb that uses both."""
    d = browser
    with closing(sqlite3.connect(kilter.db)) as con:
        both = {1: set(), 20: set()}
        for p, s in con.execute("SELECT id, set_id FROM placements WHERE layout_id = 1 AND set_id IN (1, 20)"):
            both[s].add(p)
        frames = [f for f, in con.execute("SELECT frames FROM climbs WHERE layout_id = 1 ORDER BY uuid LIMIT 400")]
    route = next(f for f in frames if placements(f) & both[1] and placements(f) & both[20] and
                 placements(f) <= db_wall(kilter.db, 10))
    d.get(f'{kilter.url}/?board=kilter&size=10&sets=all&route={route}')
    wait('the route', lambda: placements(text(d, 'route')) == placements(route))
    assert check_sets_told_apart(d, kilter.db, 10, ['Bolt Ons', 'Screw Ons']) == ['1', '20']
    assert severe(d) == []
    d.execute_script('localStorage.clear()')


def test_light_button(site, browser):
    d = browser
    expected = bt_writes(db_writes(site.db, 10, LIT))  # the configured size's LED rows; the name says @3
    script = d.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument', {'source': FAKE_BLUETOOTH})['identifier']
    try:
        d.get(f'{site.url}/?board=tiny&angle=40&route={LIT}')
        wait('the route', lambda: text(d, 'route') == LIT)
        assert 'Light sends the route' in text(d, 'light-status')
        d.find_element(By.ID, 'light').click()
        wait('the lights', lambda: 'Sent' in text(d, 'light-status'))
        bt = d.execute_script('return window.__bt')
        assert bt['writes'] == expected and len(expected) > 1
        assert bt['requests'] == [{'filters': [{'services': [lights.AURORA_ADVERTISED_UUID]}],
                                   'optionalServices': [lights.AURORA_SERVICE_UUID]}]
        assert bt['services'] == [lights.AURORA_SERVICE_UUID] and bt['characteristic'] == lights.AURORA_WRITE_UUID
        assert text(d, 'light-status') == (f'Sent {sum(map(len, expected))} bytes in {len(expected)} writes to '
                                           f'Kilter Board#AB12@3 (LED protocol v3).')
        d.find_element(By.ID, 'light').click()  # again: the same connection, no second chooser
        wait('the second send', lambda: len(d.execute_script('return window.__bt.writes')) == 2 * len(expected))
        assert len(d.execute_script('return window.__bt.requests')) == 1
    finally:
        d.execute_cdp_cmd('Page.removeScriptToEvaluateOnNewDocument', {'identifier': script})

    script = d.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument', {'source': NO_BLUETOOTH})['identifier']
    try:
        d.get(f'{site.url}/?board=tiny&angle=40&route={ROUTE}')
        wait('the route', lambda: text(d, 'route') == ROUTE)
        assert 'has no Web Bluetooth' in text(d, 'light-status')  # said before anyone clicks
        d.find_element(By.ID, 'light').click()
        assert 'use Chrome or Edge' in text(d, 'light-status')
    finally:
        d.execute_cdp_cmd('Page.removeScriptToEvaluateOnNewDocument', {'identifier': script})
    assert severe(d) == []


def test_wall_picker(site, browser):
    """Pick a wall (the 4 x 5, then its bolt-ons only): only its holds are drawn and clickable, a
    route on screen loses the holds it lacks (saying so), routes come on it, it is kept across
    visits and in the link (the link winning), and Light sends that size's LED bytes."""
    d = browser
    xy = {p: (x, y) for p, _, x, y in grid()}
    small, bolts = {str(p) for p in db_wall(site.db, 11)}, db_wall(site.db, 11, {1})
    d.get(site.url + '/')
    d.execute_script('localStorage.clear()')  # a browser that has never picked a wall
    try:
        d.get(f'{site.url}/?board=tiny&angle=40&route={ROUTE}')
        wait('the route', lambda: text(d, 'route') == ROUTE)
        assert len(hits(d)) == 47 and [e.text for e in css(d, '#sets label')] == ['Bolt Ons', 'Screw Ons']
        options = css(d, '#size option')
        assert [o.text for o in options] == ['6 x 8', '4 x 5', '1 x 2 (too small)'] and not options[2].is_enabled()

        Select(d.find_element(By.ID, 'size')).select_by_value('11')
        wait('the 4 x 5', lambda: hits(d) == small and text(d, 'route') == 'p1020r13')
        assert text(d, 'route-meta') == 'Taken off the route, not on your wall: p1002, p1029, p1044.'
        assert css(d, '#view svg')[0].get_dom_attribute('viewBox') == '0 0 32 40'  # the size's edges: 12..44 x 12..52
        css(d, '#sets input')[1].click()  # no screw-ons
        wait('the bolt-ons', lambda: hits(d) == {str(p) for p in bolts} and text(d, 'route') == 'no holds yet')
        assert 'p1020' in text(d, 'route-meta') and dots(d.find_element(By.ID, 'view')) == len(bolts)
        assert text(d, 'wall-holds') == f'{len(bolts)} holds' and 'size=11&sets=1' in d.current_url

        click_at(d, *xy[1007])  # a bolt-on, clicked where it is drawn: it joins the route
        wait('the hold', lambda: rings(d) == [('1007', 'start')])
        settled(d)
        seq = d.execute_script('return S.seq')
        click_at(d, *xy[1008])  # where a screw-on would be: nothing there to click
        time.sleep(0.3)
        assert rings(d) == [('1007', 'start')] and d.execute_script('return S.seq') == seq

        Select(d.find_element(By.ID, 'count')).select_by_value('4')
        d.find_element(By.ID, 'generate').click()
        thumbs = wait('4 thumbnails', lambda: len(css(d, '.thumb')) == 4 and css(d, '.thumb'))
        for t in thumbs:  # drawn on the wall, with routes on it
            assert placements(t.get_attribute('title')) <= bolts and dots(t) == len(bolts)
        thumbs[2].click()
        wait('the picked route', lambda: text(d, 'route') == thumbs[2].get_attribute('title'))
        assert {int(p) for p, _ in rings(d)} <= bolts and len(rings(d)) == len(placements(text(d, 'route')))

        d.get(site.url + '/')  # a later visit, no link: this browser's wall
        wait('the kept wall', lambda: hits(d) == {str(p) for p in bolts})
        assert d.find_element(By.ID, 'size').get_attribute('value') == '11'
        assert [e.is_selected() for e in css(d, '#sets input')] == [True, False]
        wait('the link', lambda: 'size=11&sets=1' in d.current_url)
        d.get(f'{site.url}/?board=tiny&size=10&sets=all')  # a shared link wins, and is not kept
        wait('the linked wall', lambda: len(hits(d)) == 47)
        d.get(site.url + '/')
        wait('the kept wall', lambda: hits(d) == {str(p) for p in bolts})

        script = d.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument', {'source': FAKE_BLUETOOTH})['identifier']
        try:
            d.get(f'{site.url}/?board=tiny&angle=40&size=11&sets=1&route={SMALL_ROUTE}')
            wait('the route', lambda: text(d, 'route') == SMALL_ROUTE)
            d.find_element(By.ID, 'light').click()
            wait('the lights', lambda: 'Sent' in text(d, 'light-status'))
            sent = d.execute_script('return window.__bt.writes')
            assert sent == bt_writes(db_writes(site.db, 11, SMALL_ROUTE))
            assert sent != bt_writes(db_writes(site.db, 10, SMALL_ROUTE))  # the 6 x 8 numbers its LEDs otherwise
        finally:
            d.execute_cdp_cmd('Page.removeScriptToEvaluateOnNewDocument', {'identifier': script})
        assert severe(d) == []
    finally:
        d.execute_script('localStorage.clear()')  # the other tests start on the server's wall


@pytest.fixture(scope='module')
def tension(tmp_path_factory):
    """The shared Tension Board 2 database prepared, served on its 12 high x 8 wide; no models (Light
    needs none)."""
    db = shared('tension.db')
    root = tmp_path_factory.mktemp('tension')
    run('prepare.py', 'config/tension.py', f'--db={db}', f'--data_root={root}')
    s = Server(str(root / 'serve.log'), f'--data_root={root}', f'--gen_dir={root}/none', f'--grade_dir={root}/none',
               '--size=8', config='config/tension.py')
    s.db = db
    yield s
    s.stop()


def test_light_tension(tension, browser):
    """Tension on --size=8: the page draws that size's holds, and Light writes the bytes of
    tension.db's own rows (placement -> hole -> leds.position of product_size_id 8, colours from
    placement_roles.led_color), not the 12 x 12's."""
    d = browser
    on = db_wall(tension.db, 8, layout_id=11)
    with closing(sqlite3.connect(tension.db)) as con:
        climbs = [f for f, in con.execute("SELECT frames FROM climbs WHERE layout_id = 11 ORDER BY uuid")]
    route = next(f for f in climbs if placements(f) <= on and len(placements(f)) >= 8)  # fits; several writes
    script = d.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument', {'source': FAKE_BLUETOOTH})['identifier']
    try:
        d.get(f'{tension.url}/?board=tension&route={route}')
        wait('the route', lambda: placements(text(d, 'route')) == placements(route))
        assert hits(d) == {str(p) for p in on} and text(d, 'wall-holds') == f'{len(on)} holds'
        assert 'size=8&sets=all' in d.current_url
        d.find_element(By.ID, 'light').click()
        wait('the lights', lambda: 'Sent' in text(d, 'light-status'))
        shown, sent = text(d, 'route'), d.execute_script('return window.__bt.writes')
        assert len(sent) > 1 and sent == bt_writes(db_writes(tension.db, 8, shown, layout_id=11))
        assert sent != bt_writes(db_writes(tension.db, 6, shown, layout_id=11))
    finally:
        d.execute_cdp_cmd('Page.removeScriptToEvaluateOnNewDocument', {'identifier': script})
    assert severe(d) == []
