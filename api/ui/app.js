// agentq's session viewer. Plain JavaScript, no build step, served from the API binary.
//
// Safety: everything that comes from the API (the model's words, tool arguments, tool results,
// fetched web pages) reaches the page through textContent, never as HTML; the page's
// Content-Security-Policy allows only this script and its stylesheet.
//
// The API key lives in sessionStorage (gone when the tab closes) and travels only in the
// Authorization header, never in a URL.
'use strict';

const KEY = 'agentq.key';
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const STATUSES = ['queued', 'pending', 'running', 'awaiting_approval', 'completed', 'failed', 'cancelled'];
const TERMINAL = ['completed', 'failed', 'cancelled'];
const FOLD_AT = 600;

// ---- small helpers ----------------------------------------------------------------------------

/** An element with attributes (`on*` as listeners) and children (strings become text). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'text') el.textContent = String(value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces an element's children, skipping the absent ones (DOM would write "null"). */
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
}

function key() {
  return sessionStorage.getItem(KEY);
}

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the API answered ${status}`);
    this.status = status;
    this.code = error.code;
    this.fields = error.fields;
  }
}

/** A call to the API with the signed-in key; a 401 signs out. */
async function api(method, path, body) {
  const headers = { authorization: `Bearer ${key()}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) {
    signOut('The API refused this key. Sign in again.');
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function statusBadge(status) {
  return h('span', { class: `status ${status}`, 'data-status': status }, status.replace('_', ' '));
}

function money(cost) {
  if (cost === null || cost === undefined) return '—';
  const n = Number(cost);
  return `$${n < 0.01 && n > 0 ? n.toFixed(6) : n.toFixed(4)}`;
}

function age(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function millis(ms) {
  if (!(ms >= 0)) return null;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

function pretty(value) {
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

/** A block of text or JSON, folded when long; marked when it holds untrusted web content. */
function block(label, value) {
  const text = pretty(value);
  const untrusted = text.includes('<untrusted_web_content');
  const pre = h('pre', { class: untrusted ? 'untrusted' : undefined }, text);
  const mark = untrusted
    ? h('span', { class: 'badge untrusted-mark', title: 'Fetched from the web: not written by the model or by you' },
      'untrusted web content')
    : null;
  if (text.length <= FOLD_AT) return h('div', {}, h('div', { class: 'small muted' }, label, ' ', mark), pre);
  return h('details', {},
    h('summary', {}, `${label} (${text.length.toLocaleString()} characters) `, mark),
    pre);
}

// ---- views --------------------------------------------------------------------------------------

let stopView = () => {};

function route() {
  stopView();
  stopView = () => {};
  if (!key()) {
    nav.hidden = true;
    signIn();
    return;
  }
  nav.hidden = false;
  const hash = location.hash || '#/';
  const session = hash.match(/^#\/s\/([0-9a-fA-F-]{36})$/);
  if (session) stopView = sessionView(session[1]);
  else if (hash === '#/new') newSession();
  else stopView = listView(new URLSearchParams(hash.split('?')[1] || ''));
  main.focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  stopView();
  stopView = () => {};
  nav.hidden = true;
  signIn(message);
}

function signIn(message) {
  const input = h('input', {
    type: 'password', id: 'api-key', name: 'api-key', autocomplete: 'off', required: true,
    placeholder: 'aq_…', 'aria-describedby': 'sign-in-help',
  });
  const error = h('p', { class: 'error', role: 'alert', id: 'sign-in-error' }, message || '');
  const form = h('form', {
    class: 'card',
    onsubmit: async (event) => {
      event.preventDefault();
      const candidate = input.value.trim();
      error.textContent = '';
      const response = await fetch('/v1/agents?limit=1', {
        headers: { authorization: `Bearer ${candidate}` },
      }).catch(() => null);
      if (!response || !response.ok) {
        error.textContent = response && response.status === 401
          ? 'That key was refused.'
          : 'The API did not answer; try again.';
        return;
      }
      sessionStorage.setItem(KEY, candidate);
      if (!location.hash || location.hash === '#') location.hash = '#/';
      route();
    },
  },
  h('h1', {}, 'Sign in'),
  h('label', { for: 'api-key' }, 'API key'),
  input,
  h('p', { class: 'small muted', id: 'sign-in-help' },
    'Kept in this tab only (session storage) and sent as the bearer token. ',
    'Make one with `agentq admin create-key --org NAME`; `agentq dev` prints one.'),
  error,
  h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Sign in')));
  fill(main, form);
  input.focus();
}

/** The org's sessions, newest first; the first page refreshes itself. */
function listView(params) {
  const status = STATUSES.includes(params.get('status')) ? params.get('status') : '';
  const cursors = [];
  let cursor = null;
  let timer = null;
  let stopped = false;
  const filter = h('select', {
    id: 'status-filter',
    onchange: () => { location.hash = filter.value ? `#/?status=${filter.value}` : '#/'; },
  }, h('option', { value: '' }, 'all'), STATUSES.map((s) => h('option', { value: s, selected: s === status }, s.replace('_', ' '))));
  const body = h('tbody', {});
  const error = h('p', { class: 'error', role: 'alert' });
  const newer = h('button', { type: 'button', onclick: () => { cursor = cursors.pop() || null; load(); } }, '← Newer');
  const older = h('button', { type: 'button' }, 'Older →');
  fill(main,
    h('h1', {}, 'Sessions'),
    h('div', { class: 'toolbar' },
      h('div', {}, h('label', { for: 'status-filter' }, 'Status'), filter),
      h('a', { href: '#/new' }, 'New session')),
    error,
    h('table', { id: 'sessions' },
      h('thead', {}, h('tr', {},
        h('th', {}, 'Session'), h('th', {}, 'Status'), h('th', { class: 'hide-narrow' }, 'Model'),
        h('th', { class: 'num' }, 'Steps'), h('th', { class: 'num' }, 'Cost'), h('th', { class: 'hide-narrow' }, 'Age'))),
      body),
    h('div', { class: 'actions' }, newer, older));

  async function load() {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: '20' });
    if (status) query.set('status', status);
    if (cursor) query.set('cursor', cursor);
    try {
      const page = await api('GET', `/v1/agents?${query}`);
      if (stopped) return;
      error.textContent = '';
      fill(body, ...page.sessions.map((s) => h('tr', { 'data-session-id': s.session_id },
        h('td', {}, h('a', { href: `#/s/${s.session_id}`, title: s.session_id }, s.session_id.slice(0, 8) + '…')),
        h('td', {}, statusBadge(s.status)),
        h('td', { class: 'hide-narrow' }, s.model),
        h('td', { class: 'num' }, s.steps),
        h('td', { class: 'num' }, money(s.cost_usd)),
        h('td', { class: 'hide-narrow' }, h('time', { datetime: s.created_at, title: s.created_at }, age(s.created_at))))));
      if (page.sessions.length === 0) fill(body, h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No sessions yet.')));
      newer.disabled = cursors.length === 0 && !cursor;
      older.disabled = !page.next_cursor;
      older.onclick = () => { cursors.push(cursor); cursor = page.next_cursor; load(); };
    } catch (e) {
      if (!stopped) error.textContent = e.message;
    }
    // The first page follows new sessions; older pages hold still.
    if (!stopped && !cursor) timer = setTimeout(load, 2000);
  }
  load();
  return () => { stopped = true; clearTimeout(timer); };
}

/** The form that starts a session. */
async function newSession() {
  const error = h('p', { class: 'error', role: 'alert', id: 'run-error' });
  const question = h('textarea', { id: 'question', required: true });
  const model = h('input', { type: 'text', id: 'model', placeholder: 'the deployment\'s default' });
  const maxSteps = h('input', { type: 'number', id: 'max-steps', min: 1, max: 50, placeholder: '10' });
  const maxTokens = h('input', { type: 'number', id: 'max-tokens', min: 1, placeholder: 'none' });
  const maxCost = h('input', { type: 'number', id: 'max-cost', min: 0, step: 'any', placeholder: 'none' });
  const approvalTimeout = h('input', { type: 'number', id: 'approval-timeout', min: 1, max: 604800, placeholder: 'a day' });
  const onTimeout = h('select', { id: 'on-approval-timeout' },
    ['fail', 'reject', 'approve'].map((v) => h('option', { value: v }, v)));
  const tools = h('fieldset', { id: 'tools' }, h('legend', {}, 'Tools'));
  const submit = h('button', { class: 'primary', type: 'submit' }, 'Start');
  const form = h('form', {
    class: 'card',
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = '';
      const body = { messages: [{ role: 'user', content: question.value }] };
      if (model.value.trim()) body.model = model.value.trim();
      const chosen = [...tools.querySelectorAll('input:checked')].map((i) => i.value);
      body.tools = chosen;
      if (maxSteps.value) body.max_steps = Number(maxSteps.value);
      if (maxTokens.value) body.max_tokens = Number(maxTokens.value);
      if (maxCost.value) body.max_cost_usd = Number(maxCost.value);
      if (approvalTimeout.value) body.approval_timeout = Number(approvalTimeout.value);
      if (onTimeout.value !== 'fail') body.on_approval_timeout = onTimeout.value;
      submit.disabled = true;
      try {
        const created = await api('POST', '/v1/agents/run', body);
        location.hash = `#/s/${created.session_id}`;
      } catch (e) {
        error.textContent = e.message;
        submit.disabled = false;
      }
    },
  },
  h('h1', {}, 'New session'),
  h('label', { for: 'question' }, 'Question'), question,
  tools,
  h('div', { class: 'grid' },
    h('div', {}, h('label', { for: 'model' }, 'Model'), model),
    h('div', {}, h('label', { for: 'max-steps' }, 'Max steps'), maxSteps),
    h('div', {}, h('label', { for: 'max-tokens' }, 'Max tokens'), maxTokens),
    h('div', {}, h('label', { for: 'max-cost' }, 'Max cost (USD)'), maxCost),
    h('div', {}, h('label', { for: 'approval-timeout' }, 'Approval wait (s)'), approvalTimeout),
    h('div', {}, h('label', { for: 'on-approval-timeout' }, 'When no one decides'), onTimeout)),
  error,
  h('div', { class: 'actions' }, submit));
  fill(main, form);
  question.focus();
  try {
    const offered = await api('GET', '/v1/tools');
    for (const tool of offered.tools) {
      const id = `tool-${tool.name}`;
      tools.append(h('label', { for: id, title: tool.description },
        h('input', { type: 'checkbox', id, value: tool.name, checked: !tool.requires_approval }),
        tool.name, tool.requires_approval ? ' (asks for approval)' : ''));
    }
  } catch (e) {
    error.textContent = e.message;
  }
}

/** One session's timeline, live over its event stream. */
function sessionView(id) {
  let stopped = false;
  let session = null;
  let lastSeq = 0;
  let ended = false;
  const times = new Map(); // step -> { decided, observed } (ms since epoch, from the events)
  const controller = new AbortController();
  const live = h('span', { class: 'live off', id: 'live', role: 'status' }, 'connecting…');
  const head = h('section', { class: 'card', id: 'summary', 'aria-live': 'polite' });
  const approval = h('section', { id: 'approval' });
  const steps = h('section', { id: 'steps', 'aria-label': 'Steps' });
  const outcome = h('section', { id: 'outcome' });
  const hooks = h('section', { id: 'webhooks' });
  const error = h('p', { class: 'error', role: 'alert' });
  fill(main,
    h('div', { class: 'toolbar' }, h('a', { href: '#/' }, '← Sessions'), live),
    error, head, approval, steps, outcome, hooks);

  let refreshing = false;
  let again = false;
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      do {
        again = false;
        session = await api('GET', `/v1/agents/${id}`);
        if (stopped) return;
        error.textContent = '';
        render();
        refreshHooks();
      } while (again && !stopped);
    } catch (e) {
      if (!stopped) error.textContent = e.status === 404 ? 'No such session.' : e.message;
    } finally {
      refreshing = false;
    }
  }

  function render() {
    const s = session;
    const t = s.totals;
    const cancel = TERMINAL.includes(s.status) ? null : h('button', {
      type: 'button', class: 'danger', id: 'cancel',
      onclick: async (event) => {
        event.target.disabled = true;
        try { await api('POST', `/v1/agents/${id}/cancel`); } catch (e) { error.textContent = e.message; }
        refresh();
      },
    }, s.cancel_requested ? 'Cancelling…' : 'Cancel');
    if (cancel && s.cancel_requested) cancel.disabled = true;
    fill(head,
      h('header', { class: 'step' },
        h('h1', {}, 'Session ', h('code', {}, id)),
        statusBadge(s.status)),
      h('dl', { class: 'totals' },
        [['Model', s.model], ['Steps', t.steps], ['LLM calls', t.llm_calls],
          ['Input tokens', t.input_tokens.toLocaleString()], ['Output tokens', t.output_tokens.toLocaleString()],
          ['Cost', money(t.cost_usd)], ['Started', age(s.created_at)]]
          .map(([name, value]) => h('div', {}, h('dt', {}, name), h('dd', {}, value)))),
      cancel ? h('div', { class: 'actions' }, cancel) : null);
    renderApproval(s.pending_approval);
    renderSteps(s.steps, s.pending_approval ? s.pending_approval.step : null);
    fill(outcome,
      s.final_answer !== null && s.final_answer !== undefined
        ? h('div', { class: 'card', id: 'final-answer' }, h('h2', {}, 'Final answer'), h('div', { class: 'answer' }, s.final_answer))
        : null,
      s.error
        ? h('div', { class: 'card', id: 'session-error' }, h('h2', {}, 'Error'),
          h('p', {}, h('code', {}, s.error.code)), h('p', { class: 'error' }, s.error.message))
        : null);
  }

  /** The session's webhook messages; read again every 5 s while one is still pending (the
   *  sender's attempts make no session event). Shown only when the session has any. */
  let hooksTimer = null;
  async function refreshHooks() {
    clearTimeout(hooksTimer);
    try {
      const { deliveries } = await api('GET', `/v1/agents/${id}/webhooks`);
      if (stopped) return;
      renderHooks(deliveries);
      if (deliveries.some((d) => d.state === 'pending')) hooksTimer = setTimeout(refreshHooks, 5000);
    } catch {
      // The session's own view reports errors; this card just stays as it was.
    }
  }

  function renderHooks(deliveries) {
    if (!deliveries.length) { fill(hooks); return; }
    fill(hooks, h('div', { class: 'card', id: 'webhook-deliveries' },
      h('h2', {}, 'Webhooks'),
      deliveries.map((d) => h('div', { class: 'webhook', 'data-webhook': d.webhook_id },
        h('div', {}, h('span', { class: 'tool' }, d.type), ' ',
          h('span', { class: `status ${d.state}` }, d.state), ' ',
          h('span', { class: 'small muted' }, d.url)),
        h('ol', { class: 'small' }, d.attempts.map((a) => h('li', {},
          `${new Date(a.at).toLocaleTimeString()}: `,
          a.status_code !== null && a.status_code !== undefined ? `HTTP ${a.status_code}` : a.error,
          ` (${millis(a.duration_ms)})`))),
        d.state === 'pending' && d.next_attempt_at
          ? h('p', { class: 'small muted' }, `next attempt ${new Date(d.next_attempt_at).toLocaleString()}`)
          : null))));
  }

  function renderApproval(pending) {
    if (!pending) { fill(approval); return; }
    // Kept while the same step waits, so a reason being typed survives a refresh.
    if (approval.dataset.step === String(pending.step) && approval.firstChild) return;
    approval.dataset.step = String(pending.step);
    const reason = h('input', { type: 'text', id: 'approval-reason', placeholder: 'optional' });
    const decide = (approved) => async () => {
      for (const b of approval.querySelectorAll('button')) b.disabled = true;
      try {
        await api('POST', `/v1/agents/${id}/approve`, { step: pending.step, approved, reason: reason.value || null });
      } catch (e) {
        error.textContent = e.message;
        for (const b of approval.querySelectorAll('button')) b.disabled = false;
        return;
      }
      fill(approval, h('p', { class: 'card' }, approved ? 'Approved.' : 'Rejected.'));
      delete approval.dataset.step;
      refresh();
    };
    const calls = pending.calls && pending.calls.length
      ? pending.calls
      : [{ call: 0, tool: pending.tool, args: pending.args, details: pending.details, requires_approval: true }];
    fill(approval, h('div', { class: 'card approval' },
      h('h2', {}, `Step ${pending.step} waits for your approval`),
      h('p', { class: 'small muted' }, `Until ${new Date(pending.expires_at).toLocaleString()}. `,
        'Nothing of this turn runs before you decide; a rejection refuses the calls marked below.'),
      calls.map((call) => h('div', { class: 'call', 'data-call': call.call },
        h('div', {}, h('span', { class: 'tool' }, call.tool),
          call.requires_approval ? h('span', { class: 'badge untrusted-mark' }, ' needs approval') : null),
        approvalDetails(call))),
      h('label', { for: 'approval-reason' }, 'Reason'), reason,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', id: 'approve', onclick: decide(true) }, 'Approve'),
        h('button', { type: 'button', class: 'danger', id: 'reject', onclick: decide(false) }, 'Reject'))));
  }

  /** Exactly what will run: for sql_query the SQL, its parameters and the policy's verdict. */
  function approvalDetails(call) {
    const args = call.args || {};
    const d = call.details;
    if (call.tool === 'sql_query' && typeof args.query === 'string') {
      const policy = (d && (d.policy || d)) || {};
      const verdict = policy.allowed
        ? policy.classification
        : { rule: policy.rule, detail: policy.detail };
      return h('div', {},
        h('div', { class: 'small muted' }, 'SQL'), h('pre', { class: 'sql' }, args.query),
        h('div', { class: 'small muted' }, 'Parameters'), h('pre', { class: 'params' }, pretty(args.params || [])),
        h('div', { class: 'small muted' }, policy.allowed ? 'Classification' : 'Refused by the policy'),
        h('pre', { class: policy.allowed ? 'classification' : 'refusal' }, pretty(verdict)));
    }
    return h('div', {}, h('div', { class: 'small muted' }, 'Arguments'), h('pre', {}, pretty(args)),
      d ? block('Details', d) : null);
  }

  function renderSteps(list, waiting) {
    const existing = new Map([...steps.children].map((el) => [el.dataset.step, el]));
    const wanted = list.map((step) => {
      const timing = times.get(step.index) || {};
      const held = waiting === step.index;
      const signature = JSON.stringify([step, timing, held]);
      const old = existing.get(String(step.index));
      if (old && old.dataset.signature === signature) return old;
      const el = stepCard(step, timing, held);
      el.dataset.signature = signature;
      // A fold the reader opened stays open when the step is drawn again.
      if (old) {
        const open = [...old.querySelectorAll('details')].map((d) => d.open);
        el.querySelectorAll('details').forEach((d, i) => { if (open[i]) d.open = true; });
      }
      return el;
    });
    fill(steps, ...wanted);
  }

  function stepCard(step, timing, held) {
    const calls = step.actions && step.actions.length ? step.actions : (step.action ? [step.action] : []);
    const results = step.observations && step.observations.length
      ? step.observations : (step.observation ? [step.observation] : []);
    const started = Date.parse(step.started_at);
    const finished = step.finished_at ? Date.parse(step.finished_at) : null;
    const llm = timing.decided ? millis(timing.decided - started) : null;
    const toolEnd = finished || timing.observed;
    const tool = calls.length && timing.decided && toolEnd ? millis(toolEnd - timing.decided) : null;
    return h('article', { class: 'card step', 'data-step': step.index },
      h('header', {},
        h('h2', {}, `Step ${step.index}`),
        h('div', { class: 'meta' },
          h('span', {}, `${step.usage.input_tokens.toLocaleString()} in / ${step.usage.output_tokens.toLocaleString()} out tokens`),
          h('span', {}, money(step.cost_usd)),
          llm ? h('span', { class: 'llm-time' }, `LLM ${llm}`) : null,
          tool ? h('span', { class: 'tool-time' }, `tool ${tool}`) : null,
          held ? h('span', {}, 'waits for approval')
            : !finished && !step.is_final ? h('span', {}, 'running…') : null)),
      step.thought ? h('div', { class: 'thought' }, step.thought) : null,
      step.invalid_output ? block('The model answered out of format', step.invalid_output) : null,
      calls.map((call, i) => h('div', { class: 'call', 'data-call': i },
        h('div', {}, 'calls ', h('span', { class: 'tool' }, call.tool)),
        h('pre', { class: 'args' }, pretty(call.args)),
        results[i] !== undefined
          ? h('div', { class: 'observation' }, block('Result', results[i]))
          : h('div', { class: 'small muted' }, 'no result yet'))),
      step.approval
        ? h('p', { class: 'small' }, step.approval.approved ? 'Approved' : h('span', { class: 'badge refused' }, 'Rejected'),
          step.approval.decided_by ? '' : ' (no one decided in time)',
          step.approval.reason ? ` — ${step.approval.reason}` : '')
        : null,
      step.is_final && step.final_answer !== null ? h('div', { class: 'answer' }, step.final_answer) : null);
  }

  /** Reads the event stream; resumes after a drop from the last event seen. */
  async function follow() {
    let delay = 500;
    let dropped = false;
    while (!stopped && !ended) {
      try {
        const headers = { authorization: `Bearer ${key()}`, accept: 'text/event-stream' };
        if (lastSeq > 0) headers['last-event-id'] = String(lastSeq);
        const response = await fetch(`/v1/agents/${id}/events`, { headers, signal: controller.signal });
        if (response.status === 401) { signOut('The API refused this key. Sign in again.'); return; }
        if (!response.ok || !response.body) throw new Error(`events answered ${response.status}`);
        live.className = 'live on';
        live.textContent = 'live';
        if (dropped) live.dataset.reconnects = String(Number(live.dataset.reconnects || 0) + 1);
        dropped = false;
        delay = 500;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let blank;
          while ((blank = buffer.match(/\r?\n\r?\n/))) {
            handle(buffer.slice(0, blank.index));
            buffer = buffer.slice(blank.index + blank[0].length);
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      if (stopped || ended) break;
      dropped = true;
      live.className = 'live off';
      live.textContent = 'reconnecting…';
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
    if (ended) {
      live.className = 'live';
      live.textContent = 'finished';
    }
  }

  function handle(raw) {
    let seq = null;
    let kind = null;
    const data = [];
    for (const line of raw.split(/\r?\n/)) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') seq = Number(value);
      else if (field === 'event') kind = value;
      else if (field === 'data') data.push(value);
    }
    if (seq === null || !(seq > lastSeq)) return; // a comment, or an event already seen
    lastSeq = seq;
    let event = null;
    try { event = JSON.parse(data.join('\n')); } catch { event = null; }
    if (event && kind === 'step' && event.data) {
      const at = Date.parse(event.created_at);
      const timing = times.get(event.data.step) || {};
      if (event.data.phase === 'decided') timing.decided = at;
      if (event.data.phase === 'observed') timing.observed = at;
      times.set(event.data.step, timing);
    }
    if (kind === 'done') ended = true;
    refresh();
  }

  refresh().then(follow);
  return () => { stopped = true; controller.abort(); clearTimeout(hooksTimer); };
}

// ---- start ----------------------------------------------------------------------------------------

document.getElementById('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);
route();
