"""The console's stylesheet and script, served by the console itself (no CDN)."""

from __future__ import annotations

CSS = """
:root { color-scheme: light; --ink: #1b1f24; --muted: #4a5360; --line: #c9d1d9;
  --accent: #0b5cad; --ok: #116329; --bad: #a40e26; font-family: system-ui, sans-serif; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 1rem; top: 1rem; }
header { display: flex; gap: 2rem; align-items: center; padding: .6rem 1.5rem;
  background: #0d2a4a; color: #fff; flex-wrap: wrap; }
header a { color: #fff; } .brand { font-weight: 700; font-size: 1.2rem; }
nav ul { display: flex; gap: 1.2rem; list-style: none; margin: 0; padding: 0; }
nav a[aria-current=page] { text-decoration: underline 3px; }
.who { margin-left: auto; display: flex; gap: .6rem; align-items: center; }
main { padding: 1rem 1.5rem; max-width: 80rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem;
  margin: 0 0 1rem; }
.card h2 { margin: 0 0 .4rem; font-size: 1.1rem; } small, .note { color: var(--muted); }
.lineage { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
.lineage dt { font-weight: 600; } .lineage dd { margin: 0; overflow-wrap: anywhere; }
form { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; margin: .3rem 0; }
.signin { flex-direction: column; align-items: stretch; max-width: 40rem; }
input, select, textarea, button { font: inherit; padding: .25rem .5rem; }
button { border: 1px solid var(--accent); background: var(--accent); color: #fff;
  border-radius: 4px; cursor: pointer; }
button.reject { background: #fff; color: var(--bad); border-color: var(--bad); }
:focus-visible { outline: 3px solid #f0a500; outline-offset: 2px; }
.done { color: var(--ok); font-weight: 600; } .refused { color: var(--bad); font-weight: 600; }
table { border-collapse: collapse; margin: 0 0 1.5rem; width: 100%; }
caption { text-align: left; font-weight: 700; padding: .3rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left;
  vertical-align: top; }
.outcome-executed { color: var(--ok); } .outcome-denied, .outcome-failed,
.outcome-rejected, .outcome-expired { color: var(--bad); }
"""

JS = """
// The overview refreshes its live part in place, unless the user is filling in a form there.
(function () {
  var live = document.getElementById('live');
  if (!live) return;
  setInterval(function () {
    if (live.contains(document.activeElement)) return;
    fetch(live.dataset.refresh, {credentials: 'same-origin'})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) live.innerHTML = html; });
  }, 5000);
})();
"""
