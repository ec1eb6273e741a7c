'use strict';
// alibabacloud-iot-device-sdk 1.2.8 (the platform's Node device SDK, unmodified): its own
// dynamic registration over HTTP ("one product, one secret", `iot.register`, pointed at aliot's
// `POST /auth/register/device` with its `registerURL` option), then a normal connect with the
// secret it obtained.
//
// Step by step: a wrong product secret is refused; the pre-registered, inactive device
// registers and gets a secret; registering again while it is still inactive gives a new secret
// (the platform keeps the last); the SDK's device connects with the last one (CONNACK 0), which
// activates it; once activated, registration is refused.
//
// Usage: node node_dynreg.js --port P --api URL --product-key PK --device-name DN
//        --product-secret PS

const iot = require('alibabacloud-iot-device-sdk');

const { Inbox, expect, ok, parseArgs } = require('./common');

// `iot.register` as a promise of the API's answer (the SDK calls back with the answer, or
// with what it threw for a code other than 200).
function register(args, productSecret) {
  return new Promise((resolve) => {
    iot.register({
      productKey: args.productKey,
      productSecret,
      deviceName: args.deviceName,
      registerURL: `${args.api.replace(/\/$/, '')}/auth/register/device`,
    }, resolve);
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2), ['port', 'api', 'productKey', 'deviceName', 'productSecret']);
  const wrong = await register(args, `${args.productSecret}x`);
  expect(wrong.code === 403, `a wrong product secret answered ${JSON.stringify(wrong)}`);
  ok(`a wrong product secret is refused: code ${wrong.code}`);

  const first = await register(args, args.productSecret);
  expect(first.code === 200 && first.data && first.data.deviceSecret, `registration answered ${JSON.stringify(first)}`);
  const again = await register(args, args.productSecret);
  expect(again.code === 200 && again.data.deviceSecret !== first.data.deviceSecret,
    `a second registration while inactive answered ${JSON.stringify(again)}`);
  ok('iot.register obtained a secret over HTTP, and a new one when asked again while inactive');

  const inbox = new Inbox();
  const device = iot.device({
    productKey: args.productKey,
    deviceName: args.deviceName,
    deviceSecret: again.data.deviceSecret,
    brokerUrl: `mqtt://${args.host}:${args.port}`,
    keepalive: 60,
  });
  device.mqttClient.on('packetreceive', (packet) => {
    if (packet.cmd === 'connack') inbox.put('connack', packet.returnCode);
  });
  device.on('error', (error) => inbox.put('error', String(error)));
  try {
    const [, code] = await inbox.waitFor('CONNACK', (e) => e[0] === 'connack' || e[0] === 'error');
    expect(code === 0, `the device's CONNECT with its registered secret got ${code}`);
    ok('the SDK device connected with the registered secret: CONNACK 0');
  } finally {
    device.end();
  }

  const activated = await register(args, args.productSecret);
  expect(activated.code === 409, `registration after activation answered ${JSON.stringify(activated)}`);
  ok(`registration of an activated device is refused: code ${activated.code}`);
}

main().then(() => process.exit(0), (error) => {
  console.log(`  FAILED (node_dynreg): ${error && error.message ? error.message : error}`);
  process.exit(1);
});
