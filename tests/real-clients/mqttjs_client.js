'use strict';
// MQTT.js 5 (npm `mqtt`, unmodified) as a platform device over WebSocket against `aliot serve`:
// ws://127.0.0.1:PORT/mqtt, or wss://… with --tls (the CA of the run trusted through
// NODE_EXTRA_CA_CERTS, which run.sh sets). MQTT.js asks for the subprotocol `mqtt` and sends
// MQTT in binary WebSocket messages, as browsers and mini-programs do.
//
// The platform credentials are signed here from the documented rule (SPEC.md section 2) with
// hmacsha256, securemode=3 over ws and 2 over wss. Step by step: a plain HTTP request to the
// WebSocket port is answered 400 with the reason; a wrong signature is refused (CONNACK 5);
// connect; subscribe the device's own topic, a broadcast topic (QoS 1) and its RRPC requests
// (QoS 0): granted [1, 1, 0]; publish QoS 1 on the broadcast topic (PUBACK) and receive it back;
// receive a server-side publish (POST /pub); answer an RRPC call made with POST /rrpc and see it
// return SUCCESS with the answer; disconnect.
//
// Usage: node mqttjs_client.js --port P --api URL --product-key PK --device-name DN
//        --device-secret DS --websocket PATH [--tls]

const crypto = require('crypto');
const mqtt = require('mqtt');

const { CheckFailed, Inbox, apiPost, expect, ok, parseArgs } = require('./common');

// (client id, username, password) as the platform documents them, signed with hmacsha256.
function platformCredentials(pk, dn, secret, securemode) {
  const timestamp = String(Date.now());
  const clientId = `mqttjs.${dn}`;
  const content = `clientId${clientId}deviceName${dn}productKey${pk}timestamp${timestamp}`;
  const password = crypto.createHmac('sha256', secret).update(content).digest('hex');
  return {
    clientId: `${clientId}|securemode=${securemode},signmethod=hmacsha256,timestamp=${timestamp}|`,
    username: `${dn}&${pk}`,
    password,
  };
}

// A connected (or refused) MQTT.js client reporting its events into `inbox`.
function connect(url, credentials, inbox) {
  const client = mqtt.connect(url, {
    ...credentials,
    protocolVersion: 4,
    clean: true,
    keepalive: 60,
    reconnectPeriod: 0,
    connectTimeout: 10000,
  });
  client.on('connect', (connack) => inbox.put('connect', connack.returnCode));
  client.on('error', (error) => inbox.put('error', error.code, String(error)));
  client.on('close', () => inbox.put('close'));
  client.on('message', (topic, payload, packet) => inbox.put('message', topic, payload, packet.qos));
  return client;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  expect(args.websocket, '--websocket PATH is required: this driver speaks MQTT over WebSocket');
  const pk = args.productKey;
  const dn = args.deviceName;
  const scheme = args.tls ? 'wss' : 'ws';
  const url = `${scheme}://${args.host}:${args.port}${args.websocket}`;
  const securemode = args.tls ? 2 : 3;
  let client;
  try {
    // What is not a WebSocket upgrade gets an HTTP error saying why, not a hang.
    const httpUrl = `${args.tls ? 'https' : 'http'}://${args.host}:${args.port}${args.websocket}`;
    const plain = await fetch(httpUrl);
    const reason = (await plain.text()).trim();
    expect(plain.status === 400, `GET ${httpUrl} without an upgrade answered ${plain.status}: ${reason}`);
    ok(`a plain GET ${httpUrl} is answered 400: ${reason}`);

    const refusedInbox = new Inbox();
    const wrong = { ...platformCredentials(pk, dn, args.deviceSecret, securemode), password: '0'.repeat(64) };
    const refused = connect(url, wrong, refusedInbox);
    const [, code] = await refusedInbox.waitFor('the refusal of a wrong signature', (e) => e[0] === 'error' || e[0] === 'connect');
    refused.end(true);
    expect(code === 5, `a wrong signature got ${code}, expected CONNACK 5 (not authorized)`);
    ok('a wrong signature is refused: CONNACK 5 (not authorized)');

    const inbox = new Inbox();
    client = connect(url, platformCredentials(pk, dn, args.deviceSecret, securemode), inbox);
    const [event, returnCode] = await inbox.waitFor('CONNACK', (e) => e[0] === 'connect' || e[0] === 'error');
    expect(event === 'connect' && returnCode === 0, `CONNECT got ${event} ${returnCode}, expected CONNACK 0`);
    ok(`connected over ${url} (subprotocol mqtt, hmacsha256, securemode=${securemode})`);

    const ownGet = `/${pk}/${dn}/user/get`;
    const broadcast = `/broadcast/${pk}/mqttjs`;
    const rrpcRequests = `/sys/${pk}/${dn}/rrpc/request/+`;
    const grants = await client.subscribeAsync({ [ownGet]: { qos: 1 }, [broadcast]: { qos: 1 }, [rrpcRequests]: { qos: 0 } });
    const granted = grants.map((g) => g.qos);
    expect(granted.join() === '1,1,0', `SUBACK granted ${JSON.stringify(grants)}, expected [1, 1, 0]`);
    ok(`subscribed ${ownGet}, ${broadcast} (QoS 1) and ${rrpcRequests} (QoS 0): granted [${granted}]`);

    // Larger than one WebSocket frame's short length and a TCP segment.
    const payload = crypto.randomBytes(70000);
    await client.publishAsync(broadcast, payload, { qos: 1 });
    const [, , body, qos] = await inbox.waitFor(`the message on ${broadcast}`, (e) => e[0] === 'message' && e[1] === broadcast);
    expect(Buffer.compare(body, payload) === 0 && qos === 1, `received ${body.length} bytes at QoS ${qos}, expected the ${payload.length} sent at QoS 1`);
    ok(`published ${payload.length} bytes at QoS 1 on ${broadcast}: PUBACK, and received them back intact`);

    const pub = await apiPost(args.api, '/pub', {
      ProductKey: pk, TopicFullName: ownGet, MessageContent: Buffer.from('to mqtt.js').toString('base64'), Qos: 1,
    });
    expect(pub.Subscribers === 1, `POST /pub answered ${JSON.stringify(pub)}, expected Subscribers 1`);
    const [, , fromServer] = await inbox.waitFor(`the server's message on ${ownGet}`, (e) => e[0] === 'message' && e[1] === ownGet);
    expect(fromServer.toString() === 'to mqtt.js', `received ${JSON.stringify(fromServer.toString())}`);
    ok(`received a server-side publish (POST /pub) on ${ownGet}`);

    const request = Buffer.from('ping over websocket');
    const call = apiPost(args.api, '/rrpc', {
      ProductKey: pk, DeviceName: dn, Timeout: 5000, RequestBase64Byte: request.toString('base64'),
    });
    const [, topic, asked] = await inbox.waitFor('the RRPC request', (e) => e[0] === 'message' && e[1].startsWith(`/sys/${pk}/${dn}/rrpc/request/`));
    expect(Buffer.compare(asked, request) === 0, `the RRPC request carried ${JSON.stringify(asked.toString())}`);
    const messageId = topic.split('/').pop();
    await client.publishAsync(`/sys/${pk}/${dn}/rrpc/response/${messageId}`, Buffer.concat([Buffer.from('pong:'), asked]), { qos: 0 });
    const answer = await call;
    const answered = Buffer.from(answer.PayloadBase64Byte || '', 'base64').toString();
    expect(answer.RrpcCode === 'SUCCESS' && answered === 'pong:ping over websocket' && answer.MessageId === messageId,
      `POST /rrpc answered ${JSON.stringify(answer)}, expected SUCCESS with pong:… for message ${messageId}`);
    ok(`answered RRPC ${messageId}: POST /rrpc returned SUCCESS with the answer`);

    await client.endAsync();
    ok('disconnected');
    return 0;
  } catch (error) {
    const message = error instanceof CheckFailed ? error.message : `unexpected error: ${error.stack || error}`;
    console.log(`  FAILED (MQTT.js over ${url}): ${message}`);
    if (client) client.end(true);
    return 1;
  }
}

main().then((status) => process.exit(status), (error) => {
  console.log(`  FAILED: ${error.stack || error}`);
  process.exit(1);
});
