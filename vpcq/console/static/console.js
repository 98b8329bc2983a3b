/* vpcq console: draws what the server laid out (vpcq/console/layout.py) and follows the log.
 *
 * The server decides every position, every bend of every edge and every colour; this file
 * only hands them to cytoscape.js, applies the changes the event stream sends, and runs the
 * panels. Every text shown comes from the log: it is set as text, never as markup.
 */
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const state = {
    live: true,        // the picture follows the log; false: time travel
    now: 0,            // the last seq the server has folded
    seq: 0,            // the seq of the picture shown
    entries: new Map(),  // audit-log entries loaded, by id
    filter: '',
    oldest: null,      // seq of the oldest entry loaded (for "older…")
    picked: null,      // the entry whose story is shown
    fitted: false,
    updates: 0,        // deltas applied (the tests read it)
  };

  // ---- the map ------------------------------------------------------------------------------

  const fn = (k) => (e) => e.data(k);
  const cy = cytoscape({
    container: $('cy'),
    elements: [],
    layout: { name: 'preset' },
    autoungrabify: true,        // positions are the log's: nothing is dragged
    boxSelectionEnabled: false,
    minZoom: 0.15,
    maxZoom: 3,
    style: [
      { selector: 'node[kind!="text"]', style: {
        'shape': fn('shape'), 'width': fn('w'), 'height': fn('h'),
        'background-color': fn('fill'), 'border-color': fn('stroke'), 'border-width': fn('bw'),
        'border-style': fn('dash'), 'opacity': fn('opacity'),
        'z-index-compare': 'manual', 'z-index': fn('z'),
      } },
      { selector: 'node[kind="router"]', style: {
        'label': '⇄', 'color': '#f0c45a', 'font-size': 15, 'text-valign': 'center', 'text-halign': 'center',
      } },
      { selector: 'node[kind="text"]', style: {
        'shape': 'rectangle', 'width': 1, 'height': 1, 'background-opacity': 0, 'border-width': 0,
        'label': fn('text'), 'color': fn('color'), 'font-size': fn('size'), 'font-weight': fn('weight'),
        'font-family': fn('family'), 'line-height': fn('lh'), 'text-wrap': 'wrap', 'text-max-width': 2000,
        'text-justification': 'left', 'text-valign': 'center', 'text-halign': 'right',
        'events': 'no', 'z-index': 5, 'min-zoomed-font-size': 5,
      } },
      { selector: 'node[kind="text"][align="center"]', style: { 'text-halign': 'center' } },
      { selector: 'edge', style: {
        'curve-style': fn('curve'), 'line-color': fn('color'), 'width': fn('bw'), 'line-style': fn('dash'),
        'opacity': fn('opacity'), 'z-index-compare': 'manual', 'z-index': fn('z'),
        'source-endpoint': fn('sep'), 'target-endpoint': fn('tep'), 'edge-distances': 'node-position',
      } },
      { selector: 'edge[curve="segments"]', style: { 'segment-weights': fn('pw'), 'segment-distances': fn('pd') } },
      { selector: '[mark="removed"]', style: { 'underlay-color': '#f85149', 'underlay-opacity': 0.28, 'underlay-padding': 5 } },
      { selector: '[mark="changed"]', style: { 'underlay-color': '#d29922', 'underlay-opacity': 0.28, 'underlay-padding': 5 } },
      { selector: '.hl', style: { 'underlay-color': '#58a6ff', 'underlay-opacity': 0.18, 'underlay-padding': 4 } },
      { selector: ':selected', style: { 'underlay-color': '#58a6ff', 'underlay-opacity': 0.35, 'underlay-padding': 6 } },
    ],
  });

  function show(elements, fit) {
    const picked = cy.$(':selected').map((e) => e.id());
    cy.batch(() => {
      cy.elements().remove();
      cy.add(elements);
      picked.forEach((id) => cy.getElementById(id).select());
    });
    if (fit || !state.fitted) {
      cy.fit(undefined, 30);
      if (cy.zoom() > 1.1) { cy.zoom(1.1); cy.center(); }
      state.fitted = true;
    }
  }

  function applyDelta(d) {
    cy.batch(() => {
      const gone = new Set(d.remove.concat(d.update.map((e) => e.data.id)));
      const picked = cy.$(':selected').map((e) => e.id());
      cy.remove(cy.collection(Array.from(gone, (id) => cy.getElementById(id))));
      cy.add(d.add.concat(d.update));
      picked.forEach((id) => cy.getElementById(id).select());
    });
    state.updates += 1;
  }

  // what a node or an edge is, in the details panel
  cy.on('tap', 'node, edge', (ev) => { if (ev.target.data('kind') !== 'text') detailsOf(ev.target); });
  cy.on('tap', (ev) => { if (ev.target === cy) clearDetails(); });
  cy.on('mouseover', 'node, edge', (ev) => {
    const d = ev.target.data();
    const notes = (d.notes || []).flatMap((n) => [n.text].concat(n.lines));
    const tip = $('tip');
    tip.textContent = [d.title].concat(d.lines || [], notes).join('\n');
    tip.hidden = d.kind === 'text';
    const p = ev.renderedPosition || ev.target.renderedPosition();
    tip.style.left = `${Math.min(p.x + 14, $('map').clientWidth - 300)}px`;
    tip.style.top = `${p.y + 14}px`;
  });
  cy.on('mouseout', 'node, edge', () => { $('tip').hidden = true; });

  // ---- small DOM helpers (text only) ----------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else if (k === 'onclick') e.addEventListener('click', v); else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  const clock = (iso) => (iso && iso.length >= 19 ? iso.slice(11, 19) : iso || '');
  function took(a, b) {
    const ms = Date.parse(b) - Date.parse(a);
    if (!Number.isFinite(ms) || ms < 0) return '';
    return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
  }
  function pill(outcome, kind) {
    const deleting = outcome === 'pending' && /^(delete-|cleanup|unpeer|unexpose|stop-app)/.test(kind || '');
    const text = deleting ? 'deleting' : outcome;
    return el('span', { class: `pill ${deleting ? 'deleting' : outcome}` }, text);
  }

  // ---- details -------------------------------------------------------------------------------

  function clearDetails() {
    $('details-title').textContent = 'Details';
    $('details-body').replaceChildren(el('span', { class: 'dim' },
      'Click a VPC, router, subnet or peering on the map, or a command in the audit log.'));
    state.picked = null;
    markPicked();
  }

  function notesOf(notes) {
    return (notes || []).map((n) => el('div', { class: `note ${n.kind}` }, n.text,
      n.lines.length ? el('ul', {}, ...n.lines.map((l) => el('li', {}, l))) : ''));
  }

  function detailsOf(ele) {
    const d = ele.data();
    $('details-title').textContent = d.title;
    const status = d.status && d.status !== 'ok' ? el('span', { class: `pill ${d.status}` }, d.status) : '';
    const facts = el('table', { class: 'facts' }, ...(d.facts || []).map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, v))));
    const body = [status, ...notesOf(d.notes), ...(d.lines || []).map((l) => el('div', { class: 'mono dim' }, l)), facts];
    if (d.mark) body.unshift(el('div', { class: `note ${d.mark === 'removed' ? 'failed' : 'pending'}` },
      d.mark === 'removed' ? 'gone by now' : 'different now'));
    const vpc = d.vpc || (d.vpcs || [])[0];
    if (vpc) body.push(el('div', { class: 'buttons' }, el('button', { type: 'button', onclick: () => { $('vpc-filter').value = vpc; setFilter(vpc); } }, `audit log of ${vpc}`)));
    $('details-body').replaceChildren(...body);
  }

  async function story(id) {
    state.picked = id;
    markPicked();
    const r = await api(`/api/command/${encodeURIComponent(id)}`);
    if (!r) return;
    const e = r.entry;
    $('details-title').textContent = e.what;
    const host = e.host ? ` · host ${e.host}` : '';
    const when = el('div', { class: 'dim' }, `by ${e.actor} at ${e.time.replace('T', ' ').slice(0, 23)} · seq ${e.seq}${host}`);
    const out = el('div', {}, pill(e.outcome, e.kind), ' ',
      e.outcome_time ? `after ${took(e.time, e.outcome_time)} (seq ${e.outcome_seq})` : 'no outcome yet',
      e.reason ? el('div', { class: 'note failed' }, e.reason) : '');
    const before = Math.max(e.seq - 1, 0);
    const after = e.outcome_seq || e.last_seq;
    const buttons = el('div', { class: 'buttons' },
      el('button', { type: 'button', onclick: () => travel(before) }, `network before (seq ${before})`),
      el('button', { type: 'button', onclick: () => travel(after) }, `network after (seq ${after})`),
      el('button', { type: 'button', onclick: () => highlight(e.vpcs) }, 'show its VPCs'));
    const evs = el('ol', { class: 'events' }, ...r.events.map((x) => el('li', {},
      el('span', { class: 'seq' }, x.seq), el('span', { class: 'type' }, x.type), x.summary,
      x.actor !== e.actor ? el('span', { class: 'dim' }, ` · ${x.actor}`) : '')));
    const more = r.more ? el('div', { class: 'dim' }, `and ${r.more} more event(s)`) : '';
    const cancelled = r.cancelled.length ? el('div', { class: 'note failed' }, 'its failure cancelled: ',
      ...r.cancelled.map((c) => el('a', { href: '#', onclick: (ev) => { ev.preventDefault(); story(c.id); } }, `${c.what} `))) : '';
    const cause = e.caused_by ? el('div', {}, 'cancelled because ',
      el('a', { href: '#', onclick: (ev) => { ev.preventDefault(); story(e.caused_by); } }, e.caused_by), ' failed') : '';
    $('details-body').replaceChildren(when, out, cause, buttons, evs, more, cancelled);
  }

  function highlight(vpcs) {
    cy.elements().removeClass('hl');
    vpcs.forEach((v) => cy.elements(`[vpc="${CSS.escape(v)}"]`).addClass('hl'));
  }

  // ---- the audit log ---------------------------------------------------------------------------

  function upsert(entries) {
    for (const e of entries) {
      if (!state.filter || e.vpcs.includes(state.filter) || state.entries.has(e.id)) state.entries.set(e.id, e);
      if (state.oldest === null || e.seq < state.oldest) state.oldest = e.seq;
    }
    renderTimeline();
  }

  function renderTimeline() {
    const rows = Array.from(state.entries.values()).sort((a, b) => b.seq - a.seq);
    $('timeline').tBodies[0].replaceChildren(...rows.map((e) => {
      const tr = el('tr', { 'data-id': e.id, title: `${e.command_id} · ${e.time}` },
        el('td', { class: 'seq' }, e.seq), el('td', { class: 'time' }, clock(e.time)),
        el('td', { class: 'who' }, e.actor), el('td', { class: 'what' }, e.what),
        el('td', {}, pill(e.outcome, e.kind)));
      tr.addEventListener('click', () => story(e.id));
      tr.addEventListener('mouseenter', () => highlight(e.vpcs));
      tr.addEventListener('mouseleave', () => cy.elements().removeClass('hl'));
      return tr;
    }));
    markPicked();
  }

  function markPicked() {
    for (const tr of $('timeline').tBodies[0].rows) tr.classList.toggle('picked', tr.dataset.id === state.picked);
  }

  async function loadTimeline(older) {
    const q = new URLSearchParams({ limit: '200' });
    if (state.filter) q.set('vpc', state.filter);
    if (older && state.oldest !== null) q.set('before', String(state.oldest));
    const r = await api(`/api/timeline?${q}`);
    if (!r) return;
    if (!older) { state.entries.clear(); state.oldest = null; }
    upsert(r.entries);
    $('older').hidden = !r.more;
    const sel = $('vpc-filter');
    const have = new Set(Array.from(sel.options, (o) => o.value));
    r.vpcs.filter((v) => !have.has(v)).forEach((v) => sel.append(el('option', { value: v }, v)));
  }

  function setFilter(vpc) { state.filter = vpc; loadTimeline(false); }
  $('vpc-filter').addEventListener('change', (ev) => setFilter(ev.target.value));
  $('older').addEventListener('click', () => loadTimeline(true));

  // ---- time travel -------------------------------------------------------------------------------

  function setNow(now) {
    state.now = now;
    const s = $('seq-slider');
    s.max = String(now);
    $('seq-input').max = String(now);
    if (state.live) { s.value = String(now); $('seq-input').value = String(now); }
  }

  function setMode(seq, time) {
    state.seq = seq;
    const m = $('mode');
    m.textContent = state.live ? 'live' : 'time travel';
    m.className = `mode ${state.live ? 'live' : 'then'}`;
    $('where').textContent = state.live ? `seq ${seq} · ${clock(time)}` : `right after seq ${seq} · ${time.replace('T', ' ').slice(0, 19)}`;
    $('live-btn').disabled = state.live;
    const q = state.live ? '' : `?seq=${seq}`;
    for (const f of ['svg', 'dot', 'mermaid']) $(`x-${f}`).href = `/api/export/${f}${q}`;
    $('seq-slider').value = String(seq);
    $('seq-input').value = String(seq);
  }

  async function travel(seq) {
    seq = Math.max(0, Math.min(Number(seq) | 0, state.now));
    if (seq === state.now) return live();
    const r = await api(`/api/graph?seq=${seq}`);
    if (!r) return;
    state.live = false;
    show(r.elements, false);
    setMode(r.seq, r.time);
    const list = $('changes-list');
    const ops = { added: '+', removed: '−', changed: '~' };
    list.replaceChildren(...r.changes.map((c) => {
      const li = el('li', { class: c.op }, el('span', { class: 'op' }, ops[c.op]), `${c.kind} ${c.title}`,
        ...c.details.map((x) => el('div', { class: 'detail' }, x)));
      li.addEventListener('click', () => { const e = cy.getElementById(c.id); if (e.nonempty()) { cy.$(':selected').unselect(); e.select(); detailsOf(e); } });
      return li;
    }));
    $('changes-count').textContent = `(${r.changes.length}, from seq ${r.seq} to now, seq ${r.now})`;
    $('changes').hidden = false;
    banner(`the network as it was at seq ${r.seq} — ${r.changes.length} change(s) since`, false);
  }

  async function live() {
    const r = await api('/api/graph');
    if (!r) return;
    state.live = true;
    show(r.elements, false);
    setMode(r.seq, r.time);
    setNow(r.now);
    $('changes').hidden = true;
    banner('', false);
  }

  let slide = null;
  $('seq-slider').addEventListener('input', (ev) => {
    $('seq-input').value = ev.target.value;
    clearTimeout(slide);
    slide = setTimeout(() => travel(ev.target.value), 180);
  });
  $('seq-input').addEventListener('change', (ev) => travel(ev.target.value));
  $('live-btn').addEventListener('click', () => live());
  // nothing moves when the network grows, so what is new may be out of view until asked
  $('fit-btn').addEventListener('click', () => cy.fit(undefined, 30));

  function banner(text, bad) {
    const b = $('banner');
    b.hidden = !text;
    b.textContent = text;
    b.classList.toggle('bad', !!bad);
  }

  // ---- the server -----------------------------------------------------------------------------------

  async function api(path) {
    try {
      const r = await fetch(path, { headers: { Accept: 'application/json' } });
      if (!r.ok) { banner(`${path}: ${r.status} ${(await r.json().catch(() => ({}))).error || r.statusText}`, true); return null; }
      return await r.json();
    } catch (err) {
      banner(`the console server does not answer (${err.message})`, true);
      return null;
    }
  }

  function status(s) {
    const bad = Object.entries(s || {}).filter(([, v]) => v !== 'ok').map(([, v]) => v);
    const c = $('conn');
    c.textContent = bad.length ? bad.join('; ') : 'following the log';
    c.className = `conn ${bad.length ? 'bad' : 'ok'}`;
  }

  function connect() {
    const es = new EventSource('/api/events');
    es.addEventListener('hello', (ev) => {
      const h = JSON.parse(ev.data);
      setNow(h.seq);
      if (state.live) { show(h.elements, false); setMode(h.seq, h.time); }
      status(h.status);
      loadTimeline(false);
    });
    es.addEventListener('update', (ev) => {
      const u = JSON.parse(ev.data);
      setNow(u.seq);
      if (state.live) { applyDelta(u); setMode(u.seq, u.time); }
      if (u.entries.length) upsert(u.entries);
    });
    es.addEventListener('status', (ev) => status(JSON.parse(ev.data)));
    es.onerror = () => { const c = $('conn'); c.textContent = 'reconnecting…'; c.className = 'conn bad'; };
  }

  window.vpcqConsole = { cy, state, travel, live };  // for the browser tests, and the curious
  connect();
}());
