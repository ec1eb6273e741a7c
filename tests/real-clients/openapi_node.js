'use strict';
// @alicloud/pop-core 1.8.0 (the platform's Node server SDK for RPC-style OpenAPIs, unmodified,
// from npm) against aliot's OpenAPI, with only the endpoint changed; the device is the
// platform's Node device SDK (alibabacloud-iot-device-sdk).
//
// Step by step, each action through `RPCClient.request` (signature 1.0, HMAC-SHA1, a form
// body): `CreateProduct`; `RegisterDevice`; `QueryDeviceDetail` UNACTIVE; the device connects
// with the returned secret (CONNACK 0) and `QueryDeviceDetail` says ONLINE; `Pub` reaches it
// on its `/user/get` topic; `RRpc` is answered by it (SUCCESS with its payload);
// `DisableThing` disconnects it (DISABLE) and its next CONNECT is refused; `EnableThing` lets
// it back; `DeleteDevice` removes it (`iot.device.NotExistedDevice` after). A client with a
// wrong AccessKey secret is refused (`SignatureDoesNotMatch`), and a request sent again with
// the same `SignatureNonce` is refused (`SignatureNonceUsed`).
//
// Usage: node openapi_node.js --port P --api URL --access-key-id ID --access-key-secret SECRET

const RPCClient = require('@alicloud/pop-core');
const iot = require('alibabacloud-iot-device-sdk');

const { Inbox, expect, ok, parseArgs } = require('./common');

function client(args, secret) {
  return new RPCClient({
    accessKeyId: args.accessKeyId,
    accessKeySecret: secret,
    endpoint: args.api,
    apiVersion: '2018-01-20',
  });
}

// One action, POSTed as the SDK's docs show; a refusal is returned as `{ failed: code }`.
async function call(api, action, params) {
  try {
    return await api.request(action, params, { method: 'POST' });
  } catch (error) {
    if (error.code) return { failed: error.code, data: error.data };
    throw error;
  }
}

function connect(args, pk, dn, secret, inbox) {
  const device = iot.device({
    productKey: pk,
    deviceName: dn,
    deviceSecret: secret,
    brokerUrl: `mqtt://${args.host}:${args.port}`,
    keepalive: 60,
  });
  device.mqttClient.options.reconnectPeriod = 0;
  device.mqttClient.on('packetreceive', (packet) => {
    if (packet.cmd === 'connack') inbox.put('connack', packet.returnCode);
  });
  device.on('message', (topic, payload) => inbox.put('message', topic, payload.toString('latin1')));
  device.on('close', () => inbox.put('close'));
  device.on('error', (error) => inbox.put('error', String(error)));
  return device;
}

async function status(api, pk, dn) {
  const detail = await call(api, 'QueryDeviceDetail', { ProductKey: pk, DeviceName: dn });
  expect(detail.Success === true, `QueryDeviceDetail answered ${JSON.stringify(detail)}`);
  return detail.Data.Status;
}

async function main() {
  const args = parseArgs(process.argv.slice(2), ['port', 'api', 'accessKeyId', 'accessKeySecret']);
  const api = client(args, args.accessKeySecret);

  const wrong = await call(client(args, `${args.accessKeySecret}x`), 'QueryProductList', { CurrentPage: 1, PageSize: 10 });
  expect(wrong.failed === 'SignatureDoesNotMatch', `a wrong AccessKey secret answered ${JSON.stringify(wrong)}`);
  ok('a wrong AccessKey secret is refused: SignatureDoesNotMatch');
  const nonce = `pop-core-replay-${Date.now()}`;
  const first = await call(api, 'QueryProductList', { CurrentPage: 1, PageSize: 10, SignatureNonce: nonce });
  expect(first.Success === true, `QueryProductList answered ${JSON.stringify(first)}`);
  const replayed = await call(api, 'QueryProductList', { CurrentPage: 1, PageSize: 10, SignatureNonce: nonce });
  expect(replayed.failed === 'SignatureNonceUsed', `a replayed nonce answered ${JSON.stringify(replayed)}`);
  ok('a request sent again with its SignatureNonce is refused: SignatureNonceUsed');

  const product = await call(api, 'CreateProduct', { ProductName: `pop-core-${Date.now()}`, NodeType: 0 });
  expect(product.Success === true, `CreateProduct answered ${JSON.stringify(product)}`);
  const pk = product.ProductKey || product.Data.ProductKey;
  const registered = await call(api, 'RegisterDevice', { ProductKey: pk, DeviceName: 'pop-core-01' });
  expect(registered.Success === true, `RegisterDevice answered ${JSON.stringify(registered)}`);
  const dn = registered.Data.DeviceName;
  const secret = registered.Data.DeviceSecret;
  expect(await status(api, pk, dn) === 'UNACTIVE', 'a new device is UNACTIVE');
  ok(`CreateProduct made ${pk}, RegisterDevice ${dn}: UNACTIVE`);

  let inbox = new Inbox();
  let device = connect(args, pk, dn, secret, inbox);
  try {
    const [, code] = await inbox.waitFor('CONNACK', (e) => e[0] === 'connack' || e[0] === 'error');
    expect(code === 0, `the device's CONNECT with its registered secret got ${code}`);
    expect(await status(api, pk, dn) === 'ONLINE', 'a connected device is ONLINE');
    ok('the device connected with the returned secret: ONLINE');

    const get = `/${pk}/${dn}/user/get`;
    const rrpcRequests = `/sys/${pk}/${dn}/rrpc/request/+`;
    await new Promise((resolve, reject) => device.subscribe([get, rrpcRequests], (error) => (error ? reject(error) : resolve())));
    const pub = await call(api, 'Pub', {
      ProductKey: pk, TopicFullName: get, MessageContent: Buffer.from('from pop-core').toString('base64'), Qos: 0,
    });
    expect(pub.Success === true && pub.MessageId, `Pub answered ${JSON.stringify(pub)}`);
    const [, , body] = await inbox.waitFor('the Pub', (e) => e[0] === 'message' && e[1] === get);
    expect(body === 'from pop-core', `Pub delivered ${JSON.stringify(body)}`);
    ok('Pub reached the device');

    device.on('message', (topic, payload) => {
      if (topic.startsWith(`/sys/${pk}/${dn}/rrpc/request/`)) {
        device.publish(topic.replace('/rrpc/request/', '/rrpc/response/'), `pong:${payload.toString()}`);
      }
    });
    const rrpc = await call(api, 'RRpc', {
      ProductKey: pk, DeviceName: dn, RequestBase64Byte: Buffer.from('ping').toString('base64'), Timeout: 5000,
    });
    const answer = Buffer.from(rrpc.PayloadBase64Byte || '', 'base64').toString();
    expect(rrpc.Success === true && rrpc.RrpcCode === 'SUCCESS' && answer === 'pong:ping', `RRpc answered ${JSON.stringify(rrpc)}`);
    ok(`RRpc answered by the device: SUCCESS with ${JSON.stringify(answer)}`);

    const disabled = await call(api, 'DisableThing', { ProductKey: pk, DeviceName: dn });
    expect(disabled.Success === true, `DisableThing answered ${JSON.stringify(disabled)}`);
    await inbox.waitFor('the disconnect', (e) => e[0] === 'close');
    expect(await status(api, pk, dn) === 'DISABLE', 'a disabled device is DISABLE');
  } finally {
    device.end(true);
  }
  inbox = new Inbox();
  device = connect(args, pk, dn, secret, inbox);
  try {
    const [, code] = await inbox.waitFor('CONNACK', (e) => e[0] === 'connack' || e[0] === 'error');
    expect(code !== 0, 'a disabled device must be refused');
    ok(`DisableThing disconnected it (DISABLE) and its CONNECT is refused: ${code}`);
  } finally {
    device.end(true);
  }
  const enabled = await call(api, 'EnableThing', { ProductKey: pk, DeviceName: dn });
  expect(enabled.Success === true, `EnableThing answered ${JSON.stringify(enabled)}`);
  inbox = new Inbox();
  device = connect(args, pk, dn, secret, inbox);
  try {
    const [, code] = await inbox.waitFor('CONNACK', (e) => e[0] === 'connack' || e[0] === 'error');
    expect(code === 0, `after EnableThing its CONNECT got ${code}`);
    ok('EnableThing lets it back: CONNACK 0');
  } finally {
    device.end(true);
  }
  const deleted = await call(api, 'DeleteDevice', { ProductKey: pk, DeviceName: dn });
  expect(deleted.Success === true, `DeleteDevice answered ${JSON.stringify(deleted)}`);
  const gone = await call(api, 'QueryDeviceDetail', { ProductKey: pk, DeviceName: dn });
  expect(gone.failed === 'iot.device.NotExistedDevice', `after DeleteDevice: ${JSON.stringify(gone)}`);
  ok('DeleteDevice removed it: iot.device.NotExistedDevice');
}

main().then(() => process.exit(0), (error) => {
  console.log(`  FAILED (openapi_node): ${error && error.message ? error.message : error}`);
  process.exit(1);
});
