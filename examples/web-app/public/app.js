// The to-do list's page: reads and writes /api/items, keeps each item's ETag and sends it as
// If-Match, so a change made elsewhere in the meantime is refused (412) rather than overwritten.
// Filters are client-side routes (/active, /done): the host answers them with this page.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// One API call: the JSON reply, null for 204, or an ApiError with the reply's {error: {code, message}}.
async function api(method, path, { body, etag } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (etag) headers['if-match'] = `"${etag}"`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'unreachable', 'The server cannot be reached. Try again.');
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    throw new ApiError(res.status, data?.error?.code ?? `http_${res.status}`, data?.error?.message ?? res.statusText);
  }
  return data;
}

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const form = $('new-item-form');
const input = $('new-item-title');
const list = $('items');
const errorBox = $('error');
let items = [];

function filter() {
  const name = location.pathname.replace(/^\/+|\/+$/g, '');
  return name === 'active' || name === 'done' ? name : 'all';
}

function showError(err) {
  errorBox.textContent = err ? err.message : '';
  errorBox.dataset.code = err?.code ?? '';
  errorBox.hidden = !err;
}

function render() {
  const shown = filter();
  const visible = items.filter((i) => shown === 'all' || (shown === 'done') === i.done);
  list.replaceChildren(...visible.map(row));
  $('empty').hidden = visible.length > 0;
  const done = items.filter((i) => i.done).length;
  $('count').textContent = `${items.length} ${items.length === 1 ? 'item' : 'items'}, ${done} done`;
  for (const link of document.querySelectorAll('[data-filter]')) {
    link.toggleAttribute('aria-current', link.dataset.filter === shown);
  }
}

function row(item) {
  const li = document.createElement('li');
  li.dataset.testid = 'item';
  li.dataset.id = item.id;
  li.dataset.done = String(item.done);

  const label = document.createElement('label');
  const box = document.createElement('input');
  box.type = 'checkbox';
  box.checked = item.done;
  box.dataset.testid = 'item-done';
  box.addEventListener('change', () => update(item, { done: box.checked }, box));
  const title = document.createElement('span');
  title.dataset.testid = 'item-title';
  title.textContent = item.title;  // text, never HTML
  label.append(box, title);

  const remove = document.createElement('button');
  remove.type = 'button';
  remove.textContent = 'Delete';
  remove.dataset.testid = 'item-delete';
  remove.setAttribute('aria-label', `Delete ${item.title}`);
  remove.addEventListener('click', () => destroy(item, remove));

  li.append(label, remove);
  return li;
}

// Runs one change with `control` disabled; an API error is shown, and a 404 or 412 (the item
// changed or went away elsewhere) reloads the list so the page shows the server's truth.
async function change(control, work) {
  control.disabled = true;
  try {
    await work();
    showError(null);
  } catch (err) {
    showError(err);
    if (err.status === 404 || err.status === 412) await load().catch(showError);
  } finally {
    control.disabled = false;
    render();
  }
}

function update(item, fields, control) {
  return change(control, async () => {
    const saved = await api('PUT', `/api/items/${encodeURIComponent(item.id)}`,
                            { body: { title: item.title, done: item.done, ...fields }, etag: item.etag });
    items = items.map((i) => (i.id === saved.id ? saved : i));
  });
}

function destroy(item, control) {
  return change(control, async () => {
    await api('DELETE', `/api/items/${encodeURIComponent(item.id)}`, { etag: item.etag });
    items = items.filter((i) => i.id !== item.id);
  });
}

async function load() {
  list.setAttribute('aria-busy', 'true');
  try {
    items = (await api('GET', '/api/items')).items;
  } finally {
    list.setAttribute('aria-busy', 'false');
  }
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const button = form.querySelector('button');
  change(button, async () => {
    const created = await api('POST', '/api/items', { body: { title: input.value, done: false } });
    items = [...items, created];
    form.reset();
    input.focus();
  });
});

// Filter links change the address without a page load; back and forward re-render.
document.querySelector('nav').addEventListener('click', (event) => {
  const link = event.target.closest('a[data-filter]');
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  history.pushState(null, '', link.getAttribute('href'));
  render();
});
window.addEventListener('popstate', render);

load().then(() => showError(null), showError).finally(render);
