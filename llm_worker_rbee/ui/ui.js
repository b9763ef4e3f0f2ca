// llm-worker-rbee status page and playground: plain JavaScript, no build step, nothing
// fetched from elsewhere. It polls GET /v1/status once a second (a poll starts only after the
// last one answered, so never more often); EventSource cannot send the API key as a bearer,
// polling with fetch can.
'use strict';

(() => {
  const KEY_STORE = 'llm-worker-rbee.api-key';
  const POLL_MS = 1000;
  const WINDOW_S = 300; // the charts show the last five minutes
  const $ = (id) => document.getElementById(id);

  const page = {
    key: sessionStorage.getItem(KEY_STORE),
    samples: [], // the history, oldest first
    lastSample: 0, // the n of the newest sample held: the next poll asks for those after it
    startedAt: null, // the worker's start: another value means it restarted
    timer: null,
    polling: false,
    modeChosen: false, // the person picked a playground mode: keep it
    run: null, // the playground's request in flight
  };

  // ---- the API key ---------------------------------------------------------------------

  function withKey(headers) {
    const all = Object.assign({}, headers);
    if (page.key) all.Authorization = 'Bearer ' + page.key;
    return all;
  }

  function askForKey(refused) {
    page.key = null;
    sessionStorage.removeItem(KEY_STORE);
    clearData();
    setState('key needed', 'unknown');
    $('key-panel').hidden = false;
    $('key-change').hidden = true;
    $('key-error').textContent = refused ? 'That key was refused.' : '';
    $('key-input').focus();
  }

  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) return;
    page.key = key;
    sessionStorage.setItem(KEY_STORE, key);
    $('key-input').value = '';
    $('key-panel').hidden = true;
    pollNow();
  });

  $('key-change').addEventListener('click', () => askForKey(false));

  // ---- polling -------------------------------------------------------------------------

  function pollNow() {
    clearTimeout(page.timer);
    if (!page.polling) poll();
  }

  async function poll() {
    page.polling = true;
    let again = true;
    try {
      const response = await fetch('/v1/status?since=' + page.lastSample, {
        headers: withKey({}),
        cache: 'no-store',
      });
      if (response.status === 401) {
        again = false; // until a key is given
        askForKey(page.key !== null);
        return;
      }
      if (!response.ok) throw new Error('HTTP ' + response.status);
      const status = await response.json();
      $('offline').hidden = true;
      render(status);
    } catch (error) {
      $('offline').hidden = false;
      setState('offline', 'offline');
    } finally {
      page.polling = false;
      if (again) page.timer = setTimeout(poll, POLL_MS);
    }
  }

  // ---- rendering -----------------------------------------------------------------------

  function setState(text, state) {
    const pill = $('state');
    pill.textContent = text;
    pill.dataset.state = state;
  }

  function render(s) {
    if (page.startedAt !== s.started_at) { // first answer, or the worker restarted
      page.startedAt = s.started_at;
      page.samples = [];
    }
    for (const sample of s.history.samples) {
      if (sample.n > page.lastSample || page.samples.length === 0) page.samples.push(sample);
    }
    const last = page.samples[page.samples.length - 1];
    if (last) {
      page.lastSample = last.n;
      const cutoff = last.at - WINDOW_S;
      while (page.samples.length && page.samples[0].at < cutoff) page.samples.shift();
    }
    setState(s.state, s.state);
    $('key-change').hidden = page.key === null;
    $('uptime').textContent = 'up ' + duration(s.uptime_s);
    renderLoading(s);
    renderModel(s.model);
    renderLoad(s);
    renderCharts();
    renderSlots(s.slots);
    renderErrors(s.errors);
  }

  function renderLoading(s) {
    const loading = s.state === 'loading' || s.loading.stage === 'failed';
    $('loading').hidden = !loading;
    if (!loading) return;
    $('loading-stage').textContent = s.loading.stage.replace(/_/g, ' ');
    $('loading-pct').textContent = Math.round(s.loading.progress * 100) + ' %';
    $('loading-bar').style.width = (s.loading.progress * 100).toFixed(1) + '%';
    $('loading-error').textContent = s.loading.error || '';
  }

  function field(name, text) {
    document.querySelector('dd[data-field="' + name + '"]').textContent = text;
  }

  function renderModel(m) {
    $('model-name').textContent = m.id;
    field('name', m.name ? m.name + ' (' + m.id + ')' : m.id);
    field('architecture', [m.architecture, m.parameters && count(m.parameters) + ' parameters']
      .filter(Boolean).join(', ') || '—');
    field('quantization', [m.quantization, m.file_bytes && bytes(m.file_bytes)]
      .filter(Boolean).join(', ') || '—');
    const perSlot = m.n_ctx_per_slot && m.n_ctx_per_slot !== m.n_ctx
      ? ', ' + count(m.n_ctx_per_slot) + ' per slot' : '';
    const trained = m.n_ctx_train ? ' (trained ' + count(m.n_ctx_train) + ')' : '';
    field('context', count(m.n_ctx) + ' tokens' + perSlot + trained);
    field('slots', String(m.slots));
    field('mode', m.mode === 'exact'
      ? 'exact: a KV stream per slot, batch-invariant' : 'fast: one KV pool for all slots');
    field('backend', m.backend + ' · ' + m.device + ' · ' + m.threads +
      (m.threads === 1 ? ' thread' : ' threads'));
    field('template', m.chat_template === null ? '—' : m.chat_template ? 'yes' : 'no (a plain transcript)');
    if (!page.modeChosen && m.chat_template !== null) {
      $(m.chat_template ? 'mode-chat' : 'mode-completion').checked = true;
      $('mode-hint').textContent = m.chat_template ? '' : 'no chat template: a base model';
    }
  }

  function renderLoad(s) {
    const busy = s.slots.filter((slot) => slot.phase !== 'idle').length;
    $('g-slots').textContent = busy + ' / ' + s.slots.length;
    $('g-queue').textContent = s.queue.depth + ' / ' + s.queue.max;
    $('g-requests').textContent = count(s.totals.requests);
    $('g-tokens').textContent = count(s.totals.tokens_generated);
    const used = s.kv.total ? s.kv.used / s.kv.total : 0;
    let text = count(s.kv.used) + ' / ' + count(s.kv.total) + ' cells (' + (used * 100).toFixed(1) + ' %)';
    if (s.kv.reserved !== null) text += ', ' + count(s.kv.reserved) + ' reserved';
    $('kv-text').textContent = text;
    $('kv-bar').style.width = (used * 100).toFixed(1) + '%';
    field('worker', s.worker_id + ' · version ' + s.version);
    field('prompt', count(s.totals.prompt_tokens));
    field('started', new Date(s.started_at * 1000).toLocaleString());
  }

  function renderSlots(slots) {
    const body = $('slot-rows');
    const busy = slots.filter((slot) => slot.phase !== 'idle');
    $('slots-summary').textContent = busy.length + ' of ' + slots.length + ' busy';
    body.replaceChildren();
    if (!busy.length) {
      body.append(row(['all slots idle'], 'empty', 6));
      return;
    }
    for (const slot of busy) {
      const tr = document.createElement('tr');
      tr.dataset.job = slot.job_id;
      tr.dataset.slot = String(slot.id);
      if (page.run && page.run.jobId === slot.job_id) tr.className = 'mine';
      const phase = document.createElement('span');
      phase.className = 'phase phase-' + slot.phase;
      phase.textContent = slot.phase;
      tr.append(
        cell(String(slot.id)),
        cell(slot.job_id, 'job'),
        cell(phase),
        cell(slot.prompt_tokens === null ? '—' : count(slot.prompt_tokens), 'num'),
        cell(slot.tokens === null ? '—' : count(slot.tokens), 'num tokens'),
        cell(slot.tokens_per_s === null ? '—' : slot.tokens_per_s.toFixed(1), 'num'),
      );
      tr.cells[1].title = slot.job_id;
      body.append(tr);
    }
  }

  function renderErrors(errors) {
    const list = $('errors');
    list.replaceChildren();
    if (!errors.length) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'none';
      list.append(li);
      return;
    }
    for (const e of errors.slice(0, 8)) {
      const li = document.createElement('li');
      const code = document.createElement('span');
      code.className = 'code';
      code.textContent = e.status + ' ' + e.code;
      const when = new Date(e.at * 1000).toLocaleTimeString();
      li.append(when + '  ', code, '  ' + e.message + ' (' + e.job_id + ')');
      list.append(li);
    }
  }

  function clearData() {
    page.samples = [];
    page.lastSample = 0;
    page.startedAt = null;
    $('model-name').textContent = '—';
    $('uptime').textContent = '';
    for (const dd of document.querySelectorAll('dd[data-field]')) dd.textContent = '—';
    for (const id of ['g-slots', 'g-queue', 'g-requests', 'g-tokens', 'kv-text']) $(id).textContent = '—';
    $('kv-bar').style.width = '0';
    $('tps-now').textContent = '';
    $('ttft-now').textContent = '';
    $('slots-summary').textContent = '';
    $('slot-rows').replaceChildren(row(['no data'], 'empty', 6));
    $('errors').replaceChildren();
    $('loading').hidden = true;
    drawChart($('chart-tps'), [], {});
    drawChart($('chart-ttft'), [], {});
  }

  // ---- charts: SVG drawn by hand -------------------------------------------------------

  function renderCharts() {
    const last = page.samples[page.samples.length - 1];
    const recent = page.samples.slice(-10); // the headline: the last ten seconds' mean
    const mean = recent.reduce((sum, p) => sum + p.tokens_per_s, 0) / (recent.length || 1);
    $('tps-now').textContent = last ? mean.toFixed(1) : '';
    const ttfts = page.samples.filter((sample) => sample.ttft_ms !== null);
    const lastTtft = ttfts[ttfts.length - 1];
    $('ttft-now').textContent = lastTtft ? ms(lastTtft.ttft_ms) : '';
    const end = last ? last.at : 0;
    drawChart($('chart-tps'), page.samples.map((p) => [p.at, p.tokens_per_s]),
      { end, area: true, format: (v) => (v === 0 ? '0' : v.toFixed(v < 10 ? 1 : 0)) });
    drawChart($('chart-ttft'), ttfts.map((p) => [p.at, p.ttft_ms]),
      { end, dots: true, format: (v) => (v === 0 ? '0' : ms(v)) });
  }

  const SVG = 'http://www.w3.org/2000/svg';
  // Drawn at the size it is shown (CSS pixels), so text and lines stay crisp at any width.
  const BOX = { h: 160, left: 52, right: 10, top: 10, bottom: 24 };

  function svg(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 4, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function drawChart(target, points, opts) {
    target.replaceChildren();
    const { h, left, right, top, bottom } = BOX;
    const w = Math.max(240, Math.round(target.clientWidth || 600));
    target.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    const plotW = w - left - right;
    const plotH = h - top - bottom;
    const max = niceMax(Math.max(0, ...points.map((p) => p[1])) * 1.05);
    const format = opts.format || String;
    for (const f of [0, 0.5, 1]) {
      const y = top + plotH * (1 - f);
      target.append(svg('line', { class: 'grid', x1: left, x2: w - right, y1: y, y2: y }));
      target.append(svg('text', { class: 'axis', x: left - 6, y: y + 4, 'text-anchor': 'end' },
        points.length ? format(max * f) : ''));
    }
    const labels = [[0, '−5 min'], [0.5, '−2.5 min'], [1, 'now']];
    for (const [f, text] of labels) {
      const anchor = f === 0 ? 'start' : f === 1 ? 'end' : 'middle';
      target.append(svg('text', { class: 'axis', x: left + plotW * f, y: h - 6, 'text-anchor': anchor }, text));
    }
    if (!points.length) {
      target.append(svg('text', { class: 'nodata', x: left + plotW / 2, y: top + plotH / 2, 'text-anchor': 'middle' }, 'no data yet'));
      return;
    }
    const x = (t) => left + plotW * (1 - Math.min(WINDOW_S, Math.max(0, opts.end - t)) / WINDOW_S);
    const y = (v) => top + plotH * (1 - v / max);
    const line = points.map((p, i) => (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1)).join(' ');
    if (opts.area && points.length > 1) {
      const base = y(0).toFixed(1);
      const first = x(points[0][0]).toFixed(1);
      const lastX = x(points[points.length - 1][0]).toFixed(1);
      target.append(svg('path', { class: 'area', d: line + ' L' + lastX + ' ' + base + ' L' + first + ' ' + base + ' Z' }));
    }
    if (!opts.dots) target.append(svg('path', { class: 'line', d: line }));
    if (opts.dots) {
      for (const p of points) target.append(svg('circle', { class: 'dot', cx: x(p[0]), cy: y(p[1]), r: 3 }));
    }
  }

  // ---- the playground ------------------------------------------------------------------

  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener('change', () => { page.modeChosen = true; $('mode-hint').textContent = ''; });
  }

  function number(id, parse) {
    const raw = $(id).value.trim();
    if (raw === '') return undefined;
    const value = parse(raw);
    return Number.isFinite(value) ? value : undefined;
  }

  function requestBody(mode, prompt) {
    const body = {
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: number('f-max_tokens', parseInt),
      temperature: number('f-temperature', parseFloat),
      top_p: number('f-top_p', parseFloat),
      top_k: number('f-top_k', parseInt),
      min_p: number('f-min_p', parseFloat),
      repeat_penalty: number('f-repeat_penalty', parseFloat),
      seed: number('f-seed', parseInt),
    };
    const stop = $('f-stop').value.replace(/\\n/g, '\n');
    if (stop) body.stop = stop;
    if ($('f-ignore_eos').checked) body.ignore_eos = true;
    if (mode === 'chat') body.messages = [{ role: 'user', content: prompt }];
    else body.prompt = prompt;
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    return body;
  }

  function showRun(run) {
    $('run-ttft').textContent = run.ttft === null ? '—' : ms(run.ttft);
    $('run-tokens').textContent = run.tokens ? String(run.tokens) : '—';
    const decodeMs = run.lastAt - run.firstAt;
    $('run-tps').textContent = run.tokens > 1 && decodeMs > 0
      ? ((run.tokens - 1) / (decodeMs / 1000)).toFixed(1) : '—';
    $('run-end').textContent = run.end || '—';
  }

  async function startRun(event) {
    event.preventDefault();
    if (page.run) return;
    const mode = document.querySelector('input[name="mode"]:checked').value;
    const prompt = $('play-prompt').value;
    const run = {
      jobId: 'ui-' + Math.random().toString(16).slice(2, 14),
      controller: new AbortController(),
      sentAt: performance.now(), firstAt: 0, lastAt: 0, ttft: null, tokens: 0, end: null,
    };
    page.run = run;
    $('play-run').disabled = true;
    $('play-stop').disabled = false;
    $('play-error').textContent = '';
    $('play-state').textContent = 'running · ' + run.jobId;
    const output = $('play-output');
    output.replaceChildren();
    if (mode === 'completion') {
      const shown = document.createElement('span');
      shown.className = 'prompt';
      shown.textContent = prompt;
      output.append(shown);
    }
    const text = document.createTextNode('');
    output.append(text);
    showRun(run);
    try {
      const response = await fetch(mode === 'chat' ? '/v1/chat/completions' : '/v1/completions', {
        method: 'POST',
        headers: withKey({ 'Content-Type': 'application/json', 'X-Request-Id': run.jobId }),
        body: JSON.stringify(requestBody(mode, prompt)),
        signal: run.controller.signal,
      });
      if (!response.ok) {
        const answer = await response.json().catch(() => ({}));
        if (response.status === 401) askForKey(page.key !== null);
        throw new Error((answer.error && answer.error.message) || 'HTTP ' + response.status);
      }
      await readStream(response, mode, run, text);
      $('play-state').textContent = 'done · ' + run.jobId;
    } catch (error) {
      if (error.name === 'AbortError') {
        run.end = 'stopped';
        $('play-state').textContent = 'stopped · ' + run.jobId;
      } else {
        $('play-error').textContent = error.message;
        $('play-state').textContent = '';
      }
    } finally {
      showRun(run);
      page.run = null;
      $('play-run').disabled = false;
      $('play-stop').disabled = true;
    }
  }

  async function readStream(response, mode, run, text) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split(/\r?\n\r?\n/);
      buffer = events.pop();
      for (const event of events) {
        for (const line of event.split(/\r?\n/)) {
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') return;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          takeChunk(chunk, mode, run, text);
        }
      }
      showRun(run);
    }
  }

  function takeChunk(chunk, mode, run, text) {
    const choice = chunk.choices && chunk.choices[0];
    const piece = choice ? (mode === 'chat' ? (choice.delta && choice.delta.content) : choice.text) : '';
    const now = performance.now();
    if (piece) {
      if (run.ttft === null) { run.ttft = now - run.sentAt; run.firstAt = now; }
      run.lastAt = now;
      run.tokens += 1; // a chunk carries one token or more: the usage at the end corrects it
      text.appendData(piece);
      const output = $('play-output');
      output.scrollTop = output.scrollHeight;
    }
    if (choice && choice.finish_reason) run.end = choice.finish_reason;
    if (chunk.usage) run.tokens = chunk.usage.completion_tokens;
  }

  $('play-form').addEventListener('submit', startRun);
  $('play-stop').addEventListener('click', () => { if (page.run) page.run.controller.abort(); });

  // ---- small helpers -------------------------------------------------------------------

  function cell(content, className) {
    const td = document.createElement('td');
    if (className) td.className = className;
    td.append(content);
    return td;
  }

  function row(texts, className, span) {
    const tr = document.createElement('tr');
    tr.className = className;
    const td = cell(texts[0]);
    td.colSpan = span;
    tr.append(td);
    return tr;
  }

  function count(n) { return Number(n).toLocaleString('en-US'); }
  function ms(v) { return v >= 1000 ? (v / 1000).toFixed(2) + ' s' : Math.round(v) + ' ms'; }
  function bytes(n) { return n >= 1e9 ? (n / 1e9).toFixed(2) + ' GB' : Math.round(n / 1e6) + ' MB'; }
  function duration(s) {
    s = Math.floor(s);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }

  clearData();
  poll();
})();
