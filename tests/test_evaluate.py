"""evaluate.py end to end on the tiny board: both models trained for a few iterations, one report."""
import json
import re
import shutil
import sqlite3
import xml.etree.ElementTree as ET

import pytest

from conftest import run


@pytest.fixture(scope='module')
def models(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp('models')
    root = tiny['root']
    run('train_gen.py', 'config/tiny.py', f'--data_root={root}', f'--out_dir={out}/gen', '--max_iters=20')
    run('train_grade.py', 'config/tiny.py', f'--data_root={root}', f'--out_dir={out}/grade', '--max_iters=20')
    return out


@pytest.fixture(scope='module')
def tiny_report(tiny, models, tmp_path_factory):
    """One report on the tiny board, run once for the tests that read it: (the folder holding report/, the run).
    Absolute checkpoint paths in a long temporary folder, as a user's might be."""
    tmp_path = tmp_path_factory.mktemp('report')
    root = tiny['root']
    (tmp_path / 'gen').symlink_to(models / 'gen')
    (tmp_path / 'grade').symlink_to(models / 'grade')
    proc = run('evaluate.py', 'config/tiny.py', f'--data_root={root}', f'--gen_dir={tmp_path}/gen',
               f'--grade_dir={tmp_path}/grade', f'--report_dir={tmp_path}/report', '--num_samples=60', '--sample_batch=25')
    return tmp_path, proc


def test_report_end_to_end(tiny_report):
    tmp_path, proc = tiny_report
    report = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert report['generator']['val_loss_per_route'] > report['generator']['val_loss_per_token'] > 0
    for sampler in ('gpt', 'gpt, guided', 'frequency baseline'):
        g = report['generation'][sampler]
        assert g['valid'] == 1.0
        m = g['boards']['tiny']
        assert m['samples'] == 60 and 0 < m['distinct'] <= 1 and 0 <= m['copies'] <= 1
        for key in ('nearest_jaccard', 'js_hold_usage', 'js_role_counts', 'js_hold_counts', 'grade_mae', 'frechet_embedding'):
            assert m[key] == m[key], key  # present and not NaN
    grade = report['grade']['tiny']
    assert grade['model']['all']['n'] == grade['ridge']['all']['n'] > 0
    assert sum(sum(row.values()) for row in grade['v_confusion'].values()) == grade['model']['all']['n']
    html = (tmp_path / 'report' / 'report.html').read_text()
    assert 'http' not in html.replace('http://www.w3.org/2000/svg', '')  # self-contained
    assert html.count('<svg') > 5
    # the training curves: the generator's and the grade model's, each with the checkpoint kept marked
    curves = html.split('<h2>Training curves</h2>')[1].split('<h2>')[0]
    assert curves.count('class="curve-card"') == 2 and curves.count('class="kept"') == 2
    assert curves.count('class="curve"') == 3 + 3  # batch, train, val loss; val loss, val MAE, train MAE
    for part in curves.split('<svg')[1:]:
        ET.fromstring('<svg' + part.split('</svg>')[0] + '</svg>')
    for part in html.split('<svg')[1:3]:  # the inline drawings are well-formed SVG
        ET.fromstring('<svg' + part.split('</svg>')[0] + '</svg>')
    assert 'wrote' in proc.stdout
    sheet = ET.parse(tmp_path / 'report' / 'sheet_tiny.svg').getroot()  # a standalone SVG document
    assert len([g for g in sheet.iter('{http://www.w3.org/2000/svg}g') if g.get('class') == 'route']) >= 2
    headline = (tmp_path / 'report' / 'headline.md').read_text()  # the markdown summary, also printed
    assert headline in proc.stdout
    assert [line.split(' | ')[0] for line in headline.splitlines() if ' | tiny | ' in line][:3] == \
        ['| gpt', '| gpt, guided', '| frequency baseline']
    guided = report['generation']['gpt, guided']
    assert guided['valid'] == 1.0 and guided['boards']['tiny']['copies'] == 0  # known climbs are never offered
    assert guided['drawn'] >= 8 * 60 and 0 <= guided['copies'] <= guided['drawn']
    assert guided['drawn'] == 8 * (60 + guided['redrawn'])  # a route drawn again is drawn best_of times again
    # the judge's reach: prompts far above the highest grade it gives a real route are counted apart
    m = guided['boards']['tiny']
    assert 0 <= m['judge_ceiling_v'] <= 16 and 0 <= m['beyond_judge'] <= 60
    if m['beyond_judge']:
        assert 'the highest grade the judge gives any real test route' in headline
    assert 'Expected calibration error of the grade distribution (test, likeliest Font grade): tiny 0.' in headline
    assert 0 <= grade['reliability']['ece'] <= 1 and sum(r[2] for r in grade['reliability']['table']) == grade['model']['all']['n']
    assert 'reliability of the likeliest Font grade' in html
    assert 'not independent' in headline  # no judge trained here: the report says the guide judged itself
    mae = report['generation']['gpt']['boards']['tiny']['grade_mae']
    assert "| gpt | tiny | 100.0% | " in headline and f" | {mae:.2f} | " in headline
    assert f"| model, all rows | tiny | {grade['model']['all']['n']:,} | {grade['model']['all']['mae']:.2f} |" in headline


def test_report_page_layout(tiny_report):
    """What keeps the page readable, in its markup: checkpoints named relative to the one folder they share
    (named once), each training curve under its own title, every table in a box of its own that scrolls."""
    tmp_path, _ = tiny_report
    html = (tmp_path / 'report' / 'report.html').read_text()
    text = re.sub(r'<[^>]+>', ' ', html.split('</style>')[1])
    assert text.count(str(tmp_path)) == 1 and 'gen/best.pt' in text and 'grade/best.pt' in text
    curves = html.split('<h2>Training curves</h2>')[1].split('<h2>')[0]
    assert re.findall(r'<div class="curve-card"><h4>([^<]*)</h4><svg', curves) == ['generator: gen', 'guide: grade']
    assert html.count('<table>') == html.count('<div class="table-box"><table>') > 5
    assert re.search(r'\.table-box\{[^}]*overflow-x:auto', html)
    calibration = html.split('calibration: mean prediction per true grade</h4>')[1]
    assert calibration.startswith('<div class="table-box"><table>')


# the page as a browser lays it out: the boxes of what must not run off the page or into each other
LAYOUT_JS = """const r = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
return {inner: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth,  // less the scrollbar
        titles: [...document.querySelectorAll('.curve-card h4')].map(r),
        boxes: [...document.querySelectorAll('table')].map(t => [t.parentElement.className,
            getComputedStyle(t.parentElement).overflowX, r(t.parentElement)[2]])};"""


def test_report_in_a_browser(tiny_report):
    """In headless Chromium 1300 px wide, and 800 (where the grade panels must wrap): nothing runs off the
    right edge, each table's box stays on the page, and curve titles side by side keep apart."""
    webdriver = pytest.importorskip('selenium.webdriver')
    chromium, driver = shutil.which('chromium') or shutil.which('chromium-browser'), shutil.which('chromedriver')
    if not (chromium and driver):
        pytest.skip('no chromium and chromedriver')
    tmp_path, _ = tiny_report
    options = webdriver.ChromeOptions()
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu'):
        options.add_argument(arg)
    options.binary_location = chromium
    browser = webdriver.Chrome(service=webdriver.ChromeService(driver), options=options)
    try:
        browser.get((tmp_path / 'report' / 'report.html').as_uri())
        for width in (1300, 800):
            browser.set_window_size(width, 1000)
            page = browser.execute_script(LAYOUT_JS)
            assert page['scroll'] <= page['inner'], width
            assert page['boxes'] and all(c == 'table-box' and o == 'auto' and right <= page['inner']
                                         for c, o, right in page['boxes']), (width, page['boxes'])
            titles = page['titles']
            assert len(titles) == 2
            for i, a in enumerate(titles):
                for b in titles[i + 1:]:
                    if a[1] < b[3] and b[1] < a[3]:  # on one line: a gap between them
                        assert a[2] + 8 <= b[0] or b[2] + 8 <= a[0], (width, titles)
    finally:
        browser.quit()


def test_report_on_a_wall(tiny, models, tmp_path):
    """On the 4 x 5 wall: prompts and realism from the real test routes that fit it, every
    generated route on it (checked against the database), its val routes scored with the mask."""
    root = tiny['root']
    proc = run('evaluate.py', 'config/tiny.py', f'--data_root={root}', f'--gen_dir={models}/gen', '--size=4 x 5',
               f'--grade_dir={models}/grade', f'--report_dir={tmp_path}/report', '--num_samples=40')
    report = json.loads((tmp_path / 'report' / 'report.json').read_text())
    con = sqlite3.connect(f"file:{tiny['db']}?mode=ro", uri=True)
    on = {p for (p,) in con.execute("SELECT p.id FROM placements p JOIN leds l ON l.hole_id = p.hole_id "
                                    "WHERE p.layout_id = 1 AND l.product_size_id = 11")}
    wall = report['wall']
    assert wall['title'] == 'Tiny Layout 4 x 5' and wall['holds'] == len(on)
    assert wall['val_loss_per_route_masked'] <= wall['val_loss_per_route']  # the mask only takes probability off the wall
    for name in ('gpt', 'gpt, guided', 'frequency baseline'):
        m = report['generation'][name]['boards']['tiny']
        assert m['samples'] == 40 and m['on_wall'] == 1.0 and 0 < m['real_routes']
    sheet = ET.parse(tmp_path / 'report' / 'sheet_tiny.svg').getroot()
    paths = [e for e in sheet.iter('{http://www.w3.org/2000/svg}path') if e.get('class') == 'holds']
    assert paths and all(e.get('d').count('h0') == len(on) for e in paths)  # the wall's holds only, on every board
    rings = [e for e in sheet.iter('{http://www.w3.org/2000/svg}circle') if e.get('class') == 'ring']
    assert rings and all(int(e.get('data-hold')) in on for e in rings)
    assert 'grade' not in report and 'On the wall Tiny Layout 4 x 5 (20 holds)' in proc.stdout
