/* fiscalflow console (docs/console.md): hash-routed views over the report API, refreshed by polling.
 * No framework and no inline script (the page's Content-Security-Policy allows this origin only).
 * Every text from the API goes into the page as text (textContent), never as HTML. */
(() => {
  'use strict';

  const TOKEN_KEY = 'fiscalflow.token';
  const ADMIN_KEY = 'fiscalflow.admin';
  const POLL_MS = 3000;
  const STAGES = ['ingest', 'download', 'validate', 'store', 'report'];
  // ISO 4217 minor units of the currencies that do not have 2 (as the CLI: shared/cli/money.py).
  const DECIMALS = { XXX: 0, JPY: 0, KRW: 0, CLP: 0, ISK: 0, PYG: 0, VND: 0, UGX: 0, XAF: 0, XOF: 0,
    BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3, CLF: 4 };
  const COLORS = ['#2458c6', '#1f8a4c', '#b7791f', '#c53030', '#6b46c1', '#2c7a7b', '#d53f8c', '#718096',
    '#dd6b20', '#3182ce'];

  let token = null;
  let timer = null;
  let current = null; // {view, ctx, live, charts}
  let routeSeq = 0;

  // ------------------------------------------------------------------ small helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'testid') el.dataset.testid = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const $ = (id) => document.getElementById(id);
  const int = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'));
  const when = (iso) => (iso ? iso.replace('T', ' ').replace(/\.\d+/, '').replace('+00:00', ' UTC') : '');
  const enc = encodeURIComponent;

  /** ``amount`` (an exact decimal string) to the currency's decimals, half up, as the CLI shows it. */
  function money(amount, currency = 'MXN') {
    if (amount === null || amount === undefined || amount === '') return '';
    const m = String(amount).match(/^(-?)(\d+)(?:\.(\d+))?$/);
    if (!m) return String(amount);
    const places = DECIMALS[String(currency).toUpperCase()] ?? 2;
    const frac = m[3] || '';
    let n = BigInt(m[2] + frac.padEnd(places, '0').slice(0, places));
    if (frac.length > places && frac.charCodeAt(places) - 48 >= 5) n += 1n;
    const s = n.toString().padStart(places + 1, '0');
    const whole = s.slice(0, s.length - places);
    const isZero = n === 0n;
    return (m[1] && !isZero ? '-' : '') + whole + (places ? '.' + s.slice(s.length - places) : '');
  }

  function badge(state) { return h('span', { class: `badge ${state}`, text: state }); }

  function progressBar(fraction) {
    const bar = h('div');
    bar.style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
    return h('div', { class: 'progress', title: `${(fraction * 100).toFixed(1)} %` }, bar);
  }

  function table(columns, rows, opts = {}) {
    const head = h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : null, text: c.label })));
    const body = rows.map((row) => {
      const tr = h('tr', { class: opts.onclick ? 'clickable' : null, testid: opts.rowid ? opts.rowid(row) : null },
        columns.map((c) => {
          const v = c.value(row);
          return h('td', { class: [c.num ? 'num' : '', c.wrap ? 'wrap' : ''].join(' ').trim() || null,
            testid: c.testid ? c.testid(row) : null }, v instanceof Node ? v : String(v ?? ''));
        }));
      if (opts.onclick) tr.addEventListener('click', () => opts.onclick(row));
      return tr;
    });
    if (!rows.length) body.push(h('tr', {}, h('td', { colspan: columns.length, class: 'muted', text: opts.empty || 'none' })));
    return h('table', { testid: opts.testid }, h('thead', {}, head), h('tbody', {}, body));
  }

  function card(label, value, testid) {
    return h('div', { class: 'card' }, h('div', { class: 'label', text: label }),
      h('div', { class: 'value', testid, text: value }));
  }

  function facts(pairs) {
    return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', { text: k }),
      h('dd', {}, v instanceof Node ? v : String(v ?? ''))]));
  }

  // ------------------------------------------------------------------ the API
  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path, { method = 'GET', body = null, bearer = null } = {}) {
    const headers = { Authorization: `Bearer ${bearer || token}`, Accept: 'application/json' };
    if (body !== null) headers['Content-Type'] = 'application/json';
    const resp = await fetch(path, { method, headers, cache: 'no-store',
      body: body === null ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401 && !bearer) {
      logout('The server refused the token (401): log in again.');
      throw new ApiError(401, 'unauthorized');
    }
    if (!resp.ok) throw new ApiError(resp.status, `HTTP ${resp.status}: ${(data && data.detail) || resp.statusText}`);
    return data;
  }

  // ------------------------------------------------------------------ charts (Chart.js, vendored)
  function chartBox(title, testid, build, tableNode) {
    const canvas = h('canvas', { testid: `${testid}-canvas`, role: 'img', 'aria-label': title });
    const box = h('div', { class: 'chart', testid }, h('h2', { text: title }),
      h('div', { class: 'canvas-box' }, canvas), tableNode || null);
    return { node: box, draw: () => (window.Chart ? new window.Chart(canvas, build()) : null) };
  }

  function barConfig(labels, datasets, opts = {}) {
    return {
      type: opts.type || 'bar',
      data: { labels, datasets: datasets.map((d, i) => ({ backgroundColor: d.colors || COLORS[i % COLORS.length],
        borderColor: COLORS[i % COLORS.length], ...d })) },
      options: { animation: false, maintainAspectRatio: false, indexAxis: opts.horizontal ? 'y' : 'x',
        plugins: { legend: { display: datasets.length > 1 } },
        scales: { x: { stacked: !!opts.stacked }, y: { stacked: !!opts.stacked, beginAtZero: true } } },
    };
  }

  // ------------------------------------------------------------------ views
  // A view: {title, live, pollMs, controls(ctx) -> Node (built once per route), load(ctx) -> Promise<Node>
  // (built again on every refresh)}; ctx: {arg, params, after(fn): run fn once the node is in the page}.

  const pipeline = {
    title: 'Pipeline', live: true,
    async load(ctx) {
      const [summary, pipe] = await Promise.all([api('/api/v1/reports/summary'), api('/api/v1/pipeline')]);
      const bs = summary.by_status;
      const final = new Set(['archived', 'rejected', 'duplicate']);
      const inProgress = Object.entries(bs).filter(([k]) => !final.has(k)).reduce((a, [, n]) => a + n, 0);
      const rows = pipe.stages.map((s) => ({ ...s, reasons: s.conditions.map((c) => `${c.stage}/${c.replica}: ${c.state} since ${when(c.since)} — ${c.reason}`) }));
      return h('div', {},
        h('div', { class: 'cards' }, card('archived', int(bs.archived), 'summary-archived'),
          card('rejected', int(bs.rejected), 'summary-rejected'), card('duplicate', int(bs.duplicate), 'summary-duplicate'),
          card('in progress', int(inProgress), 'summary-in-progress')),
        h('h2', { text: 'Stages' }),
        table([
          { label: 'stage', value: (s) => s.stage },
          { label: 'state', value: (s) => h('span', {}, badge(s.state), s.reasons.length ? h('div', { class: 'muted', text: s.reasons.join('; ') }) : null) },
          { label: 'rate (msg/s)', num: true, value: (s) => (s.rate_per_s === null ? '—' : s.rate_per_s.toFixed(2)), testid: (s) => `rate-${s.stage}` },
          { label: 'lag', num: true, value: (s) => int(s.lag), testid: (s) => `lag-${s.stage}` },
          { label: 'in flight', num: true, value: (s) => int(s.in_flight), testid: (s) => `inflight-${s.stage}` },
          { label: 'transitions (1 min)', num: true, value: (s) => int(s.transitions_last_minute) },
          { label: 'replicas', num: true, value: (s) => h('span', { title: s.replica_ids.join(', '), text: int(s.replicas) }) },
        ], rows, { testid: 'stages', rowid: (s) => `stage-${s.stage}` }),
        h('h2', { text: 'Open breakers' }),
        table([{ label: 'stage', value: (c) => c.stage }, { label: 'replica', value: (c) => `${c.host} ${c.replica}` },
          { label: 'since', value: (c) => when(c.since) }, { label: 'reason', value: (c) => c.reason, wrap: true }],
        pipe.breakers, { testid: 'breakers', empty: 'none open' }),
        pipe.kafka_error ? h('p', { class: 'error', text: `Kafka offsets not read: ${pipe.kafka_error}` }) : null,
        h('p', { class: 'muted', text: `generated ${when(pipe.generated_at)}; rates are messages consumed between two offset reads (a few seconds apart).` }));
    },
  };

  const jobs = {
    title: 'Jobs', live: true,
    async load(ctx) {
      if (ctx.arg) return jobDetail(ctx.arg);
      const body = await api('/api/v1/jobs?limit=50');
      return h('div', {}, table([
        { label: 'job', value: (j) => h('a', { href: `#/jobs/${enc(j.job_id)}`, text: j.job_id }) },
        { label: 'status', value: (j) => badge(j.status) },
        { label: 'priority', value: (j) => j.priority },
        { label: 'progress', value: (j) => progressBar(j.progress) },
        { label: 'finished', num: true, value: (j) => `${int(j.finished)} / ${int(j.record_count)}`, testid: (j) => `job-finished-${j.job_id}` },
        { label: 'created', value: (j) => when(j.created_at) },
        { label: 'completed', value: (j) => when(j.completed_at) },
      ], body.jobs, { testid: 'jobs', empty: 'no jobs', onclick: (j) => { location.hash = `#/jobs/${enc(j.job_id)}`; } }));
    },
  };

  async function jobDetail(jobId) {
    const [job, stalled] = await Promise.all([api(`/api/v1/jobs/${enc(jobId)}`),
      api(`/api/v1/jobs/${enc(jobId)}/stalled`)]);
    return h('div', {},
      h('p', {}, h('a', { href: '#/jobs', text: '← all jobs' })),
      h('h2', { text: `Job ${job.job_id}` }),
      h('div', { class: 'cards' }, card('status', job.status, 'job-status'),
        card('progress', `${(job.progress * 100).toFixed(1)} %`, 'job-progress'),
        card('finished', `${int(job.finished)} / ${int(job.record_count)}`, 'job-finished'),
        card('processed', int(job.processed), 'job-processed'), card('failed', int(job.failed), 'job-failed'),
        card('stalled', int(job.stalled), 'job-stalled'),
        card('throughput', job.throughput_per_s === null ? '—' : `${job.throughput_per_s}/s`, 'job-throughput')),
      h('div', { class: 'panel' }, progressBar(job.progress)),
      facts([['priority', job.priority], ['created', when(job.created_at)], ['completed', when(job.completed_at)],
        ['duration', job.duration_s === null ? '' : `${job.duration_s} s`], ['validation rules', job.validation_rules]]),
      h('h2', { text: 'Records by status' }),
      table([{ label: 'status', value: (r) => badge(r[0]) }, { label: 'records', num: true, value: (r) => int(r[1]), testid: (r) => `job-count-${r[0]}` }],
        Object.entries(job.counts), { testid: 'job-counts' }),
      h('h2', { text: 'Blocked by' }),
      table([{ label: 'stage', value: (c) => c.stage }, { label: 'state', value: (c) => badge(c.state) },
        { label: 'replica', value: (c) => `${c.host} ${c.replica}` }, { label: 'reason', value: (c) => c.reason, wrap: true }],
      job.blocked_stages, { empty: 'nothing: no stage it needs is halted or paused' }),
      h('h2', { text: `Stalled records (${int(stalled.records.length)})` }),
      table([{ label: 'record', value: (r) => h('a', { href: `#/record/${enc(r.record_id)}`, text: r.record_id }) },
        { label: 'status', value: (r) => badge(r.status) }, { label: 'last transition', value: (r) => when(r.updated_at) },
        { label: 're-drives', num: true, value: (r) => r.redrives }],
      stalled.records, { testid: 'stalled', empty: `none (a record is stalled after ${stalled.lease_s ?? '?'} s without a transition)` }));
  }

  const deadLetters = {
    title: 'Dead letters', live: true,
    controls(ctx) {
      if (ctx.arg) return replayPanel({ letter_ids: [ctx.arg] }, 'this dead letter');
      const stage = h('select', { testid: 'dl-stage' }, h('option', { value: '', text: 'any stage' }),
        STAGES.map((s) => h('option', { value: s, text: s, selected: ctx.params.get('stage') === s })));
      const reason = h('input', { testid: 'dl-reason', placeholder: 'reason code', value: ctx.params.get('reason') || '' });
      const form = h('form', { class: 'inline', onsubmit: (e) => {
        e.preventDefault();
        const q = new URLSearchParams();
        if (stage.value) q.set('stage', stage.value);
        if (reason.value.trim()) q.set('reason', reason.value.trim().toUpperCase());
        location.hash = `#/dead-letters${q.toString() ? '?' + q : ''}`;
      } }, stage, reason, h('button', { type: 'submit', text: 'Filter' }));
      const filter = {};
      if (ctx.params.get('stage')) filter.stage = ctx.params.get('stage');
      if (ctx.params.get('reason')) filter.reason = ctx.params.get('reason');
      const bulk = Object.keys(filter).length ? replayPanel(filter, `every dead letter of ${Object.entries(filter).map(([k, v]) => `${k} ${v}`).join(', ')}`) : null;
      return h('div', {}, form, bulk);
    },
    async load(ctx) {
      if (ctx.arg) return letterDetail(ctx.arg);
      const q = new URLSearchParams({ limit: '200' });
      for (const k of ['stage', 'reason']) if (ctx.params.get(k)) q.set(k, ctx.params.get(k));
      const body = await api(`/api/v1/dead-letters?${q}`);
      return h('div', {},
        h('div', { class: 'cards' }, card('dead letters', int(body.total), 'dl-total'),
          card('stages × reasons', int(body.groups.length), 'dl-groups-count')),
        body.truncated ? h('p', { class: 'error', text: 'The topic holds more messages than one listing reads: counts are partial (fiscalflow dlq stats reads all).' }) : null,
        h('h2', { text: 'By stage and reason' }),
        table([{ label: 'stage', value: (g) => g.stage }, { label: 'reason', value: (g) => g.reason },
          { label: 'dead letters', num: true, value: (g) => int(g.count), testid: (g) => `dl-count-${g.stage}-${g.reason}` },
          { label: 'records', num: true, value: (g) => int(g.records) }],
        body.groups, { testid: 'dl-groups', empty: 'no dead letters',
          onclick: (g) => { location.hash = `#/dead-letters?stage=${enc(g.stage)}&reason=${enc(g.reason)}`; } }),
        h('h2', { text: `Newest ${body.letters.length} of ${int(body.total)}` }),
        table([{ label: 'failed at', value: (d) => when(d.failed_at) },
          { label: 'record', value: (d) => d.record_id, wrap: true }, { label: 'stage', value: (d) => d.stage },
          { label: 'reason', value: (d) => d.reason }, { label: 'replays', num: true, value: (d) => d.replay_count },
          { label: 'error', value: (d) => d.error.slice(0, 120), wrap: true }],
        body.letters, { testid: 'dl-letters', rowid: (d) => `letter-${d.letter_id}`,
          onclick: (d) => { location.hash = `#/dead-letters/${enc(d.letter_id)}`; } }));
    },
  };

  async function letterDetail(letterId) {
    const d = await api(`/api/v1/dead-letters/${enc(letterId)}`);
    return h('div', {},
      h('p', {}, h('a', { href: '#/dead-letters', text: '← all dead letters' })),
      h('h2', { text: `Dead letter of ${d.record_id}` }),
      facts([['record', h('a', { href: `#/record/${enc(d.record_id)}`, text: d.record_id })], ['stage', d.stage],
        ['reason', d.reason], ['error', d.error], ['dead letter', `${d.dlq_topic} ${d.position}`],
        ['origin', `${d.origin_topic} ${d.origin_partition ?? ''}:${d.origin_offset ?? ''}`],
        ['attempts', d.attempts], ['replays', d.replay_count], ['first failure', when(d.first_failure)],
        ['last failure', when(d.last_failure)], ['job', d.job_id || ''], ['trace', d.trace_id],
        ['value', `${int(d.value_size)} bytes`], ['redelivered copies', d.copies]]),
      h('h2', { text: 'Rules that failed' }),
      d.rules.length ? h('ul', { testid: 'dl-rules' }, d.rules.map((r) => h('li', { text: r })))
        : h('p', { class: 'muted', text: 'none listed (not a validation failure)' }),
      d.details !== null ? h('pre', { testid: 'dl-details', text: JSON.stringify(d.details, null, 2) }) : null,
      h('h2', { text: 'Headers' }),
      table([{ label: 'header', value: (kv) => kv[0] }, { label: 'value', value: (kv) => kv[1], wrap: true }],
        Object.entries(d.headers).sort(), { testid: 'dl-headers' }));
  }

  /** Dry run, then replay, with the admin token (typed here; kept in sessionStorage only if asked). */
  function replayPanel(selection, what) {
    const saved = sessionStorage.getItem(ADMIN_KEY) || '';
    const admin = h('input', { type: 'password', testid: 'admin-token', placeholder: 'admin token', value: saved, autocomplete: 'off' });
    const remember = h('input', { type: 'checkbox', testid: 'admin-remember', checked: !!saved });
    const out = h('div', { testid: 'replay-result' });
    const replayBtn = h('button', { type: 'button', class: 'danger', testid: 'replay', disabled: true, text: 'Replay' });
    const dryBtn = h('button', { type: 'button', class: 'primary', testid: 'dry-run', text: 'Dry run' });
    async function run(dryRun) {
      if (!admin.value) { out.replaceChildren(h('p', { class: 'error', text: 'Type the admin token first.' })); return; }
      if (remember.checked) sessionStorage.setItem(ADMIN_KEY, admin.value); else sessionStorage.removeItem(ADMIN_KEY);
      dryBtn.disabled = replayBtn.disabled = true;
      out.replaceChildren(h('p', { class: 'muted', text: dryRun ? 'planning…' : 'replaying…' }));
      try {
        const res = await api('/api/v1/dead-letters/replay', { method: 'POST', bearer: admin.value,
          body: { ...selection, dry_run: dryRun } });
        const counts = Object.entries(res.outcomes).filter(([, n]) => n);
        out.replaceChildren(
          h('p', { testid: dryRun ? 'replay-plan' : 'replay-done',
            text: (dryRun ? 'Dry run, nothing sent: would be ' : 'Done: ') + (counts.map(([o, n]) => `${o.replace(/_/g, ' ')} ${n}`).join(', ') || 'nothing') }),
          table([{ label: 'record', value: (i) => i.record_id, wrap: true }, { label: 'position', value: (i) => i.position },
            { label: 'outcome', value: (i) => i.outcome.replace(/_/g, ' '), testid: () => 'replay-outcome' },
            { label: 'to', value: (i) => i.target_topic }, { label: 'replay count', num: true, value: (i) => (i.target_topic ? i.replay_count : '') },
            { label: 'record status', value: (i) => i.current_status || '' }], res.items, { testid: 'replay-items' }));
        replayBtn.disabled = !dryRun || (!res.outcomes.replayed && !res.outcomes.parked);
        if (!dryRun) refresh();
      } catch (e) {
        out.replaceChildren(h('p', { class: 'error', testid: 'replay-error', text: e.message }));
        replayBtn.disabled = true;
      } finally {
        dryBtn.disabled = false;
      }
    }
    dryBtn.addEventListener('click', () => run(true));
    replayBtn.addEventListener('click', () => run(false));
    return h('div', { class: 'panel' }, h('h2', { text: `Replay ${what}` }),
      h('p', { class: 'muted', text: 'As fiscalflow dlq replay: each record\'s latest dead letter, once; archived records are skipped. A dry run shows the plan; Replay sends it.' }),
      h('div', { class: 'toolbar' }, admin, h('label', {}, remember, ' keep for this tab'), dryBtn, replayBtn), out);
  }

  const reports = {
    title: 'Reports', live: true, pollMs: 10000,
    controls(ctx) {
      const hours = h('select', { testid: 'trend-hours', onchange: () => setParam('hours', hours.value) },
        ['6', '24', '72', '168'].map((n) => h('option', { value: n, text: `last ${n} h`, selected: (ctx.params.get('hours') || '24') === n })));
      return h('div', { class: 'toolbar' }, h('span', { class: 'muted', text: 'Trend over' }), hours,
        h('span', { id: 'day-picker' }));
    },
    async load(ctx) {
      const hours = ctx.params.get('hours') || '24';
      const [summary, days, trend] = await Promise.all([api('/api/v1/reports/summary'), api('/api/v1/reports/days?limit=31'),
        api(`/api/v1/reports/trend?hours=${enc(hours)}`)]);
      const day = ctx.params.get('date') || (days.days[0] && days.days[0].day);
      const picker = h('select', { testid: 'daily-date', onchange: () => setParam('date', picker.value) },
        days.days.map((d) => h('option', { value: d.day, text: `${d.day} (${int(d.count)})`, selected: d.day === day })));
      ctx.after(() => { const slot = $('day-picker'); if (slot) slot.replaceChildren(h('span', { class: 'muted', text: 'Day ' }), picker); });
      let daily = null;
      let issuers = null;
      const requests = [day ? api(`/api/v1/reports/daily?date=${enc(day)}`).catch(() => null) : null];
      if (days.days.length) {
        const last = days.days[0].day;
        const first = days.days[days.days.length - 1].day;
        const from = new Date(Math.max(Date.parse(first), Date.parse(last) - 365 * 86400000)).toISOString().slice(0, 10);
        requests.push(api(`/api/v1/reports/issuers?from=${enc(from)}&to=${enc(last)}`)
          .then((body) => ({ ...body, range: `${from}..${last}` })));
      }
      [daily, issuers = null] = await Promise.all(requests);
      const charts = [];
      // Daily by tipo and moneda
      if (daily) {
        const groups = daily.groups;
        charts.push(chartBox(`Daily ${day}: documents by tipo and moneda`, 'chart-daily',
          () => barConfig(groups.map((g) => `${g.tipo} ${g.moneda}`), [{ label: 'documents', data: groups.map((g) => g.count) }]),
          table([{ label: 'tipo', value: (g) => g.tipo }, { label: 'moneda', value: (g) => g.moneda },
            { label: 'count', num: true, value: (g) => int(g.count), testid: (g) => `daily-count-${g.tipo}-${g.moneda}` },
            { label: 'total', num: true, value: (g) => money(g.total, g.moneda) },
            { label: 'total MXN', num: true, value: (g) => money(g.total_mxn) }], groups, { testid: 'daily-groups' })));
      }
      // Top issuers by MXN total over the known days
      if (issuers) {
        const top = issuers.issuers.map((i) => ({ rfc: i.rfc, count: i.groups.reduce((a, g) => a + g.count, 0),
          mxn: i.groups.reduce((a, g) => a + Number(g.total_mxn), 0),
          exact: sumDecimals(i.groups.map((g) => g.total_mxn)) }))
          .sort((a, b) => b.mxn - a.mxn).slice(0, 10);
        charts.push(chartBox(`Top issuers by MXN total, ${issuers.range}`, 'chart-issuers',
          () => barConfig(top.map((i) => i.rfc), [{ label: 'total MXN', data: top.map((i) => i.mxn) }], { horizontal: true }),
          table([{ label: 'rfc', value: (i) => i.rfc }, { label: 'documents', num: true, value: (i) => int(i.count) },
            { label: 'total MXN', num: true, value: (i) => money(i.exact) }], top, { testid: 'issuers-top' })));
      }
      // Trend per hour
      const pts = trend.points;
      const trendTotal = pts.reduce((a, p) => a + p.count, 0);
      charts.push(chartBox(`Archived per hour, last ${hours} h (${int(trendTotal)})`, 'chart-trend',
        () => barConfig(pts.map((p) => p.hour.slice(5, 13).replace('T', ' ') + 'h'), [{ label: 'archived', data: pts.map((p) => p.count) }])));
      // Rejections by reason
      const reasons = Object.entries(summary.by_reason).sort((a, b) => b[1] - a[1]);
      charts.push(chartBox('Rejected and duplicate records by reason', 'chart-reasons',
        () => barConfig(reasons.map((r) => r[0]), [{ label: 'records', data: reasons.map((r) => r[1]),
          colors: reasons.map((_, i) => COLORS[(i + 3) % COLORS.length]) }], { horizontal: true }),
        table([{ label: 'reason', value: (r) => r[0] }, { label: 'records', num: true, value: (r) => int(r[1]), testid: (r) => `reason-${r[0]}` }],
          reasons, { testid: 'reasons', empty: 'no rejections' })));
      ctx.after(() => charts.forEach((c) => ctx.charts.push(c.draw())));
      return h('div', {},
        h('div', { class: 'cards' }, card('archived', int(summary.by_status.archived), 'reports-archived'),
          card(`documents on ${day || '—'}`, daily ? int(daily.record_count) : '—', 'daily-count'),
          card(`MXN on ${day || '—'}`, daily ? money(daily.total_amount) : '—', 'daily-total')),
        days.days.length ? null : h('p', { class: 'muted', text: 'No archived documents yet.' }),
        h('div', { class: 'charts' }, charts.map((c) => c.node)));
    },
  };

  function sumDecimals(values) {
    // exact sum of decimal strings (BigInt on a common scale)
    const scale = Math.max(0, ...values.map((v) => (String(v).split('.')[1] || '').length));
    let total = 0n;
    for (const v of values) {
      const [w, f = ''] = String(v).replace('-', '').split('.');
      const n = BigInt(w + f.padEnd(scale, '0'));
      total += String(v).startsWith('-') ? -n : n;
    }
    const neg = total < 0n;
    const s = (neg ? -total : total).toString().padStart(scale + 1, '0');
    return (neg ? '-' : '') + s.slice(0, s.length - scale) + (scale ? '.' + s.slice(s.length - scale) : '');
  }

  const search = {
    title: 'Records', live: false,
    controls(ctx) {
      const q = h('input', { testid: 'search-q', size: 44, placeholder: 'record id, TFD UUID or RFC', value: ctx.params.get('q') || '' });
      return h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); location.hash = `#/search?q=${enc(q.value.trim())}`; } },
        q, h('button', { type: 'submit', class: 'primary', text: 'Search' }));
    },
    async load(ctx) {
      const q = ctx.params.get('q');
      if (!q) return h('p', { class: 'muted', text: 'Search a record by its id, the TFD UUID of its document, or its issuer\'s RFC.' });
      const body = await api(`/api/v1/search?q=${enc(q)}`);
      if (body.records.length === 1 && body.records[0].matched_by !== 'issuer_rfc') {
        return recordDetail(body.records[0].record_id);
      }
      return h('div', {}, h('p', { class: 'muted', text: `${body.records.length}${body.more ? '+' : ''} records match ${q}` }),
        table([{ label: 'record', value: (r) => h('a', { href: `#/record/${enc(r.record_id)}`, text: r.record_id }) },
          { label: 'matched by', value: (r) => r.matched_by.replace('_', ' ') }, { label: 'status', value: (r) => badge(r.status) },
          { label: 'reason', value: (r) => r.reason || '' }, { label: 'issuer', value: (r) => r.issuer_rfc || '' },
          { label: 'TFD UUID', value: (r) => r.tfd_uuid || '' }, { label: 'Fecha', value: (r) => r.issued_on || '' },
          { label: 'updated', value: (r) => when(r.updated_at) }], body.records, { testid: 'search-results', empty: 'no record matches' }));
    },
  };

  const record = {
    title: 'Record', live: true,
    async load(ctx) { return recordDetail(ctx.arg); },
  };

  async function recordDetail(recordId) {
    const r = await api(`/api/v1/records/${enc(recordId)}`);
    return h('div', {},
      h('h2', { text: `Record ${r.record_id}` }),
      facts([['status', badge(r.status)], ['reason', r.reason || ''], ['last error', r.last_error || ''],
        ['region', r.region], ['path', r.remote_path], ['TFD UUID', r.tfd_uuid || ''], ['issuer', r.issuer_rfc || ''],
        ['Fecha', r.issued_on || ''], ['archive', r.s3_key || ''], ['sha256', r.sha256 || ''], ['job', r.job_id ? h('a', { href: `#/jobs/${enc(r.job_id)}`, text: r.job_id }) : ''],
        ['attempts', r.attempts], ['created', when(r.created_at)], ['updated', when(r.updated_at)]]),
      h('h2', { text: `Audit history (${r.history.length})` }),
      table([{ label: 'when', value: (e) => when(e.created_at) }, { label: 'stage', value: (e) => e.stage },
        { label: 'from', value: (e) => e.from_status || '' }, { label: 'to', value: (e) => e.to_status },
        { label: 'reason', value: (e) => e.reason || '', testid: () => 'history-reason' }, { label: 'actor', value: (e) => e.actor },
        { label: 'detail', value: (e) => (e.detail ? JSON.stringify(e.detail) : ''), wrap: true }],
      r.history, { testid: 'history', rowid: () => 'history-row' }));
  }

  const VIEWS = { pipeline, jobs, 'dead-letters': deadLetters, reports, search, record };

  // ------------------------------------------------------------------ routing and polling
  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/pipeline';
    const [path, qs] = raw.split('?');
    const parts = path.split('/').filter(Boolean);
    const name = VIEWS[parts[0]] ? parts[0] : 'pipeline';
    return { name, arg: parts.slice(1).map(decodeURIComponent).join('/'), params: new URLSearchParams(qs || '') };
  }

  function setParam(key, value) {
    const { name, arg, params } = parseHash();
    params.set(key, value);
    location.hash = `#/${name}${arg ? '/' + enc(arg) : ''}?${params}`;
  }

  function route() {
    if (!token) return showLogin();
    const seq = ++routeSeq;
    const { name, arg, params } = parseHash();
    const view = VIEWS[name];
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.view === (name === 'record' ? 'search' : name));
    }
    destroyCharts(current);
    const main = $('view');
    const live = h('div', { testid: `view-${name}` });
    current = { view, seq, live, charts: [], ctx: null };
    current.ctx = { arg, params, charts: current.charts, after: null };
    main.replaceChildren(h('h1', { text: view.title }), view.controls ? view.controls(current.ctx) : '', live);
    document.title = `${view.title} — fiscalflow`;
    refresh();
    clearInterval(timer);
    timer = setInterval(() => { if (!document.hidden && current && current.view.live) refresh(); }, view.pollMs || POLL_MS);
  }

  function destroyCharts(state) {
    if (!state) return;
    for (const c of state.charts.splice(0)) if (c) c.destroy();
  }

  let refreshing = false;
  async function refresh() {
    if (!current || refreshing) return;
    refreshing = true;
    const state = current;
    const afters = [];
    const ctx = { ...state.ctx, charts: [], after: (fn) => afters.push(fn) };
    try {
      const node = await state.view.load(ctx);
      if (state !== current) return; // the route changed meanwhile
      destroyCharts(state);
      state.live.replaceChildren(node);
      afters.forEach((fn) => fn());
      state.charts.push(...ctx.charts);
      $('error').hidden = true;
      $('live').textContent = `updated ${new Date().toLocaleTimeString()}`;
      $('live').classList.remove('stale');
      document.body.dataset.loaded = String(state.seq);
    } catch (e) {
      if (e.status === 401) return;
      $('error').textContent = e.message;
      $('error').hidden = false;
      $('live').classList.add('stale');
      if (state === current && !state.live.childElementCount) {
        state.live.replaceChildren(h('p', { class: 'error', testid: 'view-error', text: e.message }));
      }
    } finally {
      refreshing = false;
    }
  }

  // ------------------------------------------------------------------ login
  function showLogin(message) {
    clearInterval(timer);
    destroyCharts(current);
    current = null;
    $('nav').hidden = $('logout').hidden = $('view').hidden = true;
    $('login').hidden = false;
    $('login-message').textContent = message || '';
    $('live').textContent = '';
  }

  function logout(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ADMIN_KEY);
    showLogin(message);
  }

  function login(value) {
    token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('login').hidden = true;
    $('nav').hidden = $('logout').hidden = $('view').hidden = false;
    route();
  }

  function start() {
    // `fiscalflow console` opens /#token=...: the fragment never reaches the server; it is moved to
    // sessionStorage and taken out of the address bar (and the history) at once.
    const m = location.hash.match(/^#token=([^&]*)(?:&(.*))?$/);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, '', `${location.pathname}${location.search}#${m[2] ? decodeURIComponent(m[2]) : '/pipeline'}`);
    }
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const v = $('login-token').value.trim();
      $('login-token').value = '';
      if (v) login(v);
    });
    $('logout').addEventListener('click', () => logout('Logged out.'));
    window.addEventListener('hashchange', () => { if (token) route(); });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) login(saved); else showLogin();
  }

  start();
})();
