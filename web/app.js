'use strict';
// boardgpt's page. Everything it knows about boards, grades, colours and the route grammar comes
// from serve.py's JSON API (/api/board, /api/check, ...): the page draws and asks, Python decides.

const SVG = 'http://www.w3.org/2000/svg';
const LABELS = {middle: 'hand'};  // what setters call a middle hold
const NO_BLUETOOTH = 'This browser has no Web Bluetooth (Safari on iPhone and iPad, Firefox), so it cannot ' +
  'light the board: use Chrome or Edge on a computer or on Android.';
const $ = (id) => document.getElementById(id);
const S = {info: null, board: null, wall: null, view: null, holds: [], route: '', check: null, routes: [], picked: -1,
  gallery: '', seq: 0, busy: false, link: null};

// ---------------------------------------------------------------------------------------------
// small helpers

async function api(path, body) {
  const init = body === undefined ? {} :
    {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)};
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON: reported below by status */ }
  if (!res.ok) throw new Error((data && data.error) || `${path} answered HTTP ${res.status}`);
  return data;
}

function node(tag, attrs = {}, parent = null, text = '') {
  const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function say(id, text, kind = '') {
  const e = $(id);
  e.dataset.base = e.dataset.base || e.className;  // its own class, then the kind of message
  e.textContent = text;
  e.className = `${e.dataset.base} ${kind}`;
}

const gradeName = (g) => (g ? `${g.font} / ${g.v}` : '?');
const angleNow = () => (S.board.angle_known ? Number($('angle').value) : null);
const gradeNow = () => ($('grade').value === '' ? null : Number($('grade').value));
const fmt = (v) => Math.round(v * 100) / 100;

// ---------------------------------------------------------------------------------------------
// the board drawing, as draw.py draws it: dark board, faint hold dots, open rings by role

function drawBoard(b, holds, big) {
  const [left, right, bottom, top] = b.edges, p = b.pitch, style = S.info.style, G = style.geometry;
  const gutter = b.format === 'moonboard' ? G.gutter * p : 0;  // room for column letters and row numbers
  const w = right - left + gutter, h = top - bottom + gutter;
  const X = (x) => fmt(x - left + gutter), Y = (y) => fmt(top - y + gutter);  // y runs up the wall
  const svg = node('svg:svg', {viewBox: `0 0 ${fmt(w)} ${fmt(h)}`, class: big ? 'board-svg' : 'thumb-svg',
    role: 'img', 'aria-label': `${b.title}, ${holds.length} holds`});
  node('svg:rect', {class: 'board', width: fmt(w), height: fmt(h), rx: fmt(G.corner * p), fill: style.board}, svg);
  if (gutter) {
    const size = fmt(G.label * p), seen = new Set();
    for (const [name, x, y] of b.grid) {  // the whole grid's letters and numbers, whatever the wall lacks
      const col = String(name).replace(/\d+$/, '');
      if (!seen.has(col)) node('svg:text', {x: X(x), y: fmt(0.6 * gutter), 'font-size': size, fill: style.labels,
        'text-anchor': 'middle'}, svg, col);
      if (!seen.has(y)) node('svg:text', {x: fmt(0.5 * gutter), y: Y(y), 'font-size': size, fill: style.labels,
        'text-anchor': 'middle', 'dominant-baseline': 'central'}, svg, String(y));
      seen.add(col); seen.add(y);
    }
  }
  const sets = b.shownSets || [];
  if (sets.length < 2) {  // one set (or none known): every hold alike
    const d = b.holds.map(([, x, y]) => `M${X(x)} ${Y(y)}h0`).join('');  // one path: zero-length round strokes
    node('svg:path', {class: 'holds', d, stroke: style.holds, 'stroke-opacity': 0.55, 'stroke-width': fmt(2 * G.hold * p),
      'stroke-linecap': 'round'}, svg);
  } else {  // a mark per set, so a climber can find them on the wall; all inside a ring's hole, under the rings
    for (const s of sets) {
      const pts = b.holds.filter(([name]) => b.setOf.get(String(name)) === String(s.id)).map(([, x, y]) => [X(x), Y(y)]);
      node('svg:path', {class: 'holds', 'data-set': s.id, ...setMark(s.mark, pts, G.hold * p)}, svg);
    }
    const ids = new Set(sets.map((s) => String(s.id)));  // a hold the data gives no set: a plain faint dot
    const rest = b.holds.filter(([name]) => !ids.has(b.setOf.get(String(name)))).map(([, x, y]) => [X(x), Y(y)]);
    if (rest.length) node('svg:path', {class: 'holds', ...setMark({shape: 'dot', color: style.holds}, rest, G.hold * p)}, svg);
  }
  if (big) {  // invisible targets, a little larger than a ring, so holds are easy to hit
    for (const [name, x, y] of b.holds) {
      node('svg:circle', {class: 'hit', cx: X(x), cy: Y(y), r: fmt(0.5 * p), 'data-hold': name}, svg);
    }
  }
  const xy = new Map(b.holds.map(([name, x, y]) => [String(name), [x, y]]));
  for (const [name, role] of holds) {
    const [x, y] = xy.get(String(name));
    node('svg:circle', {class: 'ring', cx: X(x), cy: Y(y), r: fmt(G.ring * p), fill: 'none',
      stroke: S.info.role_colors[role], 'stroke-width': fmt((big ? G.stroke : 2 * G.stroke) * p), 'data-role': role,
      'data-hold': name, 'pointer-events': 'none'}, svg);
  }
  return svg;
}

// how each hold set is marked where a wall has several, by its place in the board's list (so a set keeps
// its look on every wall): shapes as well as shades, as greys alone are hard to tell apart on a dark
// board, and no hue of the role rings (green, cyan, magenta, orange)
const SET_MARKS = [
  {shape: 'dot', color: '#bdbdbd'},  // the first set (Kilter's Bolt Ons) as a single-set wall draws every hold
  {shape: 'ring', color: '#e6e6e6'},  // hollow: on Kilter the small screw-ons
  {shape: 'square', color: '#8fa3bf'},
  {shape: 'diamond', color: '#c9b98f'},
];

function setMark(mark, pts, r) {  // one path's attributes for marks of radius about r at pts ([x, y] pairs)
  const {shape, color} = mark;
  if (shape === 'ring') {  // two half-circle arcs per hold
    const w = 0.45 * r, a = fmt(r - w / 2);
    const d = pts.map(([x, y]) => `M${fmt(x - a)} ${y}a${a} ${a} 0 1 0 ${fmt(2 * a)} 0a${a} ${a} 0 1 0 ${fmt(-2 * a)} 0`);
    return {d: d.join(''), fill: 'none', stroke: color, 'stroke-opacity': 0.8, 'stroke-width': fmt(w)};
  }
  if (shape === 'diamond') {
    const k = fmt(1.25 * r);
    const d = pts.map(([x, y]) => `M${x} ${fmt(y - k)}l${k} ${k}l${-k} ${k}l${-k} ${-k}z`);
    return {d: d.join(''), fill: color, 'fill-opacity': 0.7, stroke: 'none'};
  }
  const d = pts.map(([x, y]) => `M${x} ${y}h0`).join('');  // zero-length strokes, round or square
  return {d, fill: 'none', stroke: color, 'stroke-opacity': shape === 'dot' ? 0.55 : 0.75,
    'stroke-width': fmt((shape === 'dot' ? 2 : 1.7) * r), 'stroke-linecap': shape === 'dot' ? 'round' : 'square'};
}

function drawMain() {
  const view = $('view');
  view.replaceChildren(drawBoard(S.view, S.holds, true));
  view.dataset.holds = S.holds.length;
}

function drawLegend() {
  const legend = $('legend');
  legend.replaceChildren();
  for (const role of S.board.roles) {
    const li = node('li', {}, legend);
    const svg = node('svg:svg', {viewBox: '0 0 16 16', width: 16, height: 16}, li);
    node('svg:circle', {cx: 8, cy: 8, r: 5.5, fill: 'none', stroke: S.info.role_colors[role], 'stroke-width': 2.5}, svg);
    node('span', {}, li, LABELS[role] || role);
  }
  const sets = (S.wall && S.view.shownSets) || [];
  for (const s of sets.length > 1 ? sets : []) {  // a wall of several sets: how each is marked
    const li = node('li', {class: 'set-key', 'data-set': s.id}, legend);
    const svg = node('svg:svg', {viewBox: '0 0 16 16', width: 16, height: 16}, li);
    node('svg:rect', {width: 16, height: 16, rx: 3, fill: S.info.style.board}, svg);  // on the board's own dark
    node('svg:path', setMark(s.mark, [[8, 8]], 4), svg);
    node('span', {}, li, s.name);
  }
  const cycle = ['none', ...S.board.roles.map((r) => LABELS[r] || r), 'none'].join(' → ');
  node('li', {class: 'muted'}, legend, `Click a hold: ${cycle}`);
}

// ---------------------------------------------------------------------------------------------
// editing: a click cycles a hold's role; the server canonicalises the route and says what rule it breaks

function cycle(name) {
  const roles = [null, ...S.board.roles];
  const i = S.holds.findIndex(([p]) => String(p) === name);
  const next = roles[(roles.indexOf(i < 0 ? null : S.holds[i][1]) + 1) % roles.length];
  const holds = S.holds.filter(([p]) => String(p) !== name);
  const placement = S.view.holds.find(([p]) => String(p) === name)[0];  // only the wall's holds have targets
  if (next) holds.push([placement, next]);
  S.picked = -1;
  markPicked();
  setHolds(holds);
}

async function setHolds(holds, note = '') {
  S.holds = holds;
  $('grade-card').hidden = true;  // a grade belongs to the route it was asked for
  $('route-meta').textContent = note;  // where the route came from, until the next edit
  $('route-meta').hidden = !note;
  drawMain();
  S.check = null;  // until the server has read the new route, nothing acts on the old one
  enable();
  const seq = ++S.seq;
  try {
    const c = await api('/api/check', {board: S.board.name, holds, angle: angleNow(), ...wallBody()});
    if (seq !== S.seq) return;  // a later edit's answer is coming
    S.check = c;
    S.route = c.route;
    S.holds = c.holds;
    showRoute();
  } catch (e) {
    say('status', e.message, 'error');
  }
}

function showRoute() {
  const c = S.check, n = S.holds.length;
  $('route').textContent = S.route || 'no holds yet';
  $('hold-count').textContent = n ? `${n} hold${n === 1 ? '' : 's'}` : '';
  if (!n) say('rules', 'Click holds on the board to set a route.', 'muted');
  else if (c.complete) say('rules', '✓ A complete route: grade it, or light it.', 'ok');
  else say('rules', c.problem + (c.can_complete ? ' (Complete can fill it in.)' : ''), 'warn');
  showNearest(c.nearest);
  syncUrl();
  enable();
}

function showNearest(near) {
  if (!near) return say('nearest', 'No holds yet.', 'muted');
  const grade = near.grade ? `, ${gradeName(near.grade)} at ${angleNow()}°` : '';
  const what = near.distance === 0 ? 'This is a known climb' : `Distance ${near.distance.toFixed(2)} (0 = same holds, 1 = none shared)`;
  const setter = near.setter ? ` by ${near.setter}` : '';  // boardsesh asks that its climbs credit their setter
  // a known climb graded here: its logged grade against the model's 80% range for its holds
  const verdict = near.verdict ? ` Its logged grade is ${near.verdict} for these holds (the model: ` +
    `${gradeName(near.band[0])} to ${gradeName(near.band[1])}).` : '';
  say('nearest', `${near.name || near.climb_id}${setter}${grade}. ${what}.${verdict}`, near.distance === 0 ? 'warn' : '');
}

function enable() {
  const m = S.info.models, c = S.check, n = S.holds.length;
  $('generate').disabled = S.busy || !m.generator;
  $('grade-button').disabled = S.busy || !m.grader || !c || !c.complete;
  $('complete').disabled = S.busy || !m.generator || !n || !c || !c.can_complete;
  $('light').disabled = S.busy || !n || !S.view.lights;
  for (const id of ['copy', 'share', 'clear']) $(id).disabled = !n;
  for (const e of document.querySelectorAll('#size, #sets input')) e.disabled = S.busy;  // routes come for one wall
}

function syncUrl() {
  const q = new URLSearchParams({board: S.board.name});
  if (S.board.angle_known) q.set('angle', $('angle').value);
  q.set('size', S.wall.size);
  q.set('sets', S.wall.sets ? S.wall.sets.join(',') : 'all');
  if (S.route) q.set('route', S.route);
  history.replaceState(null, '', `${location.pathname}?${q}`);
}

// ---------------------------------------------------------------------------------------------
// the models: generate, complete, grade

async function withModel(label, work) {
  S.busy = true;
  enable();
  say('status', label, 'busy');
  try {
    await work();
  } catch (e) {
    say('status', e.message, 'error');
  } finally {
    S.busy = false;
    enable();
  }
}

function showRoutes(routes, title) {
  S.routes = routes;
  S.picked = -1;
  S.gallery = title;
  $('gallery-meta').textContent = routes.length ? `${title} · click one to see it big` : '';
  const thumbs = $('thumbs');
  thumbs.replaceChildren();
  routes.forEach((r, i) => {
    const b = node('button', {class: 'thumb', type: 'button', 'data-index': i, title: r.route}, thumbs);
    b.appendChild(drawBoard(S.view, r.holds, false));
    const grade = (r.predicted || r.asked || {name: '?'}).name;  // the model's opinion where there is one
    node('span', {class: 'thumb-caption'}, b, `${grade} · ${r.holds.length} holds${r.copy ? ' · known' : ''}`);
    b.addEventListener('click', () => pick(i));
  });
}

function markPicked() {
  for (const t of document.querySelectorAll('.thumb')) t.classList.toggle('picked', Number(t.dataset.index) === S.picked);
}

function pick(i) {
  const r = S.routes[i];
  S.picked = i;
  markPicked();
  const model = r.predicted ? ` · model says ${gradeName(r.predicted)}` : '';
  return setHolds(r.holds, `#${i + 1}: asked ${gradeName(r.asked)}${model}`);
}

function generate(event) {
  event.preventDefault();
  const count = Number($('count').value);
  return withModel('Generating…', async () => {
    const r = await api('/api/generate', {board: S.board.name, angle: angleNow(), grade: gradeNow(), count,
      ...wallBody()});
    const where = S.board.angle_known ? `at ${r.angle}°` : 'angle unknown';
    showRoutes(r.routes, `${r.routes.length} ${where}, ${$('grade').selectedOptions[0].textContent}`);
    say('status', `${r.routes.length} routes (seed ${r.seed}, best of ${r.best_of}).`, 'ok');
    if (r.routes.length) await pick(0);  // the first at once, big, rather than an empty board until a click
  });
}

function complete() {
  return withModel('Completing…', async () => {
    const r = await api('/api/complete', {board: S.board.name, angle: angleNow(), grade: gradeNow(),
      route: S.route, count: Number($('count').value), ...wallBody()});
    showRoutes(r.routes, `${r.routes.length} completions of your ${S.holds.length} holds`);
    say('status', `${r.routes.length} completions, each keeps your ${S.holds.length} holds.`, 'ok');
    if (r.routes.length) await pick(0);  // as after Generate: the first shown big
  });
}

function grade() {
  return withModel('Grading…', async () => {
    const g = await api('/api/grade', {board: S.board.name, route: S.route, angle: angleNow(), ...wallBody()});
    $('grade-card').hidden = false;
    $('grade-big').textContent = gradeName(g);
    $('grade-num').textContent = `difficulty ${g.difficulty.toFixed(1)}`;
    $('grade-at').textContent = g.angle === null ? 'angle unknown' : `at ${g.angle}°`;
    const likely = $('likely');
    likely.replaceChildren();
    for (const l of g.likely) {
      const li = node('li', {}, likely);
      node('span', {class: 'likely-name'}, li, gradeName(l));
      const bar = node('span', {class: 'fill'}, node('span', {class: 'track'}, li));
      bar.style.width = `${Math.max(1, l.p * 100)}%`;  // CSSOM, which the page's CSP allows (style="" it would not)
      node('span', {class: 'likely-p'}, li, `${Math.round(l.p * 100)}%`);
    }
    drawCurve(g.curve, g.angle);
    showNearest(g.nearest);
    say('status', `Graded ${gradeName(g)}.`, 'ok');
  });
}

function drawCurve(curve, angle) {
  const box = $('curve');
  box.replaceChildren();
  const pts = curve.filter((c) => c.angle !== null);
  if (pts.length < 2) return node('p', {class: 'muted'}, box, 'This board\'s data has no angles: one grade fits all.');
  const W = 320, H = 150, L = 44, R = 10, T = 10, B = 24;
  const ds = pts.map((c) => c.difficulty), as = pts.map((c) => c.angle);
  const lo = Math.floor(Math.min(...ds)) - 1, hi = Math.ceil(Math.max(...ds)) + 1;
  const a0 = Math.min(...as), a1 = Math.max(...as);
  const x = (a) => fmt(L + (a - a0) / (a1 - a0) * (W - L - R)), y = (d) => fmt(T + (hi - d) / (hi - lo) * (H - T - B));
  const svg = node('svg:svg', {viewBox: `0 0 ${W} ${H}`, class: 'curve-svg', role: 'img',
    'aria-label': 'predicted grade at every angle'}, box);
  const font = new Map(S.info.grades.map((g) => [g.difficulty, g.font]));
  const step = Math.max(1, Math.ceil((hi - lo) / 5));
  for (let d = lo; d <= hi; d += step) {
    node('svg:line', {x1: L, x2: W - R, y1: y(d), y2: y(d), class: 'grid'}, svg);
    if (font.has(d)) node('svg:text', {x: L - 6, y: y(d), class: 'tick', 'text-anchor': 'end', 'dominant-baseline': 'central'}, svg, font.get(d));
  }
  for (const a of as) {
    if (a % 10 === 0) node('svg:text', {x: x(a), y: H - 6, class: 'tick', 'text-anchor': 'middle'}, svg, `${a}°`);
  }
  node('svg:polyline', {points: pts.map((c) => `${x(c.angle)},${y(c.difficulty)}`).join(' '), class: 'line'}, svg);
  for (const c of pts) {
    const here = c.angle === angle;
    const dot = node('svg:circle', {cx: x(c.angle), cy: y(c.difficulty), r: here ? 4.5 : 2.5, class: here ? 'dot here' : 'dot'}, svg);
    node('svg:title', {}, dot, `${c.angle}°: ${gradeName(c)} (${c.difficulty.toFixed(1)})`);
  }
}

// ---------------------------------------------------------------------------------------------
// lights: Web Bluetooth, only on the user's click; the bytes come from the server (lights.py)

async function light() {
  if (!navigator.bluetooth) return say('light-status', NO_BLUETOOTH, 'warn');
  const b = S.board, bt = S.info.bluetooth[b.format];
  try {
    let link = S.link;
    if (!link || link.board !== b.name || !link.device.gatt.connected) {
      say('light-status', 'Choose your board in the browser\'s list…', 'busy');
      const device = await navigator.bluetooth.requestDevice({filters: bt.filters, optionalServices: bt.optional});
      say('light-status', `Connecting to ${device.name || 'the board'}…`, 'busy');
      const server = await device.gatt.connect();
      link = S.link = {board: b.name, device, ...(await writer(server, bt.writes))};
      say('light-status', `Connected to ${device.name || 'the board'}.`, 'ok');
    }
    const r = await api('/api/lights', {board: b.name, route: S.route, device: link.device.name || '', ...wallBody()});
    for (const hex of r.writes) {
      const bytes = new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
      if (link.response) await link.ch.writeValueWithResponse(bytes);
      else await link.ch.writeValueWithoutResponse(bytes);
    }
    const level = r.api ? ` (LED protocol v${r.api})` : '';
    say('light-status', `Sent ${r.bytes} bytes in ${r.writes.length} writes to ${link.device.name || 'the board'}${level}.`, 'ok');
  } catch (e) {
    const why = e.name === 'NotFoundError' ? 'no board was chosen, or none is in range' : e.message;
    say('light-status', `Not sent: ${why}.`, 'error');
  }
}

async function writer(server, writes) {  // the first of the board's known LED characteristics it has
  let last = null;
  for (const w of writes) {
    try {
      const service = await server.getPrimaryService(w.service);
      return {ch: await service.getCharacteristic(w.characteristic), response: w.response};
    } catch (e) { last = e; }
  }
  throw new Error(`the board offers no LED service this page knows (${last ? last.message : 'none'})`);
}

function lightsNote() {
  if (!S.view.lights) return say('light-status', `${S.view.title} has no LED map in its data, so it cannot be lit from here.`, 'muted');
  if (!window.isSecureContext) return say('light-status', 'Bluetooth needs this page on localhost or over HTTPS.', 'warn');
  if (!navigator.bluetooth) return say('light-status', NO_BLUETOOTH, 'warn');
  say('light-status', 'Light sends the route to the board\'s LEDs over Bluetooth (Chrome, Edge, Android).', 'muted');
}

// ---------------------------------------------------------------------------------------------
// the climber's wall: a size of the board and the hold sets mounted on it. Chosen once and kept, in
// the address bar (so a shared link reproduces it) and in this browser's storage; the link wins

const wallBody = (w = S.wall) => ({size: w.size, sets: w.sets || []});  // [] asks for every set
const holdName = (p) => (S.board.format === 'aurora' ? `p${p}` : String(p));
const onWall = ([p]) => S.onWall.has(String(p));
const storeKey = (b) => `boardgpt:wall:${S.info.dataset}:${b.name}`;

function findItem(items, text) {  // a size or set by id or name, as the server takes them
  const t = String(text).trim().toLowerCase();
  return items.find((it) => String(it.id).toLowerCase() === t || String(it.name).trim().toLowerCase() === t);
}

function wallOf(b, size, sets) {  // ids or names (null: the server's wall's) -> {size, sets}, or null if one is unknown
  const s = size === null || size === undefined || size === '' ? b.wall.size : (findItem(b.sizes, size) || {}).id;
  let picked = b.wall.sets;
  if (sets !== null && sets !== undefined) {
    const names = (Array.isArray(sets) ? sets : String(sets).split(',')).map(String).filter((x) => x.trim());
    const all = !names.length || (names.length === 1 && names[0].trim().toLowerCase() === 'all');
    picked = all ? null : names.map((x) => (findItem(b.sets, x) || {}).id);
  }
  const known = b.sizes.find((x) => x.id === s);
  if (!known || known.problem || (picked && picked.includes(undefined))) return null;  // a problem: no route fits
  const order = (x, y) => String(x).localeCompare(String(y), undefined, {numeric: true});
  picked = picked && [...new Set(picked)].sort(order);
  return {size: s, sets: picked && picked.length < b.sets.length ? picked : null};  // every set checked: all of them
}

function storedWall(b) {
  try {
    const w = JSON.parse(localStorage.getItem(storeKey(b)) || 'null');
    return w && wallOf(b, w.size, w.sets || 'all');
  } catch (e) { return null; }  // storage switched off, or not ours
}

function storeWall() {
  try { localStorage.setItem(storeKey(S.board), JSON.stringify(S.wall)); } catch (e) { /* the link still carries it */ }
}

function wallView(b, w) {  // the board as this wall has it: its holds only, within its size's edges
  const size = b.sizes.find((s) => s.id === w.size);
  const onSize = new Set(size.holds.map(String)), sets = w.sets && new Set(w.sets.map(String));
  const setOf = new Map(b.hold_set.map(([p, s]) => [String(p), String(s)]));
  const holds = b.holds.filter(([p]) => onSize.has(String(p)) && (!sets || sets.has(setOf.get(String(p)))));
  const edges = size.edges.map((e, i) => (i % 2 ? Math.min : Math.max)(e, b.edges[i]));
  const here = new Set(holds.map(([p]) => setOf.get(String(p))));  // the sets this wall has holds of, each its mark
  const shownSets = b.sets.map((s, i) => ({...s, mark: SET_MARKS[i % SET_MARKS.length]}))
    .filter((s) => here.has(String(s.id)));
  return {...b, holds, edges, grid: b.holds, lights: size.lights, setOf, shownSets};
}

function fillWall() {  // the picker shows the wall in use
  const b = S.board;
  fillSelect('size', b.sizes.map((s) => [s.id, s.problem ? `${s.name} (too small)` : s.name]), S.wall.size);
  b.sizes.forEach((s, i) => {  // a size no route fits cannot be picked; its option says why
    const option = $('size').options[i];
    option.disabled = Boolean(s.problem);
    if (s.problem) option.title = s.problem;
  });
  $('size').hidden = b.sizes.length < 2;  // the MoonBoard has one size: only its sets to choose
  const box = $('sets');
  box.replaceChildren();
  b.sets.forEach((s, i) => {
    const label = node('label', {class: 'set'}, box);
    const input = node('input', {type: 'checkbox', 'data-index': i}, label);
    input.checked = !S.wall.sets || S.wall.sets.includes(s.id);
    node('span', {}, label, s.name);
  });
  box.hidden = b.sets.length < 2;
  $('wall-field').hidden = b.sizes.length < 2 && b.sets.length < 2;
}

function pickedWall() {  // what the picker says
  const b = S.board, boxes = [...document.querySelectorAll('#sets input')];
  const sets = b.sets.filter((s, i) => !boxes.length || boxes[i].checked).map((s) => s.id);
  const size = b.sizes.find((s) => String(s.id) === $('size').value).id;
  return {size, sets: sets.length < b.sets.length ? sets : null};
}

async function useWall(wall) {  // true once the server takes the wall (it refuses one no route fits, saying why)
  let c;
  try {
    c = await api('/api/check', {board: S.board.name, holds: [], ...wallBody(wall)});
  } catch (e) {
    say('status', `Wall not changed: ${e.message}`, 'error');
    if (S.wall) fillWall();  // back to the wall in use
    return false;
  }
  S.wall = wall;
  S.view = {...wallView(S.board, wall), title: c.wall.title};
  S.onWall = new Set(S.view.holds.map(([p]) => String(p)));
  fillWall();
  drawLegend();  // its sets' marks
  $('wall-holds').textContent = `${c.wall.holds} holds`;
  lightsNote();
  return true;
}

async function openWall(asked) {  // the wall asked for, else the server's own for this board
  if (!asked || !(await useWall(asked))) await useWall(wallOf(S.board, null, null));
}

function setOnWall(holds, note = '') {  // a route from elsewhere (a link, another wall): only the holds this wall has
  const off = holds.filter((h) => !onWall(h));
  if (off.length) note = `Taken off the route, not on your wall: ${off.map(([p]) => holdName(p)).join(', ')}.`;
  return setHolds(holds.filter(onWall), note);
}

async function changeWall() {
  const wall = pickedWall();
  if (wall.sets && !wall.sets.length) {
    fillWall();
    return say('status', 'A wall has at least one hold set: check another before unchecking this one.', 'warn');
  }
  if (!(await useWall(wall))) return;
  storeWall();
  say('status', `Your wall: ${S.view.title}, ${S.view.holds.length} holds.`, 'ok');
  const fits = S.routes.filter((r) => r.holds.every(onWall));  // routes for another wall go; those that fit stay
  const shown = S.routes[S.picked];
  showRoutes(fits, fits.length < S.routes.length ? `${fits.length} of ${S.routes.length} fit this wall` : S.gallery);
  S.picked = fits.indexOf(shown);  // the route shown big, if it fits, stays marked
  markPicked();
  const graded = !$('grade-card').hidden && S.holds.every(onWall);
  await setOnWall(S.holds, $('route-meta').textContent);
  if (graded) grade();  // again: the nearest known climb is one that fits the wall
}

// ---------------------------------------------------------------------------------------------
// copying, settings, start-up

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    say('status', `${what} copied.`, 'ok');
  } catch (e) {
    say('status', `Copy the ${what.toLowerCase()} by hand: ${text}`, 'muted');
  }
}

function fillSelect(id, options, value) {
  const s = $(id);
  s.replaceChildren();
  for (const [v, label] of options) node('option', {value: v}, s, label);
  if (options.some(([v]) => String(v) === String(value))) s.value = String(value);
}

function useBoard(name, angle) {
  S.board = S.info.boards.find((b) => b.name === name) || S.info.boards[0];
  $('board').value = S.board.name;
  const angles = S.board.angle_known ? S.board.angles.map((a) => [a, `${a}°`]) : [['', 'unknown']];
  const fallback = S.board.angles.includes(40) ? 40 : S.board.angles[Math.floor(S.board.angles.length / 2)];
  const asked = angle !== null && angle !== undefined && angle !== '' && S.board.angles.includes(Number(angle));
  fillSelect('angle', angles, asked ? Number(angle) : fallback);
  $('angle').disabled = !S.board.angle_known;
  S.routes = [];
  S.wall = null;  // each board has its own walls: openWall() picks one
  drawLegend();
}

async function start() {
  try {
    S.info = await api('/api/board');
  } catch (e) {
    return say('status', `The server did not answer: ${e.message}`, 'error');
  }
  const info = S.info, q = new URLSearchParams(location.search);
  $('dataset').textContent = info.dataset;
  fillSelect('board', info.boards.map((b) => [b.name, b.title]));
  $('board-field').hidden = info.boards.length < 2;
  fillSelect('grade', [['', 'any grade'], ...info.grades.map((g) => [g.difficulty, `${g.font} · ${g.v}`])], 20);
  fillSelect('count', [4, 6, 8, 12, 24].filter((n) => n <= info.limits.count).map((n) => [n, n]), info.defaults.count);
  useBoard(q.get('board'), q.get('angle'));
  if (Object.keys(info.missing).length) say('status', Object.values(info.missing).join(' '), 'warn');  // what is switched off
  const linked = q.has('size') || q.has('sets');
  const asked = linked ? wallOf(S.board, q.get('size'), q.get('sets')) : storedWall(S.board);
  if (linked && !asked) {
    say('status', `The link's wall (size ${q.get('size')}, sets ${q.get('sets')}) is not one of this board's.`, 'warn');
  }
  await openWall(asked);

  $('controls').addEventListener('submit', generate);
  $('board').addEventListener('change', async () => {
    useBoard($('board').value);
    showRoutes([], '');
    S.holds = [];
    await openWall(storedWall(S.board));
    setHolds([]);
  });
  $('size').addEventListener('change', changeWall);
  $('sets').addEventListener('change', changeWall);  // a checkbox's change bubbles up
  $('angle').addEventListener('change', () => {  // the nearest climb's grade, and any grade shown, are per angle
    const graded = !$('grade-card').hidden;
    setHolds(S.holds, $('route-meta').textContent).then(() => graded && grade());
  });
  $('grade-button').addEventListener('click', grade);
  $('complete').addEventListener('click', complete);
  $('light').addEventListener('click', light);
  $('copy').addEventListener('click', () => copy(S.route, 'Route'));
  $('share').addEventListener('click', () => copy(location.href, 'Link'));
  $('clear').addEventListener('click', () => setHolds([]));
  $('view').addEventListener('click', (e) => {
    const hold = e.target.closest('.hit');
    if (hold) cycle(hold.dataset.hold);
  });

  const route = q.get('route');
  if (!route) return setHolds([]);
  try {  // a shared link: the server reads the route string, as it reads any other
    const c = await api('/api/check', {board: S.board.name, route, ...wallBody()});
    setOnWall(c.holds);
  } catch (e) {
    await setHolds([]);
    say('status', `The link's route was not read: ${e.message}`, 'error');
  }
}

start();
