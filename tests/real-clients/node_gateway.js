'use strict';
// alibabacloud-iot-device-sdk (the platform's Node device SDK, unmodified, 1.2.8) as a gateway
// against `aliot serve` (PLATFORM-PROTOCOLS §4): its own gateway API carries two sub-devices
// over its one MQTT connection.
//
// The gateway connects without `_ss`: it subscribes to its reply topics itself, and after each
// login to the sub-device's preset filters (its property post reply, property set, event
// replies, /sys/{pk}/{sub}/rrpc/request/+, ...), which the broker grants by the sub-device's
// ACL on the gateway's connection.
//
// Step by step: connect; `addTopo` both sub-devices (each signed with its own secret): code 200,
// and `getTopo` and the OpenAPI's `GetThingTopo` list them; `login` each sub-device: code 200, the SDK emits
// `connect`, `GetDeviceStatus` says ONLINE; for each: `postProps` gets code 200 and
// `QueryDevicePropertyStatus` shows the value, `SetDeviceProperty` reaches its `onProps`, a
// synchronous `InvokeThingService` (RRPC: /sys/{pk}/{sub}/rrpc/request/{id}, answered by its
// `onService` callback with `reply(..., 'sync')` through the gateway) comes back as
// `Data.Result`; `logout` the first: code 200, OFFLINE, and a second logout: code 520; a
// `login` of it with a wrong secret: code 6287, it stays OFFLINE; the gateway disconnects: the
// second goes OFFLINE with it.
//
// Usage: node node_gateway.js --port P --api URL --product-key PK --device-name GW
//        --device-secret GS --sub-devices DN1:DS1,DN2:DS2

const iot = require('alibabacloud-iot-device-sdk');

const { WAIT_MS, CheckFailed, Inbox, apiPost, expect, ok, parseArgs } = require('./common');

// Calls `start(callback)` and resolves with what the callback got, or fails after WAIT_MS.
function callback(what, start) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new CheckFailed(`no ${what} callback within ${WAIT_MS / 1000} s`)), WAIT_MS);
    start((result) => {
      clearTimeout(timer);
      resolve(result);
    });
  });
}

async function statusOf(api, pk, dn) {
  return (await apiPost(api, '/GetDeviceStatus', { ProductKey: pk, DeviceName: dn })).Data.Status;
}

// Until `GetDeviceStatus` of the device says `wanted` (a status changes on the broker's hub
// task, the API reads it there too: this waits for the gateway's packet to get there).
async function waitForStatus(api, pk, dn, wanted) {
  const deadline = Date.now() + WAIT_MS;
  let status;
  while (Date.now() < deadline) {
    status = await statusOf(api, pk, dn);
    if (status === wanted) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new CheckFailed(`GetDeviceStatus of ${dn} is ${status} after ${WAIT_MS / 1000} s, expected ${wanted}`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2),
    ['port', 'api', 'productKey', 'deviceName', 'deviceSecret', 'subDevices']);
  const pk = args.productKey;
  const subs = args.subDevices.split(',').map((pair) => {
    const [deviceName, deviceSecret] = pair.split(':');
    return { productKey: pk, deviceName, deviceSecret };
  });
  const inbox = new Inbox();

  const gateway = iot.gateway({
    productKey: pk,
    deviceName: args.deviceName,
    deviceSecret: args.deviceSecret,
    brokerUrl: `mqtt://${args.host}:${args.port}`,
    keepalive: 60,
  });
  gateway.mqttClient.on('packetreceive', (packet) => {
    if (packet.cmd === 'connack') inbox.put('connack', packet.returnCode);
    if (packet.cmd === 'suback') inbox.put('suback', packet.granted);
  });
  gateway.on('error', (error) => inbox.put('error', String(error)));

  try {
    const [, returnCode] = await inbox.waitFor('CONNACK', (e) => e[0] === 'connack' || e[0] === 'error');
    expect(returnCode === 0, `CONNACK return code ${returnCode}, expected 0`);
    // The preset filters (16, one SUBSCRIBE each) are granted before the first request.
    for (let i = 0; i < 16; i++) await inbox.waitFor('the preset SUBACKs', (e) => e[0] === 'suback');
    ok(`gateway ${args.deviceName} connected (TCP, no _ss) and subscribed to its reply topics`);

    const added = await callback('addTopo', (cb) => gateway.addTopo(subs, cb));
    expect(added.code === 200 && added.data.length === subs.length,
      `addTopo answered ${JSON.stringify(added)}, expected code 200 with ${subs.length} devices`);
    const topology = await callback('getTopo', (cb) => gateway.getTopo(cb));
    const listed = topology.data.map((d) => d.deviceName).sort();
    expect(topology.code === 200 && JSON.stringify(listed) === JSON.stringify(subs.map((s) => s.deviceName).sort()),
      `getTopo answered ${JSON.stringify(topology)}`);
    const page = await apiPost(args.api, '/GetThingTopo', { ProductKey: pk, DeviceName: args.deviceName });
    expect(page.Data.Total === subs.length, `GetThingTopo answered ${JSON.stringify(page)}`);
    ok(`addTopo(${subs.map((s) => s.deviceName).join(', ')}): code 200; getTopo and GetThingTopo list them`);

    const devices = [];
    for (const sub of subs) {
      let device;
      const res = await callback(`login of ${sub.deviceName}`, (cb) => {
        device = gateway.login(sub, cb);
        device.on('connect', () => inbox.put('connect', sub.deviceName));
      });
      expect(res.code === 200 && res.data.deviceName === sub.deviceName,
        `login of ${sub.deviceName} answered ${JSON.stringify(res)}`);
      await inbox.waitFor(`the connect event of ${sub.deviceName}`, (e) => e[0] === 'connect' && e[1] === sub.deviceName);
      // Its preset filters, subscribed by the gateway after the login.
      for (let i = 0; i < 16; i++) await inbox.waitFor(`the SUBACKs for ${sub.deviceName}`, (e) => e[0] === 'suback');
      device.onProps((request) => inbox.put('props', sub.deviceName, request));
      device.onService('Echo', (request, reply) => {
        inbox.put('service', sub.deviceName, request);
        reply({ id: request.id, code: 200, data: { echo: request.params.text, by: sub.deviceName } }, 'sync');
      });
      await waitForStatus(args.api, pk, sub.deviceName, 'ONLINE');
      devices.push({ sub, device });
      ok(`login(${sub.deviceName}): code 200, the SDK emitted connect, GetDeviceStatus says ONLINE`);
    }

    for (const { sub, device } of devices) {
      const dn = sub.deviceName;
      const value = dn.length + 20.5;
      const posted = await callback(`postProps of ${dn}`, (cb) => device.postProps({ Temperature: value }, cb));
      expect(posted.code === 200, `postProps of ${dn} answered ${JSON.stringify(posted)}`);
      const status = await apiPost(args.api, '/QueryDevicePropertyStatus', { ProductKey: pk, DeviceName: dn });
      const kept = Object.fromEntries(status.Data.List.PropertyStatusInfo.map((p) => [p.Identifier, p.Value]));
      expect(kept.Temperature === String(value), `QueryDevicePropertyStatus of ${dn}: ${JSON.stringify(status)}`);
      ok(`${dn} postProps({Temperature: ${value}}) through the gateway: code 200, QueryDevicePropertyStatus shows it`);

      const set = await apiPost(args.api, '/SetDeviceProperty', { ProductKey: pk, DeviceName: dn, Items: JSON.stringify({ Switch: 1 }) });
      const [, who, request] = await inbox.waitFor(`onProps of ${dn}`, (e) => e[0] === 'props' && e[1] === dn);
      expect(who === dn && request.id === set.Data.MessageId && request.params.Switch === 1,
        `onProps of ${dn} got ${JSON.stringify(request)}, expected id ${set.Data.MessageId}`);
      ok(`SetDeviceProperty of ${dn} reached its onProps through the gateway: ${JSON.stringify(request)}`);

      const answer = await apiPost(args.api, '/InvokeThingService', {
        ProductKey: pk, DeviceName: dn, Identifier: 'Echo', Args: JSON.stringify({ text: `hello ${dn}` }),
        Sync: true, Timeout: 5000,
      });
      const result = answer.Data.Result ? JSON.parse(answer.Data.Result) : {};
      expect(answer.Data.Code === 200 && result.echo === `hello ${dn}` && result.by === dn,
        `InvokeThingService (sync, RRPC) to ${dn} answered ${JSON.stringify(answer)}`);
      ok(`InvokeThingService Echo (sync, RRPC) to ${dn} answered by its onService through the gateway: ${answer.Data.Result}`);
    }

    const first = devices[0].sub;
    const identity = { productKey: pk, deviceName: first.deviceName };
    const out = await callback('logout', (cb) => gateway.logout(identity, cb));
    expect(out.code === 200, `logout of ${first.deviceName} answered ${JSON.stringify(out)}`);
    await waitForStatus(args.api, pk, first.deviceName, 'OFFLINE');
    const again = await callback('second logout', (cb) => gateway.logout(identity, cb));
    expect(again.code === 520, `a second logout answered ${JSON.stringify(again)}, expected 520`);
    ok(`logout(${first.deviceName}): code 200, OFFLINE; a second logout: code 520 (${again.message})`);

    // Last: the SDK keeps a refused login's SubDevice in its list, ahead of none here.
    const forged = await callback('login (wrong secret)', (cb) => gateway.login(
      { productKey: pk, deviceName: first.deviceName, deviceSecret: 'not-its-secret' }, cb));
    expect(forged.code === 6287, `a login signed with a wrong secret answered ${JSON.stringify(forged)}, expected 6287`);
    expect(await statusOf(args.api, pk, first.deviceName) === 'OFFLINE', 'the refused sub-device is not OFFLINE');
    ok(`login(${first.deviceName}) with a wrong secret: code 6287 (${forged.message}); it stays OFFLINE`);

    await new Promise((resolve) => gateway.end(false, resolve));
    await waitForStatus(args.api, pk, devices[1].sub.deviceName, 'OFFLINE');
    ok(`the gateway disconnected: ${devices[1].sub.deviceName} went OFFLINE with it`);
    return 0;
  } catch (error) {
    const message = error instanceof CheckFailed ? error.message : `unexpected error: ${error.stack || error}`;
    console.log(`  FAILED (alibabacloud-iot-device-sdk gateway): ${message}`);
    gateway.end(true);
    return 1;
  }
}

main().then((status) => process.exit(status), (error) => {
  console.log(`  FAILED: ${error.stack || error}`);
  process.exit(1);
});
