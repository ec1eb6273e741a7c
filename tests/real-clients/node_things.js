'use strict';
// alibabacloud-iot-device-sdk (the platform's Node device SDK, unmodified, 1.2.8) against the
// device services of `aliot serve`: the thing model (Alink) and the device shadow, driven through
// the SDK's own thing-model API and answered by its own callbacks. The product's thing model is
// tsl.json (this SDK reads no TSL: it takes identifiers as they come).
//
// The SDK connects without `_ss` and `ext` in its client id: everything it gets comes over
// filters it subscribed to itself (on connect: property post reply, property set, event replies,
// /sys/{pk}/{dn}/rrpc/request/+, /shadow/get/{pk}/{dn}, ...; `onService` adds the service topic),
// and synchronous services reach it in the /sys form of RRPC.
//
// Step by step: connect and wait for the SUBACKs of the filters used below; register the async
// service `Reboot` and the sync service `Echo` with `onService`; `postProps` and `postEvent`: their
// callbacks get code 200; `POST /QueryDevicePropertyStatus` shows the posted properties;
// `POST /SetDeviceProperty` reaches `onProps`; `POST /InvokeThingService` (async) reaches the
// `Reboot` callback, whose `reply(...)` shows up in `GET /ListDownlinkResults`; the same call with
// `Sync` true reaches the `Echo` callback over /sys/{pk}/{dn}/rrpc/request/{id}, whose
// `reply(..., 'sync')` comes back as `Data.Result`; `getShadow` gets the shadow's reply in
// `onShadow`; `postShadow` (reported) is acknowledged there and shows in `POST /GetDeviceShadow`;
// `POST /UpdateDeviceShadow` (desired) makes `onShadow` receive a `control` message; disconnect.
//
// Usage: node node_things.js --port P --api URL --product-key PK --device-name DN --device-secret DS

const iot = require('alibabacloud-iot-device-sdk');

const { WAIT_MS, CheckFailed, Inbox, apiGet, apiPost, expect, ok, parseArgs } = require('./common');

// GET /ListDownlinkResults until it lists the device's answer to the downlink `topic` with
// message id `messageId`; that entry.
async function downlinkResult(api, pk, dn, topic, messageId) {
  const deadline = Date.now() + WAIT_MS;
  let list = [];
  while (Date.now() < deadline) {
    list = (await apiGet(api, '/ListDownlinkResults')).Data.List;
    const found = list.find((r) => r.productKey === pk && r.deviceName === dn && r.topic === topic
      && String(r.requestId) === messageId);
    if (found) return found;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new CheckFailed(`GET /ListDownlinkResults has no result for ${topic} id ${messageId} after ${WAIT_MS / 1000} s: ${JSON.stringify(list)}`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const pk = args.productKey;
  const dn = args.deviceName;
  const inbox = new Inbox();

  const device = iot.device({
    productKey: pk,
    deviceName: dn,
    deviceSecret: args.deviceSecret,
    brokerUrl: `mqtt://${args.host}:${args.port}`,
    keepalive: 60,
  });
  // The SDK's own mqtt.js client, observed (not changed): which filter each SUBACK answers.
  const subscribed = new Map(); // SUBSCRIBE message id -> filters
  const granted = new Map(); // filter -> granted QoS
  device.mqttClient.on('packetsend', (packet) => {
    if (packet.cmd === 'subscribe') subscribed.set(packet.messageId, packet.subscriptions.map((s) => s.topic));
  });
  device.mqttClient.on('packetreceive', (packet) => {
    if (packet.cmd === 'connack') inbox.put('connack', packet.returnCode);
    if (packet.cmd === 'suback') {
      (subscribed.get(packet.messageId) || []).forEach((filter, i) => granted.set(filter, packet.granted[i]));
      inbox.put('suback');
    }
  });
  device.on('error', (error) => inbox.put('error', String(error)));
  // Every message, for the record of what came when an SDK callback did not fire.
  device.on('message', (topic, payload) => inbox.put('message', topic, payload.toString()));

  // The SDK's thing-model callbacks.
  device.onProps((request) => inbox.put('props', request));
  device.onShadow((message) => inbox.put('shadow', message));
  // Async service. 1.2.8 subscribes the service topic of the first `onService` only (its
  // `_addServiceListenerFn` is made once, for that name), so the async one goes first; the sync
  // one needs no topic of its own: it comes over /sys/{pk}/{dn}/rrpc/request/+.
  device.onService('Reboot', (request, reply) => {
    inbox.put('service', 'Reboot', request);
    reply({ id: request.id, code: 200, data: { rebooted: true } });
  });
  device.onService('Echo', (request, reply) => {
    inbox.put('service', 'Echo', request);
    reply({ id: request.id, code: 200, data: { echo: request.params.text } }, 'sync');
  });

  const sys = `/sys/${pk}/${dn}`;
  const needed = [`${sys}/thing/event/property/post_reply`, `${sys}/thing/event/+/post_reply`,
    `${sys}/thing/service/property/set`, `${sys}/thing/service/Reboot`, `${sys}/rrpc/request/+`,
    `/shadow/get/${pk}/${dn}`];

  try {
    const [, returnCode] = await inbox.waitFor('CONNACK', (e) => e[0] === 'connack' || e[0] === 'error');
    expect(returnCode === 0, `CONNACK return code ${returnCode}, expected 0`);
    const deadline = Date.now() + WAIT_MS;
    while (needed.some((f) => !granted.has(f)) && Date.now() < deadline) {
      await inbox.waitFor('SUBACK', (e) => e[0] === 'suback', Math.max(deadline - Date.now(), 1)).catch(() => {});
    }
    const missing = needed.filter((f) => !granted.has(f) || granted.get(f) === 0x80);
    expect(missing.length === 0, `no granted SUBACK for ${missing.map((f) => `${f} (${granted.get(f)})`).join(', ')}`);
    ok(`connected (TCP, no _ss, no ext); the SDK's subscriptions used here were granted: ${needed.join(', ')}`);

    // Property post: the SDK matches the reply by its id `<n>|exp-topic|<reply topic>`.
    const props = { Temperature: 21.5, Switch: 1 };
    const postReply = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new CheckFailed(`no postProps callback within ${WAIT_MS / 1000} s`)), WAIT_MS);
      device.postProps(props, (res) => { clearTimeout(timer); resolve(res); });
    });
    expect(postReply.code === 200 && postReply.message === 'success',
      `postProps callback got ${JSON.stringify(postReply)}, expected code 200, message success`);
    ok(`postProps(${JSON.stringify(props)}): callback got code 200 (${JSON.stringify(postReply)})`);

    const eventReply = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new CheckFailed(`no postEvent callback within ${WAIT_MS / 1000} s`)), WAIT_MS);
      device.postEvent('Alarm', { level: 3 }, (res) => { clearTimeout(timer); resolve(res); });
    });
    expect(eventReply.code === 200 && eventReply.method === 'thing.event.Alarm.post',
      `postEvent callback got ${JSON.stringify(eventReply)}, expected code 200 for thing.event.Alarm.post`);
    ok(`postEvent('Alarm', {level: 3}): callback got code 200 (${JSON.stringify(eventReply)})`);

    const status = await apiPost(args.api, '/QueryDevicePropertyStatus', { ProductKey: pk, DeviceName: dn });
    const kept = Object.fromEntries(status.Data.List.PropertyStatusInfo.map((p) => [p.Identifier, p.Value]));
    expect(kept.Temperature === '21.5' && kept.Switch === '1',
      `QueryDevicePropertyStatus answered ${JSON.stringify(status)}, expected Temperature "21.5" and Switch "1"`);
    ok(`QueryDevicePropertyStatus shows the posted properties: ${JSON.stringify(kept)}`);

    // Property set. The SDK hands it to onProps and sends no reply: 1.2.8 has no API to answer
    // a property set (no postPropsReply or the like; thing.js only stores the onProps callback),
    // so no downlink result is checked for it here (linkkit_things.py checks the Python SDK's
    // automatic reply).
    const set = await apiPost(args.api, '/SetDeviceProperty', {
      ProductKey: pk, DeviceName: dn, Items: JSON.stringify({ Switch: 0 }),
    });
    const setId = set.Data.MessageId;
    const [, setRequest] = await inbox.waitFor('the onProps callback', (e) => e[0] === 'props');
    expect(setRequest.id === setId && setRequest.method === 'thing.service.property.set' && setRequest.params.Switch === 0,
      `onProps got ${JSON.stringify(setRequest)}, expected id ${setId}, method thing.service.property.set, params {"Switch":0}`);
    ok(`SetDeviceProperty {"Switch":0} (MessageId ${setId}) reached onProps: ${JSON.stringify(setRequest)}`);

    // Async service: the callback answers with reply(...) on .../thing/service/Reboot_reply.
    const invoked = await apiPost(args.api, '/InvokeThingService', {
      ProductKey: pk, DeviceName: dn, Identifier: 'Reboot', Args: JSON.stringify({ delay: 2 }), Sync: false,
    });
    const callId = invoked.Data.MessageId;
    const [, , call] = await inbox.waitFor('the Reboot onService callback', (e) => e[0] === 'service' && e[1] === 'Reboot');
    expect(call.id === callId && call.method === 'thing.service.Reboot' && call.params.delay === 2,
      `the Reboot callback got ${JSON.stringify(call)}, expected id ${callId} with params {"delay":2}`);
    const result = await downlinkResult(args.api, pk, dn, `${sys}/thing/service/Reboot`, callId);
    expect(result.code === 200 && result.data.rebooted === true,
      `ListDownlinkResults has ${JSON.stringify(result)}, expected code 200 and data {"rebooted":true}`);
    ok(`InvokeThingService Reboot (async, MessageId ${callId}) reached onService; its reply is in ListDownlinkResults: ${JSON.stringify(result)}`);

    // Sync service: over /sys/{pk}/{dn}/rrpc/request/{id}; reply(..., 'sync') answers on
    // /sys/{pk}/{dn}/rrpc/response/{id}.
    const syncPromise = apiPost(args.api, '/InvokeThingService', {
      ProductKey: pk, DeviceName: dn, Identifier: 'Echo', Args: JSON.stringify({ text: 'hello node' }),
      Sync: true, Timeout: 5000,
    });
    const [, , syncCall] = await inbox.waitFor('the Echo onService callback', (e) => e[0] === 'service' && e[1] === 'Echo');
    const [, requestTopic] = await inbox.waitFor('the Echo request message', (e) => e[0] === 'message'
      && e[1].startsWith(`${sys}/rrpc/request/`) && JSON.parse(e[2]).method === 'thing.service.Echo');
    expect(syncCall.method === 'thing.service.Echo' && syncCall.params.text === 'hello node',
      `the Echo callback got ${JSON.stringify(syncCall)}`);
    const syncAnswer = await syncPromise;
    const rrpcId = requestTopic.split('/').pop();
    expect(syncAnswer.Data.MessageId === rrpcId,
      `InvokeThingService answered MessageId ${syncAnswer.Data.MessageId}, the request came on ${requestTopic}`);
    expect(syncAnswer.Data.Code === 200 && syncAnswer.Data.Result === JSON.stringify({ echo: 'hello node' }),
      `InvokeThingService (sync) answered ${JSON.stringify(syncAnswer)}, expected Code 200 and Result {"echo":"hello node"}`);
    ok(`InvokeThingService Echo (sync) came on ${requestTopic}; reply(..., 'sync') answered it: Data ${JSON.stringify(syncAnswer.Data)}`);

    // Shadow: getShadow's reply and postShadow's acknowledgement both come to onShadow.
    device.getShadow();
    const [, got] = await inbox.waitFor('the shadow get reply in onShadow', (e) => e[0] === 'shadow');
    expect(got.method === 'reply' && got.payload && got.payload.status === 'success' && got.payload.state
      && typeof got.version === 'number' && typeof got.timestamp === 'number',
      `onShadow got ${JSON.stringify(got)} for getShadow, expected a successful reply with state, version, timestamp`);
    ok(`getShadow(): onShadow got the reply ${JSON.stringify(got)}`);

    device.postShadow({ color: 'red' });
    const [, acked] = await inbox.waitFor('the shadow update reply in onShadow', (e) => e[0] === 'shadow');
    expect(acked.method === 'reply' && acked.payload && acked.payload.status === 'success' && acked.payload.version > 0,
      `onShadow got ${JSON.stringify(acked)} for postShadow, expected a successful reply with the new version`);
    const version = acked.payload.version;
    const shadow = JSON.parse((await apiPost(args.api, '/GetDeviceShadow', { ProductKey: pk, DeviceName: dn })).ShadowMessage);
    expect(shadow.state.reported.color === 'red' && shadow.version === version,
      `GetDeviceShadow answered ${JSON.stringify(shadow)}, expected reported color red at version ${version}`);
    ok(`postShadow({color: 'red'}): onShadow got ${JSON.stringify(acked)}; GetDeviceShadow shows it at version ${version}`);

    const update = await apiPost(args.api, '/UpdateDeviceShadow', {
      ProductKey: pk, DeviceName: dn,
      ShadowMessage: JSON.stringify({ method: 'update', state: { desired: { color: 'green' } }, version: version + 1 }),
    });
    expect(update.Data.Pushed === true && update.Data.Version === version + 1,
      `UpdateDeviceShadow answered ${JSON.stringify(update)}, expected Pushed true at version ${version + 1}`);
    const [, control] = await inbox.waitFor('the shadow control message in onShadow', (e) => e[0] === 'shadow');
    expect(control.method === 'control' && control.payload && control.payload.state
      && control.payload.state.desired.color === 'green' && control.payload.state.reported.color === 'red'
      && control.version === version + 1,
      `onShadow got ${JSON.stringify(control)}, expected control with desired green, reported red, version ${version + 1}`);
    ok(`UpdateDeviceShadow (desired color green): onShadow got ${JSON.stringify(control)}`);

    await new Promise((resolve) => device.end(false, resolve));
    ok('disconnected');
    return 0;
  } catch (error) {
    const message = error instanceof CheckFailed ? error.message : `unexpected error: ${error.stack || error}`;
    console.log(`  FAILED (alibabacloud-iot-device-sdk thing model): ${message}`);
    device.end(true);
    return 1;
  }
}

main().then((status) => process.exit(status), (error) => {
  console.log(`  FAILED: ${error.stack || error}`);
  process.exit(1);
});
