// The aliot console's live parts: status badges and message tables follow the broker
// through Server-Sent Events from /console/events. No framework, no build step.
"use strict";

const MAX_ROWS = 200;

// The stream starts where the page was rendered (data-after): nothing falls between them.
// On a reconnect the browser sends the last event's id, and the stream goes on from there.
function eventsUrl(element, statusesOnly) {
  const params = new URLSearchParams();
  const { liveProduct, liveDevice, after } = element.dataset;
  if (liveProduct) params.set("product", liveProduct);
  if (liveDevice) params.set("device", liveDevice);
  if (after) params.set("after", after);
  if (statusesOnly) params.set("statuses", "1");
  return "/console/events?" + params.toString();
}

// A status badge and its "last seen" cell follow a connect or a disconnect.
function showStatus(scope, entry) {
  if (!scope) return;
  const badge = scope.querySelector("[data-status]");
  if (badge && badge.textContent !== "DISABLE") {
    const status = entry.direction === "online" ? "ONLINE" : "OFFLINE";
    badge.textContent = status;
    badge.className = "status " + status;
  }
  const seen = scope.querySelector("[data-last-seen]");
  if (seen) seen.textContent = entry.time;
}

function messageRow(entry, withClient) {
  const row = document.createElement("tr");
  row.className = entry.direction;
  const cells = [entry.time, entry.direction];
  if (withClient) cells.push(entry.client);
  cells.push(entry.topic, entry.payload);
  cells.forEach((text, i) => {
    const cell = document.createElement("td");
    if (i >= cells.length - 2) {
      const code = document.createElement("code");
      if (i === cells.length - 1) code.className = "payload";
      code.textContent = text;
      cell.appendChild(code);
    } else {
      cell.textContent = text;
    }
    row.appendChild(cell);
  });
  return row;
}

// Newest first, at most MAX_ROWS rows: a busy broker cannot grow the page.
function prepend(body, rows) {
  for (const row of rows) body.insertBefore(row, body.firstChild);
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
}

function follow(url, onBatch) {
  const source = new EventSource(url);
  source.onmessage = (event) => onBatch(JSON.parse(event.data));
  return source;
}

// The devices list: each row's status.
const devices = document.querySelector("table#devices");
if (devices && devices.tBodies[0].rows.length > 0) {
  follow(eventsUrl(devices, true), (batch) => {
    for (const entry of batch.entries) {
      const key = entry.product_key + "/" + entry.device_name;
      const row = [...devices.tBodies[0].rows].find((r) => r.dataset.device === key);
      showStatus(row, entry);
    }
  });
}

// A device's page: its status and its recent messages.
const device = document.querySelector("section#device");
if (device) {
  const table = document.querySelector("table#messages");
  follow(eventsUrl(device, false), (batch) => {
    const rows = [];
    for (const entry of batch.entries) {
      if (entry.direction === "online" || entry.direction === "offline") showStatus(device, entry);
      rows.push(messageRow(entry, false));
    }
    if (table) prepend(table.tBodies[0], rows);
  });
}

// The live view: every message that passes the filter, pausable.
const live = document.querySelector("table[data-live-messages]");
if (live) {
  const state = document.getElementById("live-state");
  const pause = document.getElementById("pause");
  let paused = false;
  let skipped = 0;
  let missed = 0;
  let lost = 0;
  const describe = () => {
    const parts = [paused ? "paused" : "following"];
    if (paused && skipped) parts.push(skipped + " since");
    if (missed) parts.push(missed + " skipped under load");
    if (lost) parts.push(lost + " of the whole broker's passed unseen");
    state.textContent = parts.join(", ");
  };
  pause.addEventListener("click", () => {
    paused = !paused;
    skipped = 0;
    pause.textContent = paused ? "Resume" : "Pause";
    describe();
  });
  follow(eventsUrl(live, false), (batch) => {
    missed += batch.missed;
    lost += batch.lost;
    if (paused) {
      skipped += batch.entries.length;
    } else {
      prepend(live.tBodies[0], batch.entries.map((entry) => messageRow(entry, true)));
    }
    describe();
  });
}

// Forms that destroy something ask first.
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
