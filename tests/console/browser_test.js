// The web console in a real browser: Debian's Chromium, driven by Playwright (playwright-core,
// pointed at /usr/bin/chromium; no browser download), against `aliot serve`'s demo.
//
//  1. The products page lists the demo product; the devices page shows the three demo devices,
//     none online.
//  2. dev-001 connects with mosquitto_sub: its row turns ONLINE without a reload.
//  3. The debugging page publishes to dev-001's /user/get: mosquitto_sub prints the message.
//  4. The live view shows dev-003's report as it is published.
//  5. RRPC to dev-002, which is offline, ends OFFLINE.
//  6. A device registered on the devices page connects with the secret the page showed.
//  7. The device page of dev-001 shows its status, address and recent messages.
// A screenshot of each main page goes to $SHOTS (and one of the devices page on a phone).
//
// Environment: API (http://127.0.0.1:port), MQTT_PORT, DEMO_LOG (the demo's printed
// instructions), ALIOT (the binary, for `aliot sign`), SHOTS (a directory).
"use strict";

const { chromium } = require("playwright-core");
const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const API = process.env.API;
const MQTT_PORT = process.env.MQTT_PORT;
const SHOTS = process.env.SHOTS;
const ALIOT = process.env.ALIOT;
const PK = "a1DemoProd01";
const STEP_MS = 15000;

function fail(message) {
  console.error("console-browser: FAILED: " + message);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
  console.log("console-browser: ok: " + message);
}

// The demo prints a ready mosquitto command per device; the test runs them as printed.
function demoCommand(kind, device, topicPart) {
  const lines = fs.readFileSync(process.env.DEMO_LOG, "utf8").split("\n");
  const line = lines.find(
    (l) => l.startsWith(kind + " ") && l.includes(`${device}&${PK}`) && l.includes(topicPart),
  );
  if (!line) fail(`the demo printed no ${kind} command for ${device} on ${topicPart}`);
  return line;
}

function waitForOutput(child, text, what) {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`${what}: not seen in ${STEP_MS} ms; got ${JSON.stringify(seen)}`)), STEP_MS);
    child.stdout.on("data", (chunk) => {
      seen += chunk.toString();
      if (seen.includes(text)) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
  });
}

function run(command) {
  return new Promise((resolve) => {
    const child = spawn("bash", ["-c", command], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c) => (output += c));
    child.stderr.on("data", (c) => (output += c));
    child.on("exit", (code) => resolve({ code, output }));
  });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, name + ".png"), fullPage: true });
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(STEP_MS);
  const page = await context.newPage();
  const sub = [];
  try {
    // 1. Products and devices.
    await page.goto(API + "/console");
    await page.waitForSelector(`#products a:has-text("${PK}")`);
    check((await page.textContent("#products tbody")).includes("3"), "the products page lists the demo product with its 3 devices");
    await shot(page, "products");

    await page.goto(`${API}/console/devices?product=${PK}`);
    const statuses = await page.$$eval("#devices [data-status]", (badges) => badges.map((b) => b.textContent));
    check(statuses.length === 3 && statuses.every((s) => s !== "ONLINE"), `the three demo devices are offline (${statuses.join(", ")})`);

    // 2. dev-001 connects: its row turns ONLINE, with no reload.
    const listener = spawn("bash", ["-c", demoCommand("mosquitto_sub", "dev-001", "/user/get")], { stdio: ["ignore", "pipe", "pipe"] });
    sub.push(listener);
    await page.waitForFunction(
      () => document.querySelector('tr[data-device="a1DemoProd01/dev-001"] [data-status]').textContent === "ONLINE",
    );
    check(true, "dev-001 turns ONLINE on the open devices page when mosquitto_sub connects");
    await shot(page, "devices");

    // 3. Debugging: a publish to dev-001 reaches mosquitto_sub.
    await page.goto(`${API}/console/debug?product=${PK}&device=dev-001`);
    await page.selectOption("#action", "publish");
    await page.fill('input[name="topic"]', `/${PK}/dev-001/user/get`);
    await page.fill('textarea[name="payload"]', "hello from the console");
    const printed = waitForOutput(listener, "hello from the console", "mosquitto_sub's output");
    await page.click('#debug button[type="submit"]');
    await page.waitForSelector("#outcome-code");
    check((await page.textContent("#outcome-code")).startsWith("SENT to 1"), "the debugging page publishes to dev-001");
    await printed;
    check(true, "mosquitto_sub printed the message published from the console");
    await shot(page, "debug");

    // 4. The live view follows dev-003's report.
    await page.goto(`${API}/console/live?product=${PK}`);
    await page.waitForTimeout(500); // the stream is open
    const report = await run(demoCommand("mosquitto_pub", "dev-003", "/user/update"));
    check(report.code === 0, "dev-003 reports with mosquitto_pub");
    await page.waitForSelector('#live tbody tr:has-text("temperature")');
    check(true, "the live view shows dev-003's report without a reload");
    await shot(page, "live");

    // 5. RRPC to an offline device.
    await page.goto(`${API}/console/debug?product=${PK}&device=dev-002&action=rrpc`);
    await page.selectOption("#action", "rrpc");
    await page.fill('textarea[name="payload"]', "ping");
    await page.click('#debug button[type="submit"]');
    await page.waitForSelector("#outcome-code");
    check((await page.textContent("#outcome-code")) === "OFFLINE", "RRPC to offline dev-002 ends OFFLINE");

    // 6. Register a device, connect with the secret shown.
    await page.goto(`${API}/console/devices?product=${PK}`);
    await page.fill('#register input[name="device_name"]', "console-dev");
    await page.click('#register button[type="submit"]');
    await page.waitForSelector("#device-secret");
    const secret = (await page.textContent("#device-secret")).trim();
    check(secret.length >= 16, "the registered page shows the new device's secret");
    await shot(page, "registered");
    const signed = execFileSync(ALIOT, ["sign", "--product-key", PK, "--device-name", "console-dev", "--device-secret", secret], { encoding: "utf8" });
    const field = (name) => signed.split("\n").find((l) => l.startsWith(name + "=")).slice(name.length + 1);
    const connected = await run(
      `mosquitto_pub -h 127.0.0.1 -p ${MQTT_PORT} -V mqttv311 -q 1 -i '${field("client_id")}' -u '${field("username")}' -P '${field("password")}' -t /${PK}/console-dev/user/update -m registered`,
    );
    check(connected.code === 0, "console-dev connects and publishes with the secret the console showed" + (connected.code ? ": " + connected.output : ""));

    // 7. dev-001's page.
    await page.goto(`${API}/console/devices/${PK}/dev-001`);
    check((await page.textContent("#device [data-status]")) === "ONLINE", "dev-001's page shows it ONLINE");
    check((await page.textContent("#device [data-client-ip]")).includes("127.0.0.1"), "dev-001's page shows its address");
    check((await page.textContent("#messages")).includes("hello from the console"), "dev-001's page lists the message sent to it");
    await shot(page, "device");

    // The devices page on a phone.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
    const small = await phone.newPage();
    await small.goto(`${API}/console/devices?product=${PK}`);
    await small.waitForSelector("#devices");
    await shot(small, "devices-phone");
    await phone.close();
    console.log("console-browser: all steps passed; screenshots in " + SHOTS);
  } finally {
    for (const child of sub) child.kill();
    await browser.close();
  }
}

main().catch((error) => fail(error.stack || String(error)));
