'use strict';
// alibabacloud-iot-device-sdk (the platform's Node device SDK, unmodified, 1.2.8 on mqtt.js 3.0.0)
// against `aliot serve`.
//
// The SDK signs by itself (client id `{pk}&{dn}|securemode=3,signmethod=hmacsha1,timestamp=<ms>,
// lan=...,_v=1.2.8|`, cleanSession 0) and is pointed at the local broker with its own `brokerUrl`
// option: mqtt://127.0.0.1:PORT (securemode=3), or mqtts://127.0.0.1:PORT (securemode=2, the CA
// of the run trusted through NODE_EXTRA_CA_CERTS, which run.sh sets); with --websocket PATH,
// MQTT over WebSocket: ws://127.0.0.1:PORT/PATH, or wss://… with --tls (the SDK then signs
// securemode=2 by itself, as it does for every TLS scheme).
//
// Step by step: connect; every SUBSCRIBE the SDK sends by itself on connect (twelve
// /sys/{pk}/{dn}/thing/... topics, the RRPC requests, the shadow, the two session replies) is
// granted QoS 1, watched on the SDK's own mqtt.js client ('packetsend' / 'packetreceive'
// events); subscribe to the device's own topic and a broadcast topic; publish on the broadcast
// topic (PUBACK) and receive it; receive a server-side publish; answer an RRPC call (an Alink
// service call on /sys/{pk}/{dn}/rrpc/request/{id}) with the SDK's `onService` callback and its
// synchronous `reply(..., 'sync')`, and see `POST /rrpc` return that answer; disconnect.
//
// Usage: node node_client.js --port P --api URL --product-key PK --device-name DN
//        --device-secret DS [--tls] [--websocket PATH]

const iot = require('alibabacloud-iot-device-sdk');

const { WAIT_MS, CheckFailed, Inbox, apiPost, expect, ok, parseArgs } = require('./common');

// What the SDK subscribes to by itself on every connect (SPEC.md section 3).
function presetTopics(pk, dn) {
  const sys = `/sys/${pk}/${dn}/thing`;
  return [
    `${sys}/event/property/post_reply`, `${sys}/service/property/set`, `${sys}/event/+/post_reply`,
    `${sys}/deviceinfo/update_reply`, `${sys}/deviceinfo/delete_reply`, `${sys}/config/get_reply`,
    `${sys}/config/push`, `${sys}/config/push_reply`, `${sys}/topo/add_reply`,
    `${sys}/topo/delete_reply`, `${sys}/topo/get_reply`, `${sys}/sub/register_reply`,
    `/sys/${pk}/${dn}/rrpc/request/+`, `/shadow/get/${pk}/${dn}`,
    `/ext/session/${pk}/${dn}/combine/login_reply`, `/ext/session/${pk}/${dn}/combine/logout_reply`,
  ];
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const pk = args.productKey;
  const dn = args.deviceName;
  const inbox = new Inbox();
  const scheme = args.websocket ? (args.tls ? 'wss' : 'ws') : (args.tls ? 'mqtts' : 'mqtt');
  const transport = `${args.websocket ? 'WebSocket, ' : ''}${args.tls ? 'TLS, securemode=2' : 'TCP, securemode=3'}`;

  const device = iot.device({
    productKey: pk,
    deviceName: dn,
    deviceSecret: args.deviceSecret,
    brokerUrl: `${scheme}://${args.host}:${args.port}${args.websocket || ''}`,
    keepalive: 60,
  });
  // The SDK's own mqtt.js client, observed (not changed): which filter each SUBACK answers.
  const subscribed = new Map(); // SUBSCRIBE message id -> [filter, requested QoS][]
  const granted = new Map(); // filter -> granted QoS
  const requested = new Map(); // filter -> requested QoS
  device.mqttClient.on('packetsend', (packet) => {
    if (packet.cmd === 'subscribe') {
      subscribed.set(packet.messageId, packet.subscriptions.map((s) => [s.topic, s.qos]));
    }
  });
  device.mqttClient.on('packetreceive', (packet) => {
    if (packet.cmd === 'connack') inbox.put('connack', packet.returnCode, packet.sessionPresent);
    if (packet.cmd === 'suback') {
      const filters = subscribed.get(packet.messageId) || [];
      filters.forEach(([filter, qos], i) => {
        requested.set(filter, qos);
        granted.set(filter, packet.granted[i]);
      });
      inbox.put('suback', packet.messageId, filters.map(([f]) => f), packet.granted);
    }
  });
  device.on('connect', () => inbox.put('connect'));
  device.on('error', (error) => inbox.put('error', String(error)));
  device.on('close', () => inbox.put('close'));
  device.on('message', (topic, payload) => inbox.put('message', topic, payload.toString('latin1')));

  try {
    const [, returnCode] = await inbox.waitFor('CONNACK', (e) => e[0] === 'connack' || e[0] === 'error');
    expect(returnCode === 0, `CONNACK return code ${returnCode}, expected 0`);
    await inbox.waitFor("the SDK's connect event", (e) => e[0] === 'connect');
    ok(`connected with the SDK's own hmacsha1 signing (${transport}, ${scheme}://)`);

    const preset = presetTopics(pk, dn);
    const deadline = Date.now() + WAIT_MS;
    while (preset.some((f) => !granted.has(f)) && Date.now() < deadline) {
      await inbox.waitFor('SUBACK', (e) => e[0] === 'suback', Math.max(deadline - Date.now(), 1)).catch(() => {});
    }
    const missing = preset.filter((f) => !granted.has(f));
    expect(missing.length === 0, `no SUBACK for the SDK's own subscriptions ${missing.join(', ')}`);
    const refused = preset.filter((f) => granted.get(f) !== 1).map((f) => `${f} -> ${granted.get(f)}`);
    expect(refused.length === 0, `the SDK's own subscriptions not granted QoS 1: ${refused.join(', ')}`);
    const unexpected = [...subscribed.values()].flat().map(([f]) => f).filter((f) => !preset.includes(f));
    expect(unexpected.length === 0, `the SDK subscribed to more than SPEC lists: ${unexpected.join(', ')}`);
    ok(`all ${preset.length} subscriptions the SDK makes on connect were granted QoS 1`);

    const serviceName = 'echo';
    device.onService(serviceName, (request, reply) => {
      inbox.put('service', request);
      reply({ id: request.id, code: 200, data: { echo: request.params } }, 'sync');
    });
    const serviceTopic = `/sys/${pk}/${dn}/thing/service/${serviceName}`;
    await inbox.waitFor(`SUBACK for ${serviceTopic}`, (e) => e[0] === 'suback' && e[2].includes(serviceTopic));
    // The SDK asks for QoS 0 here; the broker grants min(requested, 1).
    const serviceQos = requested.get(serviceTopic);
    expect(granted.get(serviceTopic) === Math.min(serviceQos, 1),
      `${serviceTopic} requested at QoS ${serviceQos} was granted ${granted.get(serviceTopic)}`);
    ok(`onService('${serviceName}') subscribed ${serviceTopic} at QoS ${serviceQos}: granted ${serviceQos}`);

    const ownGet = `/${pk}/${dn}/user/get`;
    const broadcast = `/broadcast/${pk}/${dn}`;
    const grants = await new Promise((resolve, reject) => {
      device.subscribe([ownGet, broadcast], { qos: 1 }, (error, result) => (error ? reject(error) : resolve(result)));
    });
    const grantList = grants.map((g) => g.qos);
    expect(grantList.join() === '1,1', `subscribe granted ${JSON.stringify(grants)}, expected QoS 1 twice`);
    ok(`subscribed ${ownGet} and ${broadcast}: granted [${grantList}]`);

    const payload = `node ${dn} broadcast`;
    await new Promise((resolve, reject) => {
      device.publish(broadcast, payload, { qos: 1 }, (error) => (error ? reject(error) : resolve()));
    });
    const [, , body] = await inbox.waitFor(`the message on ${broadcast}`, (e) => e[0] === 'message' && e[1] === broadcast);
    expect(body === payload, `received ${JSON.stringify(body)}, expected ${JSON.stringify(payload)}`);
    ok(`published QoS 1 on ${broadcast}: PUBACK, and received it back`);

    const pub = await apiPost(args.api, '/pub', {
      ProductKey: pk, TopicFullName: ownGet, MessageContent: Buffer.from('to node').toString('base64'), Qos: 1,
    });
    expect(pub.Subscribers === 1, `POST /pub answered ${JSON.stringify(pub)}, expected Subscribers 1`);
    const [, , fromServer] = await inbox.waitFor(`the server's message on ${ownGet}`, (e) => e[0] === 'message' && e[1] === ownGet);
    expect(fromServer === 'to node', `received ${JSON.stringify(fromServer)}`);
    ok(`received a server-side publish (POST /pub) on ${ownGet}`);

    const call = { id: '4711', version: '1.0', method: `thing.service.${serviceName}`, params: { lamp: 1 } };
    const answerPromise = apiPost(args.api, '/rrpc', {
      ProductKey: pk, DeviceName: dn, Timeout: 5000,
      RequestBase64Byte: Buffer.from(JSON.stringify(call)).toString('base64'),
    });
    const [, received] = await inbox.waitFor('the onService callback', (e) => e[0] === 'service');
    expect(received.id === call.id && received.params.lamp === 1, `onService got ${JSON.stringify(received)}`);
    const answer = await answerPromise;
    expect(answer.RrpcCode === 'SUCCESS', `RRPC answered ${JSON.stringify(answer)}, expected RrpcCode SUCCESS`);
    const reply = JSON.parse(Buffer.from(answer.PayloadBase64Byte || '', 'base64').toString());
    expect(reply.id === call.id && reply.code === 200 && reply.data.echo.lamp === 1,
      `RRPC SUCCESS carried ${JSON.stringify(reply)}, expected the SDK's reply to id ${call.id}`);
    ok(`answered RRPC ${answer.MessageId} through onService and reply(..., 'sync'): SUCCESS with ${JSON.stringify(reply)}`);

    await new Promise((resolve) => device.end(false, resolve));
    ok('disconnected');
    return 0;
  } catch (error) {
    const message = error instanceof CheckFailed ? error.message : `unexpected error: ${error.stack || error}`;
    console.log(`  FAILED (alibabacloud-iot-device-sdk, ${transport}): ${message}`);
    device.end(true);
    return 1;
  }
}

main().then((status) => process.exit(status), (error) => {
  console.log(`  FAILED: ${error.stack || error}`);
  process.exit(1);
});
