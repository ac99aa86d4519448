// Tally's dashboard: a few pages over the JSON API, signed in with an API key kept in an
// HTTP-only cookie. No framework: DOM built with `h`, charts drawn as SVG by chart.js.

import { drawChart, PALETTE } from './chart.js';

// ---- the API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `the server answered ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json', 'x-tally-csrf': '1' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, { detail: `cannot reach Tally: ${e.message}` });
  }
  if (response.status === 401 && path !== '/ui/session') {
    showSignIn('Your session ended; sign in again.');
    throw new ApiError(401, { detail: 'signed out' });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
};

// ---- formatting for people

const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
export const fmt = {
  number: (v) => (v === null || v === undefined || v === '' ? '—' : numberFormat.format(Number(v))),
  bytes(v) {
    let n = Number(v) || 0;
    const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
    let u = 0;
    while (Math.abs(n) >= 1000 && u < units.length - 1) {
      n /= 1000;
      u += 1;
    }
    return `${new Intl.NumberFormat(undefined, { maximumFractionDigits: u ? 1 : 0 }).format(n)} ${units[u]}`;
  },
  money(v, currency = 'USD') {
    const n = Number(v) || 0;
    // LLM costs are often fractions of a cent: keep their significant digits.
    const digits = n !== 0 && Math.abs(n) < 1 ? 6 : 2;
    return new Intl.NumberFormat(undefined, { style: 'currency', currency, minimumFractionDigits: 2, maximumFractionDigits: digits }).format(n);
  },
  percent: (v) => `${new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 }).format(Number(v) || 0)} %`,
  date: (v) => (v ? new Date(v).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' }) : '—'),
  datetime: (v) => (v ? new Date(v).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '—'),
};

/** How to show a usage type's quantities. */
function unitFormat(usageType) {
  if (usageType && usageType.includes('bytes')) return fmt.bytes;
  return fmt.number;
}

// ---- DOM

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const main = () => document.getElementById('main');
let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

function loading(into, what = 'Loading…') {
  into.replaceChildren(h('p', { class: 'state loading', role: 'status' }, what));
}

function empty(into, what) {
  into.replaceChildren(h('p', { class: 'state empty' }, what));
}

function failure(into, error, retry) {
  into.replaceChildren(
    h('div', { class: 'state error', role: 'alert' }, h('p', {}, `Could not load this: ${error.message}`), retry ? h('button', { type: 'button', onclick: retry }, 'Try again') : null),
  );
}

/** Runs `load` into `into`, with loading and error states. */
async function section(into, load, what) {
  loading(into, what);
  try {
    await load();
  } catch (e) {
    if (e.status !== 401) failure(into, e, () => section(into, load, what));
  }
}

function labelled(text, control) {
  const id = control.id || (control.id = nextId('f'));
  return h('div', { class: 'field' }, h('label', { for: id }, text), control);
}

function select(options, value, attrs = {}) {
  return h('select', attrs, options.map(([v, t]) => h('option', { value: v, selected: String(v) === String(value) }, t)));
}

function table(columns, rows, { caption, sort, onSort } = {}) {
  const head = h(
    'tr',
    {},
    columns.map((c) => {
      if (!c.sort || !onSort) return h('th', { scope: 'col', class: c.numeric ? 'num' : '' }, c.label);
      const active = sort && sort.replace(/^-/, '') === c.sort;
      const direction = active ? (sort.startsWith('-') ? 'descending' : 'ascending') : 'none';
      const next = active && !sort.startsWith('-') ? `-${c.sort}` : c.sort;
      return h(
        'th',
        { scope: 'col', 'aria-sort': direction, class: c.numeric ? 'num' : '' },
        h('button', { type: 'button', class: 'sort', onclick: () => onSort(next) }, c.label, h('span', { 'aria-hidden': 'true' }, active ? (direction === 'ascending' ? ' ▲' : ' ▼') : '')),
      );
    }),
  );
  const body = rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.numeric ? 'num' : '', 'data-label': c.label }, c.cell(r)))));
  return h('div', { class: 'table-wrap' }, h('table', {}, caption ? h('caption', {}, caption) : null, h('thead', {}, head), h('tbody', {}, body)));
}

function csvDownload(filename, header, rows) {
  const cell = (v) => {
    const s = v === null || v === undefined ? '' : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const text = [header, ...rows].map((r) => r.map(cell).join(',')).join('\n') + '\n';
  const link = h('a', { href: URL.createObjectURL(new Blob([text], { type: 'text/csv' })), download: filename });
  document.body.append(link);
  link.click();
  link.remove();
}

// ---- who is signed in

let me = null;

function showSignIn(message) {
  me = null;
  document.body.classList.add('signed-out');
  document.getElementById('nav').hidden = true;
  const error = h('p', { class: 'form-error', role: 'alert', id: 'signin-error' }, message || '');
  const key = h('input', { type: 'password', name: 'key', autocomplete: 'current-password', required: true, placeholder: 'tly_…', 'aria-describedby': 'signin-error' });
  const form = h(
    'form',
    { class: 'signin card', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to Tally'),
    h('p', {}, 'Paste an API key. An admin key sees everything, an org key its organization, a user key its own usage.'),
    labelled('API key', key),
    error,
    h('button', { type: 'submit' }, 'Sign in'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      await api('/ui/session', { method: 'POST', body: { key: key.value.trim() } });
      await start();
    } catch (err) {
      error.textContent = err.status === 401 ? 'That key is unknown or revoked.' : err.message;
      key.focus();
    }
  });
  main().replaceChildren(form);
  key.focus();
}

async function signOut() {
  await api('/ui/session', { method: 'DELETE' }).catch(() => {});
  location.hash = '';
  showSignIn('You are signed out.');
}

async function start() {
  try {
    me = await api('/v1/me');
  } catch (e) {
    if (e.status !== 401) showSignIn(e.message);
    return;
  }
  document.body.classList.remove('signed-out');
  const nav = document.getElementById('nav');
  nav.hidden = false;
  document.getElementById('who').textContent = me.label;
  for (const link of nav.querySelectorAll('[data-needs]')) link.hidden = !me.can.includes(link.dataset.needs);
  route();
}

// ---- pages

const routes = [
  [/^#?\/?$/, () => usagePage()],
  [/^#\/usage$/, () => usagePage()],
  [/^#\/users$/, () => usersPage()],
  [/^#\/users\/(.+)$/, (m) => userPage(decodeURIComponent(m[1]))],
  [/^#\/seats$/, () => seatsPage()],
  [/^#\/churn$/, () => churnPage()],
];

function route() {
  if (!me) return;
  const hash = location.hash.split('?')[0];
  for (const link of document.querySelectorAll('#nav a[href^="#"]')) {
    const current = hash.startsWith(link.getAttribute('href')) || (hash === '' && link.getAttribute('href') === '#/usage');
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  for (const [pattern, page] of routes) {
    const m = hash.match(pattern);
    if (m) {
      page(m);
      main().focus({ preventScroll: true });
      return;
    }
  }
  main().replaceChildren(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/usage' }, 'Go to usage')));
}

function page(title, ...content) {
  document.title = `${title} · Tally`;
  main().replaceChildren(h('h1', {}, title), ...content);
}

/** The organization picker for admins (every organization) or the fixed one of an org key. */
async function organizations() {
  if (me.organization_id) return [[me.organization_id, me.organization_id]];
  if (me.kind !== 'admin') return [];
  const listed = await api('/v1/organizations?limit=1000');
  return listed.results.map((o) => [o.id, o.name && o.name !== o.id ? `${o.name} (${o.id})` : o.id]);
}

// -- usage

const RANGES = [
  ['-7d', 'Last 7 days'],
  ['-30d', 'Last 30 days'],
  ['-90d', 'Last 90 days'],
  ['-12m', 'Last 12 months'],
  ['custom', 'Custom…'],
];

async function usagePage() {
  const state = { organization: '', types: [], breakdown: '', interval: 'day', range: '-30d', from: '', to: '', compare: false, view: 'line', spend: false };
  const controls = h('form', { class: 'controls', 'aria-label': 'Usage filters' });
  const result = h('div', { class: 'result', 'aria-live': 'polite' });
  page('Usage', controls, result);
  await section(controls, async () => {
    const [orgs, types] = await Promise.all([organizations(), api('/v1/usage-types?limit=1000')]);
    state.organization = orgs[0]?.[0] || '';
    const usageTypes = types.results.map((t) => t.key);
    state.types = usageTypes.includes('submission') ? ['submission'] : usageTypes.slice(0, 1);
    const orgSelect = orgs.length > 1 ? labelled('Organization', select(orgs, state.organization, { name: 'organization' })) : null;
    const typeBoxes = h(
      'fieldset',
      { class: 'types' },
      h('legend', {}, 'Usage types'),
      usageTypes.map((t) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'type', value: t, checked: state.types.includes(t) }), t)),
    );
    const breakdowns = [['', 'None'], ['type', 'Usage type'], ['team', 'Team'], ['user', 'User'], ['model', 'Model'], ['provider', 'Provider']];
    if (me.kind === 'admin') breakdowns.push(['organization', 'Organization']);
    const from = h('input', { type: 'date', name: 'from' });
    const to = h('input', { type: 'date', name: 'to' });
    const custom = h('div', { class: 'custom-range', hidden: true }, labelled('From', from), labelled('To', to));
    controls.replaceChildren(
      ...[orgSelect].filter(Boolean),
      typeBoxes,
      labelled('Breakdown', select(breakdowns, '', { name: 'breakdown' })),
      labelled('Interval', select([['hour', 'Hour'], ['day', 'Day'], ['week', 'Week'], ['month', 'Month']], 'day', { name: 'interval' })),
      labelled('Date range', select(RANGES, '-30d', { name: 'range' })),
      custom,
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'compare' }), 'Compare with previous period'),
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'spend' }), 'Show spend (money)'),
      labelled('View', select([['line', 'Line'], ['area', 'Stacked area'], ['bar', 'Bars'], ['table', 'Table']], 'line', { name: 'view' })),
      h('button', { type: 'button', class: 'secondary', name: 'csv', onclick: () => downloadShown() }, 'Download CSV'),
    );
    controls.addEventListener('change', () => {
      const f = new FormData(controls);
      state.organization = f.get('organization') || state.organization;
      state.types = f.getAll('type');
      state.breakdown = f.get('breakdown') || '';
      state.interval = f.get('interval');
      state.range = f.get('range');
      state.from = f.get('from');
      state.to = f.get('to');
      state.compare = f.get('compare') === 'on';
      state.spend = f.get('spend') === 'on';
      state.view = f.get('view');
      custom.hidden = state.range !== 'custom';
      load();
    });
  });
  let shown = null;
  /** The numbers on screen, one row per series and date. */
  function downloadShown() {
    if (!shown || !shown.series.length) return;
    const rows = shown.series.flatMap((s) => shown.dates.map((d, i) => [s.label, d, s.data[i]]));
    csvDownload(`tally-${shown.kind}.csv`, ['series', 'date', shown.kind === 'spend' ? 'amount' : 'value'], rows);
  }
  async function load() {
    if (!state.types.length && state.breakdown !== 'type') {
      shown = null;
      empty(result, 'Pick at least one usage type (or break down by usage type).');
      return;
    }
    await section(result, async () => {
      const params = {
        interval: state.interval,
        compare: state.compare ? 'previous_period' : '',
        usage_type: state.breakdown === 'type' && !state.types.length ? '' : state.types.join(','),
        breakdowns: state.breakdown ? JSON.stringify([state.breakdown]) : '',
      };
      if (state.organization) params.organization_id = state.organization;
      if (me.kind === 'user') params.user_id = me.user_id;
      if (state.range === 'custom') {
        if (!state.from) return empty(result, 'Choose the first day of the range.');
        params.date_from = state.from;
        if (state.to) params.date_to = state.to;
      } else params.date_from = state.range;
      const answer = await api(`/v1/${state.spend ? 'spend' : 'usage'}${query(params)}`);
      const series = answer.results.map((s, k) => ({
        label: s.compare_label === 'previous' ? `${s.label} (previous)` : s.label,
        data: s.data.map(Number),
        dashed: s.compare_label === 'previous',
        colour: PALETTE[k % PALETTE.length],
        currency: s.currency,
      }));
      const dates = answer.results[0]?.dates || [];
      const dayFormat = state.interval === 'hour' ? (d) => new Date(d).toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit' }) : (d) => fmt.date(d);
      const categories = dates.map((d) => dayFormat(d.replace(/\+00:00$/, 'Z')));
      const currency = series[0]?.currency || 'USD';
      const format = state.spend ? (v) => fmt.money(v, currency) : unitFormat(state.types.length === 1 ? state.types[0] : '');
      shown = { kind: state.spend ? 'spend' : 'usage', categories, dates, series };
      if (!series.length || series.every((s) => s.data.every((v) => !v))) {
        empty(result, 'No usage in this range. Try a longer range or other usage types.');
        return;
      }
      const totals = h('p', { class: 'summary' }, answer.results.filter((s) => s.compare_label !== 'previous').map((s) => h('span', { class: 'pill' }, `${s.label}: ${format(s.count)}`)));
      const tableView = table(
        [{ label: 'Date', cell: (r) => r.label }, ...series.map((s, k) => ({ label: s.label, numeric: true, cell: (r) => format(r.values[k]) }))],
        categories.map((c, i) => ({ label: c, values: series.map((s) => s.data[i]) })),
        { caption: state.spend ? 'Spend per interval' : 'Usage per interval' },
      );
      if (state.view === 'table') {
        result.replaceChildren(totals, tableView);
      } else {
        const chartBox = h('div', { class: 'chart-box' });
        result.replaceChildren(totals, chartBox, h('details', {}, h('summary', {}, 'Show the numbers'), tableView));
        drawChart(chartBox, { categories, series, kind: state.view, format, label: `${state.spend ? 'Spend' : 'Usage'} per ${state.interval}` });
      }
    }, 'Loading usage…');
  }
  if (state.types.length || state.breakdown) load();
}

// -- users

async function usersPage() {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const state = { q: params.get('q') || '', ordering: params.get('ordering') || '-last_activity', offset: Number(params.get('offset')) || 0, limit: 25 };
  const q = h('input', { type: 'search', name: 'q', value: state.q, placeholder: 'e.g. organization__id:acme service_usage__submission__current_period__gte:100', spellcheck: 'false', 'aria-describedby': 'q-help q-error' });
  const error = h('div', { id: 'q-error', class: 'form-error', role: 'alert' });
  const form = h(
    'form',
    { class: 'controls', role: 'search' },
    h('div', { class: 'field grow' }, h('label', { for: q.id || (q.id = nextId('q')) }, 'Filter (q)'), q, h('small', { id: 'q-help' }, 'Terms like field:value, AND, OR, NOT, parentheses; a bare word searches usernames.'), error),
    h('button', { type: 'submit' }, 'Filter'),
  );
  const result = h('div', { class: 'result', 'aria-live': 'polite' });
  page('Users', form, result);
  if (me.kind !== 'admin') {
    empty(result, 'User reports need an admin key.');
    form.hidden = true;
    return;
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    state.q = q.value.trim();
    state.offset = 0;
    load();
  });
  function showQueryError(problem) {
    const at = Number(problem.position ?? 0);
    const text = state.q;
    error.replaceChildren(
      h('p', {}, problem.detail),
      h('pre', { class: 'q-marked', 'aria-label': `The query with the problem marked at position ${at}` }, text.slice(0, at), h('mark', {}, text.slice(at, at + Math.max(1, (problem.token || '').length)) || ' '), text.slice(at + Math.max(1, (problem.token || '').length))),
    );
    q.setAttribute('aria-invalid', 'true');
    q.focus();
    q.setSelectionRange(at, at + (problem.token || '').length);
  }
  async function load() {
    error.replaceChildren();
    q.removeAttribute('aria-invalid');
    history.replaceState(null, '', `#/users${query({ q: state.q, ordering: state.ordering, offset: state.offset || '' })}`);
    loading(result, 'Loading users…');
    let answer;
    try {
      answer = await api(`/v1/user-reports${query({ q: state.q, ordering: state.ordering, limit: state.limit, offset: state.offset })}`);
    } catch (e) {
      if (e.status === 400 && e.problem.parameter === 'q') {
        showQueryError(e.problem);
        result.replaceChildren();
      } else if (e.status !== 401) failure(result, e, load);
      return;
    }
    const balanceTypes = [...new Set(answer.results.flatMap((r) => Object.keys(r.service_usage?.balances || {})))].sort().slice(0, 3);
    const columns = [
      { label: 'User', sort: 'username', cell: (r) => [h('a', { href: `#/users/${encodeURIComponent(r.id)}` }, r.username || r.id), h('small', { class: 'block' }, r.full_name || '')] },
      { label: 'Organization', sort: 'organization__id', cell: (r) => r.organization?.name || r.organization?.id },
      { label: 'Last active', sort: 'last_activity', cell: (r) => fmt.date(r.last_activity) },
      { label: 'Submissions (period)', numeric: true, sort: 'service_usage__submission__current_period', cell: (r) => fmt.number(r.service_usage?.submission?.current_period ?? 0) },
      { label: 'LLM cost (period)', numeric: true, sort: 'service_usage__llm__current_period__cost', cell: (r) => fmt.money(r.service_usage?.llm?.current_period?.cost ?? 0) },
      ...balanceTypes.map((t) => ({ label: `${t} balance`, sort: `service_usage__balances__${t}__balance_percent`, cell: (r) => balanceBar(r.service_usage?.balances?.[t], t) })),
    ];
    const pager = h(
      'nav',
      { class: 'pager', 'aria-label': 'Pages' },
      h('button', { type: 'button', disabled: state.offset === 0, onclick: () => ((state.offset = Math.max(0, state.offset - state.limit)), load()) }, 'Previous'),
      h('span', {}, answer.count ? `${fmt.number(state.offset + 1)}–${fmt.number(Math.min(answer.count, state.offset + state.limit))} of ${fmt.number(answer.count)}` : ''),
      h('button', { type: 'button', disabled: state.offset + state.limit >= answer.count, onclick: () => ((state.offset += state.limit), load()) }, 'Next'),
    );
    const exportLink = h('a', { class: 'button secondary', href: `/v1/user-reports${query({ q: state.q, ordering: state.ordering, format: 'csv' })}`, download: 'tally-users.csv' }, `Export all ${fmt.number(answer.count)} as CSV`);
    const count = h('p', { class: 'summary', id: 'user-count' }, `${fmt.number(answer.count)} users match`);
    if (!answer.results.length) {
      result.replaceChildren(count);
      return;
    }
    result.replaceChildren(
      h('div', { class: 'toolbar' }, count, exportLink),
      table(columns, answer.results, { caption: 'Users', sort: state.ordering, onSort: (o) => ((state.ordering = o), (state.offset = 0), load()) }),
      pager,
    );
  }
  load();
}

function balanceBar(balance, type) {
  if (!balance) return '—';
  if (balance.effective_limit === null) return h('span', { class: 'muted' }, 'unlimited');
  const percent = Number(balance.balance_percent) || 0;
  const f = unitFormat(type);
  const fill = h('span', { class: 'fill' });
  fill.style.width = `${Math.min(100, percent).toFixed(1)}%`;
  return h(
    'div',
    { class: `balance${balance.exceeded ? ' exceeded' : ''}`, role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.min(100, percent).toFixed(1), 'aria-label': `${type}: ${fmt.percent(percent)} of ${f(balance.effective_limit)}${balance.exceeded ? ', exceeded' : ''}` },
    h('span', { class: 'bar' }, fill),
    h('span', { class: 'balance-text' }, `${fmt.percent(percent)}${balance.exceeded ? ' — exceeded' : ''}`),
  );
}

// -- one user

async function userPage(id) {
  const enc = encodeURIComponent(id);
  const head = h('div', { class: 'cards' });
  const charts = h('div', { class: 'grid2' });
  const requestsBox = h('div', { class: 'chart-box' });
  const costBox = h('div', { class: 'chart-box' });
  const modelsBox = h('div', { class: 'chart-box' });
  const churnBox = h('div', { class: 'chart-box' });
  const history = h('div');
  const alerts = h('div');
  page(
    `User ${id}`,
    h('p', {}, h('a', { href: '#/users' }, '← All users')),
    head,
    charts,
    h('section', { 'aria-labelledby': 'hist' }, h('h2', { id: 'hist' }, 'LLM requests'), history),
    h('section', { 'aria-labelledby': 'ualerts' }, h('h2', { id: 'ualerts' }, 'Alerts'), alerts),
  );
  charts.replaceChildren(
    h('section', { 'aria-labelledby': 'reqs' }, h('h2', { id: 'reqs' }, 'Requests per month'), requestsBox),
    h('section', { 'aria-labelledby': 'cost' }, h('h2', { id: 'cost' }, 'Cost per month'), costBox),
    h('section', { 'aria-labelledby': 'models' }, h('h2', { id: 'models' }, 'Models'), modelsBox),
    h('section', { 'aria-labelledby': 'churnh' }, h('h2', { id: 'churnh' }, 'Churn score'), churnBox),
  );
  section(head, async () => {
    const [user, summary] = await Promise.all([api(`/v1/users/${enc}`), api(`/v1/users/${enc}/llm/summary`)]);
    const s = summary.summary || summary;
    const card = (label, value) => h('div', { class: 'card stat' }, h('span', { class: 'stat-label' }, label), h('span', { class: 'stat-value' }, value));
    head.replaceChildren(
      card('Name', user.full_name || `${user.first_name || ''} ${user.last_name || ''}`.trim() || user.username || user.id),
      card('Organization', user.organization_id),
      card('LLM requests', fmt.number(s.total_requests)),
      card('Failed', fmt.number(s.failed_requests)),
      card('Tokens', fmt.number(s.total_tokens)),
      card('LLM cost', fmt.money(s.total_cost)),
      card('Avg latency', s.avg_latency_ms === null ? '—' : `${fmt.number(s.avg_latency_ms)} ms`),
      card('Most used model', s.most_used_model || '—'),
    );
  });
  section(requestsBox, async () => {
    const monthly = await api(`/v1/users/${enc}/llm/monthly`);
    const months = (monthly.results || monthly.months || []).slice().sort((a, b) => String(a.month).localeCompare(String(b.month)));
    if (!months.length) {
      empty(costBox, 'No LLM requests yet.');
      return empty(requestsBox, 'No LLM requests yet.');
    }
    const categories = months.map((m) => m.month);
    drawChart(requestsBox, { categories, kind: 'bar', series: [{ label: 'Requests', data: months.map((m) => m.request_count ?? 0) }], format: fmt.number, label: 'LLM requests per month' });
    drawChart(costBox, { categories, kind: 'line', series: [{ label: 'Cost', data: months.map((m) => Number(m.total_cost ?? 0)), colour: PALETTE[5] }], format: (v) => fmt.money(v), label: 'LLM cost per month' });
  });
  section(modelsBox, async () => {
    const rows = (await api(`/v1/users/${enc}/llm/breakdown?by=model,provider`)).results;
    if (!rows.length) return empty(modelsBox, 'No models used yet.');
    drawChart(modelsBox, { categories: rows.map((r) => `${r.model} (${r.provider})`), kind: 'bar', series: [{ label: 'Requests', data: rows.map((r) => r.request_count) }], format: fmt.number, label: 'Requests per model' });
    modelsBox.append(
      table(
        [
          { label: 'Model', cell: (r) => r.model },
          { label: 'Provider', cell: (r) => r.provider },
          { label: 'Requests', numeric: true, cell: (r) => fmt.number(r.request_count) },
          { label: 'Tokens', numeric: true, cell: (r) => fmt.number(r.total_tokens) },
          { label: 'Cost', numeric: true, cell: (r) => fmt.money(r.total_cost) },
          { label: 'Failure rate', numeric: true, cell: (r) => fmt.percent(r.failure_rate * 100) },
        ],
        rows,
      ),
    );
  });
  section(churnBox, async () => {
    const rows = (await api(`/v1/users/${enc}/churn?limit=90`)).results.slice().reverse();
    if (!rows.length) return empty(churnBox, 'No churn scores for this user (only subscribers are scored).');
    drawChart(churnBox, { categories: rows.map((r) => fmt.date(r.report_date)), kind: 'line', series: [{ label: 'Risk score', data: rows.map((r) => r.score), colour: PALETTE[5] }], format: fmt.number, label: 'Churn score per day' });
  });
  let cursors = [null];
  const loadHistory = () =>
    section(history, async () => {
      const cursor = cursors[cursors.length - 1];
      const answer = await api(`/v1/users/${enc}/llm/requests${query({ limit: 20, cursor })}`);
      const rows = answer.results || [];
      if (!rows.length) return empty(history, 'No LLM requests.');
      history.replaceChildren(
        table(
          [
            { label: 'When', cell: (r) => fmt.datetime(r.timestamp) },
            { label: 'Model', cell: (r) => r.model },
            { label: 'Status', cell: (r) => h('span', { class: `status ${r.status}` }, r.status) },
            { label: 'Tokens', numeric: true, cell: (r) => fmt.number((r.input_tokens || 0) + (r.output_tokens || 0)) },
            { label: 'Cost', numeric: true, cell: (r) => (r.cost === null || r.cost === undefined ? '—' : fmt.money(r.cost)) },
            { label: 'Latency', numeric: true, cell: (r) => (r.latency_ms === null || r.latency_ms === undefined ? '—' : `${fmt.number(r.latency_ms)} ms`) },
          ],
          rows,
        ),
        h(
          'nav',
          { class: 'pager', 'aria-label': 'Request pages' },
          h('button', { type: 'button', disabled: cursors.length === 1, onclick: () => (cursors.pop(), loadHistory()) }, 'Newer'),
          h('button', { type: 'button', disabled: !answer.next_cursor, onclick: () => (cursors.push(answer.next_cursor), loadHistory()) }, 'Older'),
        ),
      );
    });
  loadHistory();
  section(alerts, async () => {
    const answer = await api(`/v1/alerts${query({ user_id: id, limit: 50 })}`);
    if (!answer.results.length) return empty(alerts, 'No alerts for this user.');
    alerts.replaceChildren(alertTable(answer.results, () => userPage(id)));
  });
}

// -- seats

async function seatsPage() {
  const controls = h('form', { class: 'controls', 'aria-label': 'Whose seats' });
  const result = h('div', { class: 'result' });
  page('Seats', controls, result);
  await section(controls, async () => {
    const choices = (await organizations()).map(([id, label]) => [`organizations/${id}`, label]);
    if (me.kind === 'admin') {
      const servers = await api('/v1/servers');
      for (const s of servers.results || servers) choices.push([`servers/${s.id}`, `Server ${s.name || s.hostname || s.id}`]);
    }
    if (!choices.length) return empty(controls, 'Seats need an admin or org key.');
    const which = select(choices, choices[0][0], { name: 'subject' });
    controls.replaceChildren(labelled('Organization or server', which));
    which.addEventListener('change', () => load(which.value));
    load(choices[0][0]);
  });
  function load(subject) {
    section(result, async () => {
      const now = new Date();
      const days = Array.from({ length: 30 }, (_, i) => new Date(now.getTime() - (29 - i) * 86400000));
      const [counts, ledger, invoice] = await Promise.all([
        Promise.all(days.map((d) => api(`/v1/${subject}/seats?at=${encodeURIComponent(d.toISOString())}`))),
        api(`/v1/${subject}/license-ledger?limit=50`),
        api(`/v1/${subject}/invoice-preview`).catch((e) => ({ error: e })),
      ]);
      const chartBox = h('div', { class: 'chart-box' });
      const today = counts[counts.length - 1];
      result.replaceChildren(
        h('div', { class: 'cards' }, h('div', { class: 'card stat' }, h('span', { class: 'stat-label' }, 'Seats now'), h('span', { class: 'stat-value' }, fmt.number(today.seats)))),
        h('section', { 'aria-labelledby': 'seatsc' }, h('h2', { id: 'seatsc' }, 'Seats over the last 30 days'), chartBox),
        h('section', { 'aria-labelledby': 'ledger' }, h('h2', { id: 'ledger' }, 'License ledger'), ledger.results.length ? table(
          [
            { label: 'When', cell: (r) => fmt.datetime(r.event_time) },
            { label: 'Licenses', numeric: true, cell: (r) => fmt.number(r.licenses) },
            { label: 'At next renewal', numeric: true, cell: (r) => fmt.number(r.licenses_at_next_renewal) },
            { label: 'Cause', cell: (r) => (r.is_renewal ? 'renewal' : r.audit_id) },
          ],
          ledger.results,
        ) : h('p', { class: 'state empty' }, 'No ledger rows yet.')),
        h('section', { 'aria-labelledby': 'invoice' }, h('h2', { id: 'invoice' }, 'Next invoice'), invoiceView(invoice)),
      );
      drawChart(chartBox, { categories: days.map((d) => fmt.date(d)), kind: 'line', series: [{ label: 'Seats', data: counts.map((c) => c.seats) }], format: fmt.number, label: 'Seats per day' });
    });
  }
}

function invoiceView(invoice) {
  if (invoice.error) return h('p', { class: 'state empty' }, invoice.error.status === 404 ? 'No subscription to invoice.' : invoice.error.message);
  return h(
    'div',
    {},
    h('p', {}, `Invoice date ${fmt.date(invoice.invoice_date)}, plan ${invoice.plan_id}: `, h('strong', {}, fmt.money(invoice.total, invoice.currency))),
    table(
      [
        { label: 'Line', cell: (r) => r.description },
        { label: 'Quantity', numeric: true, cell: (r) => fmt.number(r.quantity) },
        { label: 'Unit price', numeric: true, cell: (r) => fmt.money(r.unit_price, invoice.currency) },
        { label: 'Amount', numeric: true, cell: (r) => fmt.money(r.amount, invoice.currency) },
      ],
      invoice.lines || [],
    ),
  );
}

// -- churn and alerts

const LEVELS = ['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'];

async function churnPage() {
  const distribution = h('div', { class: 'chart-box' });
  const high = h('div');
  const risers = h('div');
  const open = h('div');
  const day = h('input', { type: 'date', name: 'date' });
  const controls = h('form', { class: 'controls', 'aria-label': 'Which report' }, labelled('Report day', day));
  page(
    'Churn & alerts',
    controls,
    h('section', { 'aria-labelledby': 'dist' }, h('h2', { id: 'dist' }, 'Risk levels'), distribution),
    h('section', { 'aria-labelledby': 'alerts' }, h('h2', { id: 'alerts' }, 'Open alerts'), open),
    h('div', { class: 'grid2' }, h('section', { 'aria-labelledby': 'high' }, h('h2', { id: 'high' }, 'High risk'), high), h('section', { 'aria-labelledby': 'rise' }, h('h2', { id: 'rise' }, 'Rising risk (7 days)'), risers)),
  );
  // One day's report: the latest unless another day is picked.
  const loadDay = (date) => {
    section(distribution, async () => {
      const counts = await Promise.all(LEVELS.map((l) => api(`/v1/reports/churn${query({ risk_level: l, limit: 1, date })}`)));
      const shown = counts.find((c) => c.date)?.date;
      if (!shown) return empty(distribution, date ? `No churn report for ${fmt.date(date)}.` : 'No churn report yet: it runs daily at 02:00 UTC (or `tally report generate churn`).');
      if (!day.value) day.value = shown;
      drawChart(distribution, { categories: LEVELS, kind: 'bar', series: [{ label: `Users on ${fmt.date(shown)}`, data: counts.map((c) => c.count) }], format: fmt.number, label: `Users per risk level on ${shown}` });
    });
    section(high, async () => {
      const level = async (l) => (await api(`/v1/reports/churn${query({ risk_level: l, limit: 25, date })}`)).results;
      const rows = [...(await level('CRITICAL')), ...(await level('HIGH'))].slice(0, 25);
      if (!rows.length) return empty(high, 'Nobody is at high risk.');
      high.replaceChildren(churnTable(rows));
    });
    section(risers, async () => {
      const rows = (await api(`/v1/reports/churn/risers${query({ days: 7, min_increase: 10, limit: 25, date })}`)).results;
      if (!rows.length) return empty(risers, 'No score rose by 10 points or more.');
      risers.replaceChildren(table([...churnColumns(), { label: 'Rise', numeric: true, cell: (r) => `+${fmt.number(r.increase)}` }], rows));
    });
  };
  day.addEventListener('change', () => loadDay(day.value));
  loadDay('');
  const loadOpen = () =>
    section(open, async () => {
      const answer = await api('/v1/alerts?status=open&limit=50');
      if (!answer.results.length) return empty(open, 'No open alerts.');
      open.replaceChildren(h('p', { class: 'summary' }, `${fmt.number(answer.count)} open`), alertTable(answer.results, loadOpen));
    });
  loadOpen();
}

function churnColumns() {
  return [
    { label: 'User', cell: (r) => h('a', { href: `#/users/${encodeURIComponent(r.user_id)}` }, r.user_id) },
    { label: 'Organization', cell: (r) => r.organization_id },
    { label: 'Score', numeric: true, cell: (r) => fmt.number(r.score) },
    { label: 'Level', cell: (r) => h('span', { class: `level ${String(r.risk_level).toLowerCase()}` }, r.risk_level) },
  ];
}

function churnTable(rows) {
  return table(churnColumns(), rows);
}

function alertTable(alerts, reload) {
  return table(
    [
      { label: 'Opened', cell: (a) => fmt.datetime(a.opened_at) },
      { label: 'Type', cell: (a) => a.alert_type },
      { label: 'Severity', cell: (a) => h('span', { class: `level ${a.severity}` }, a.severity) },
      { label: 'Whom', cell: (a) => (a.user_id ? h('a', { href: `#/users/${encodeURIComponent(a.user_id)}` }, a.user_id) : a.team_id || a.organization_id || 'system') },
      { label: 'What', cell: (a) => alertSummary(a) },
      { label: 'Status', cell: (a) => (a.status === 'open' ? h('button', { type: 'button', class: 'secondary', onclick: () => resolveDialog(a, reload) }, 'Resolve…') : `resolved ${fmt.date(a.resolved_at)}`) },
    ],
    alerts,
  );
}

function alertSummary(a) {
  const d = a.details || {};
  if (a.source === 'churn_report') return `churn report ${a.report_date}, risk ${d.risk_level || ''}`;
  const value = a.alert_type === 'LLM_COST' ? fmt.money(d.value) : fmt.number(d.value);
  const line = a.alert_type === 'LLM_COST' ? fmt.money(d.step_threshold) : fmt.number(d.step_threshold);
  return `${d.rule_name || a.rule_id}: ${value} (line ${line})`;
}

function resolveDialog(alert, reload) {
  const text = h('textarea', { name: 'action_taken', required: true, rows: 3, maxlength: 2000 });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const dialog = h(
    'dialog',
    { 'aria-labelledby': 'resolve-title' },
    h(
      'form',
      { method: 'dialog' },
      h('h2', { id: 'resolve-title' }, `Resolve ${alert.alert_type}`),
      labelled('What did you do?', text),
      error,
      h('div', { class: 'actions' }, h('button', { type: 'submit', value: 'ok' }, 'Resolve'), h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, 'Cancel')),
    ),
  );
  dialog.querySelector('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api(`/v1/alerts/${encodeURIComponent(alert.id)}/resolve`, { method: 'POST', body: { action_taken: text.value.trim() } });
      dialog.close();
      reload();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  text.focus();
}

// ---- wiring

document.getElementById('signout').addEventListener('click', signOut);
window.addEventListener('hashchange', route);
start();
