/**
 * The dashboard page: static HTML and a script, no external assets, served with a CSP that allows only
 * the gateway itself. The script fetches /dashboard/data every 2 seconds and renders it with DOM APIs
 * (textContent only), since rule names and paths come from requests.
 */
export const dashboardHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Portcullis</title>
<link rel="stylesheet" href="/dashboard.css">
<script src="/dashboard.js" defer></script>
</head>
<body>
<header><h1>Portcullis</h1><span id="updated">loading…</span></header>
<main id="apps"></main>
<section><h2>Recent refusals</h2>
<table id="recent"><thead><tr><th>time</th><th>app</th><th>status</th><th>code</th><th>rule</th><th>client</th><th>request</th></tr></thead><tbody></tbody></table>
</section>
</body>
</html>
`

export const dashboardCss = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
header { display: flex; align-items: baseline; gap: 1rem; padding: .8rem 1.5rem; background: #1d2330; color: #fff; }
header h1 { font-size: 1.2rem; margin: 0; }
main, section { padding: 0 1.5rem; }
.app { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; margin: 1rem 0; padding: 1rem; }
.app h2 { margin: 0 0 .5rem; font-size: 1.1rem; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr)); gap: .5rem; }
.fact span { display: block; color: #69707d; font-size: 12px; }
.fact strong { font-size: 1.2rem; }
.down { color: #b42318; } .up { color: #067647; } .warn { color: #b54708; }
svg { width: 100%; height: 80px; background: #fafbfc; margin-top: .5rem; }
table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 2rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eef0f3; font-size: 13px; }
`

export const dashboardJs = `
'use strict';
const element = (tag, text, className) => {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  return node;
};
const fact = (label, value, className, field) => {
  const box = element('div', undefined, 'fact');
  box.append(element('span', label));
  const strong = element('strong', value, className);
  if (field) strong.dataset.field = field;
  box.append(strong);
  return box;
};
function chart(series) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 600 80');
  svg.setAttribute('preserveAspectRatio', 'none');
  const peak = Math.max(1, ...series.map((b) => b.requests));
  series.forEach((bucket, index) => {
    for (const [value, color] of [[bucket.requests, '#9aa4b2'], [bucket.refusals, '#d92d20']]) {
      if (value === 0) continue;
      const bar = document.createElementNS(ns, 'rect');
      const height = (value / peak) * 76;
      bar.setAttribute('x', String(index * 10 + 1));
      bar.setAttribute('width', '8');
      bar.setAttribute('y', String(80 - height));
      bar.setAttribute('height', String(height));
      bar.setAttribute('fill', color);
      svg.append(bar);
    }
  });
  const title = document.createElementNS(ns, 'title');
  title.textContent = 'requests (grey) and refusals (red) per 10 seconds, last 10 minutes';
  svg.append(title);
  return svg;
}
function render(data) {
  document.getElementById('updated').textContent = 'updated ' + new Date(data.generatedAt).toLocaleTimeString();
  const apps = document.getElementById('apps');
  apps.replaceChildren();
  for (const app of data.apps) {
    const card = element('article', undefined, 'app');
    card.dataset.app = app.id;
    card.append(element('h2', app.id + ' — ' + app.hosts.join(', ')));
    const facts = element('div', undefined, 'facts');
    facts.append(fact('mode', app.mode, app.mode === 'enforce' ? 'up' : 'warn', 'mode'));
    const certificate = app.tls === 'off' ? 'TLS off' : !app.certificate ? 'none'
      : app.certificate.placeholder ? 'placeholder (waiting for ACME)'
      : Math.floor((Date.parse(app.certificate.expiresAt) - Date.now()) / 86400000) + ' days left';
    facts.append(fact('certificate (' + app.tls + ')', certificate, app.certificate && app.certificate.placeholder ? 'warn' : '', 'certificate'));
    const healthy = app.targets.filter((target) => target.healthy).length;
    facts.append(fact('healthy targets', healthy + ' / ' + app.targets.length, healthy === 0 ? 'down' : 'up', 'targets'));
    facts.append(fact('requests', app.requests, '', 'requests'));
    const enforced = app.refusals.filter((r) => r.enforced).reduce((sum, r) => sum + r.count, 0);
    facts.append(fact('refusals', enforced, enforced ? 'down' : '', 'refusals'));
    card.append(facts);
    card.append(chart(app.series));
    if (app.refusals.length) {
      const table = element('table');
      const head = element('tr');
      head.append(element('th', 'rule'), element('th', 'code'), element('th', 'enforced'), element('th', 'count'));
      table.append(head);
      for (const refusal of app.refusals) {
        const row = element('tr');
        row.dataset.rule = refusal.rule;
        row.append(element('td', refusal.rule), element('td', refusal.code), element('td', refusal.enforced ? 'yes' : 'report-only'), element('td', refusal.count));
        table.append(row);
      }
      card.append(table);
    }
    const targets = element('ul');
    for (const target of app.targets) targets.append(element('li', target.origin + ' — ' + (target.healthy ? 'healthy' : 'out of rotation') + ', ' + target.active + ' in progress', target.healthy ? 'up' : 'down'));
    card.append(targets);
    apps.append(card);
  }
  const body = document.querySelector('#recent tbody');
  body.replaceChildren();
  for (const refusal of data.recent) {
    const row = element('tr');
    row.append(element('td', new Date(refusal.time).toLocaleTimeString()), element('td', refusal.app), element('td', refusal.status),
      element('td', refusal.code), element('td', refusal.rule + (refusal.enforced ? '' : ' (report-only)')), element('td', refusal.clientIp),
      element('td', refusal.method + ' ' + refusal.path));
    body.append(row);
  }
  document.body.dataset.ready = 'true';
}
async function refresh() {
  try {
    const answer = await fetch('/dashboard/data', { cache: 'no-store' });
    render(await answer.json());
  } catch (error) {
    document.getElementById('updated').textContent = 'cannot reach the gateway: ' + error;
  }
}
refresh();
setInterval(refresh, 2000);
`
