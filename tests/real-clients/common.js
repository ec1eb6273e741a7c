'use strict';
// What the Node drivers share (like common.py for the Python ones): their command line, the
// broker's HTTP API, and waiting for what the SDK's callbacks report. Node's standard library
// only (global fetch, node 18 or later).
//
// Every check either prints one `ok:` line or throws `CheckFailed` saying what was expected and
// what came instead.

const WAIT_MS = 10000;

class CheckFailed extends Error {}

// The command line of the device drivers:
// --port P --api URL --product-key PK --device-name DN --device-secret DS [--host H] [--tls]
// [--websocket PATH]
const DEVICE_ARGS = ['port', 'api', 'productKey', 'deviceName', 'deviceSecret'];

const flagOf = (key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

// A driver's command line: every key of `required` as `--kebab-case VALUE`, and optionally
// `--host H` (default 127.0.0.1), `--tls` and `--websocket PATH` (MQTT over WebSocket at
// PATH); the values by their camelCase keys.
function parseArgs(argv, required = DEVICE_ARGS) {
  const args = { host: '127.0.0.1', tls: false, websocket: null };
  const known = new Map([...required, 'host', 'websocket'].map((key) => [flagOf(key), key]));
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--tls') {
      args.tls = true;
      continue;
    }
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    const key = known.get(flag);
    if (!key) throw new Error(`unknown argument ${flag}`);
    args[key] = value;
  }
  for (const key of required) {
    if (!args[key]) throw new Error(`missing ${flagOf(key)}`);
  }
  return args;
}

function ok(what) {
  console.log(`  ok: ${what}`);
}

function expect(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

// Events reported by callbacks, waited for by the checks (like common.py's Inbox).
class Inbox {
  constructor() {
    this.events = [];
    this.waiters = [];
  }

  put(...event) {
    const waiter = this.waiters.find((w) => w.matches(event));
    if (waiter) {
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      clearTimeout(waiter.timer);
      waiter.resolve(event);
    } else {
      this.events.push(event);
    }
  }

  waitFor(what, matches, ms = WAIT_MS) {
    const index = this.events.findIndex(matches);
    if (index >= 0) return Promise.resolve(this.events.splice(index, 1)[0]);
    return new Promise((resolve, reject) => {
      const waiter = { matches, resolve };
      waiter.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        const seen = this.events.map((e) => JSON.stringify(e)).join('; ') || 'nothing';
        reject(new CheckFailed(`no ${what} within ${ms / 1000} s (events seen: ${seen})`));
      }, ms);
      this.waiters.push(waiter);
    });
  }
}

// The broker's HTTP API: the decoded JSON answer; any answer but 200 fails the check.
async function apiCall(api, method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(api.replace(/\/$/, '') + path, init);
  } catch (error) {
    throw new CheckFailed(`${method} ${path}: cannot reach the API: ${error.cause || error}`);
  }
  const text = await response.text();
  const sent = body === undefined ? '' : ` ${JSON.stringify(body)}`;
  expect(response.status === 200, `${method} ${path}${sent} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

function apiPost(api, path, body) {
  return apiCall(api, 'POST', path, body);
}

function apiGet(api, path) {
  return apiCall(api, 'GET', path);
}

module.exports = { WAIT_MS, CheckFailed, parseArgs, ok, expect, Inbox, apiPost, apiGet };
