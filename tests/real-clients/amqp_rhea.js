'use strict';
// rhea (npm, unmodified) as a business server of the server-side subscription, written the way
// the platform's Node demo is: SASL PLAIN with the `aksign` user name
// `${clientId}|authMode=aksign,signMethod=hmacsha1,timestamp=…,authId=${accessKeyId},
// iotInstanceId=,consumerGroupId=…|` and the base64 HMAC-SHA1 password of
// `authId=…&timestamp=…`, `idle_time_out` 60000, one `open_receiver()`, each message accepted
// in the `message` handler (`context.delivery.accept()`), its body `msg.body.content` and its
// topic `msg.application_properties.topic`.
//
// Step by step: the consumer attaches to the group; a device (Debian's mosquitto_pub, with
// credentials from `aliot sign`) connects, publishes on its /user/update and disconnects: the
// consumer gets its online status, the payload with its topic, messageId and generateTime, and
// its offline status. A second consumer of the same group shares the next messages with the
// first; a consumer of another group gets every one of them. A consumer killed with messages in
// flight (it never accepts): they go to the next consumer, nothing lost. Refused: a wrong
// signature, an unknown AccessKey (SASL), an unknown consumer group, a second receiver on one
// connection, and a connection with no receiver within 15 s.
//
// Usage: node amqp_rhea.js --amqp-port P --mqtt-port P --aliot BIN --product-key PK
//   --device-name DN --device-secret DS --access-key-id ID --access-key-secret SECRET --ca CA.pem|none

const crypto = require('crypto');
const fs = require('fs');
const { execFileSync } = require('child_process');
const rhea = require('rhea');

const { WAIT_MS, CheckFailed, Inbox, expect, ok, parseArgs } = require('./common');

const args = parseArgs(process.argv.slice(2), ['amqpPort', 'mqttPort', 'aliot', 'productKey',
  'deviceName', 'deviceSecret', 'accessKeyId', 'accessKeySecret', 'ca']);
// TLS as the demo has it (`transport: 'tls'`), trusting the run's CA (`--ca none`: plain AMQP).
const transport = args.ca === 'none' ? {} : { transport: 'tls', ca: [fs.readFileSync(args.ca)] };
const pk = args.productKey;
const dn = args.deviceName;

// The demo's credentials (what the platform's Node sample computes).
function credentials(group, { keyId = args.accessKeyId, secret = args.accessKeySecret, clientId } = {}) {
  const timestamp = Date.now();
  const username = `${clientId}|authMode=aksign,signMethod=hmacsha1,timestamp=${timestamp},authId=${keyId},iotInstanceId=,consumerGroupId=${group}|`;
  const password = crypto.createHmac('sha1', secret).update(`authId=${keyId}&timestamp=${timestamp}`).digest('base64');
  return { username, password };
}

// A consumer: connects, opens one receiver; `accept` false leaves every message unanswered.
function consume(name, group, inbox, { accept = true, ...login } = {}) {
  const container = rhea.create_container({ id: name });
  const connection = container.connect({
    host: '127.0.0.1',
    port: Number(args.amqpPort),
    reconnect: false,
    idle_time_out: 60000,
    ...transport,
    ...credentials(group, { clientId: name, ...login }),
  });
  connection.on('connection_open', () => inbox.put('open', name));
  connection.on('connection_error', (context) => inbox.put('error', name, String(context.connection.error)));
  connection.on('connection_close', () => inbox.put('close', name));
  connection.on('disconnected', (context) => inbox.put('disconnected', name, String(context.error || '')));
  const receiver = connection.open_receiver({ autoaccept: false });
  receiver.on('receiver_open', () => inbox.put('receiver', name));
  receiver.on('receiver_error', (context) => inbox.put('receiver-error', name, String(context.receiver.error)));
  receiver.on('message', (context) => {
    const msg = context.message;
    const props = msg.application_properties;
    inbox.put('message', name, {
      topic: props.topic,
      messageId: props.messageId,
      generateTime: props.generateTime,
      id: msg.message_id,
      body: Buffer.from(msg.body.content).toString(),
    });
    if (accept) context.delivery.accept();
  });
  return connection;
}

// Signs with `aliot sign` and publishes each payload with mosquitto_pub (one connection each),
// on the device's /user/update unless another topic is given.
function mosquittoPub(payloads, topic = `/${pk}/${dn}/user/update`) {
  const signed = execFileSync(args.aliot, ['sign', '--product-key', pk, '--device-name', dn,
    '--device-secret', args.deviceSecret]).toString();
  const field = (name) => signed.split('\n').find((l) => l.startsWith(`${name}=`)).slice(name.length + 1);
  for (const payload of payloads) {
    execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', args.mqttPort, '-V', 'mqttv311', '-k', '60',
      '-i', field('client_id'), '-u', field('username'), '-P', field('password'),
      '-t', topic, '-q', '1', '-m', payload]);
  }
}

async function messages(inbox, name, count) {
  const got = [];
  while (got.length < count) {
    const [, , message] = await inbox.waitFor(`message ${got.length + 1} of ${count} for ${name}`,
      (e) => e[0] === 'message' && e[1] === name);
    got.push(message);
  }
  return got;
}

async function main() {
  const inbox = new Inbox();
  const open = [];
  try {
    open.push(consume('app-1', 'DEFAULT_GROUP', inbox));
    await inbox.waitFor('the receiver of app-1', (e) => e[0] === 'receiver' && e[1] === 'app-1');
    ok(`rhea connected${args.ca === 'none' ? '' : ' over TLS'} with the aksign login and opened its receiver (group DEFAULT_GROUP)`);

    mosquittoPub(['hello from mosquitto_pub']);
    const [online, data, offline] = await messages(inbox, 'app-1', 3);
    const statusTopic = `/as/mqtt/status/${pk}/${dn}`;
    const online_ = JSON.parse(online.body);
    expect(online.topic === statusTopic && online_.status === 'online' && online_.deviceName === dn
      && online_.clientIp === '127.0.0.1', `the first message was ${JSON.stringify(online)}, expected the online status`);
    expect(data.topic === `/${pk}/${dn}/user/update` && data.body === 'hello from mosquitto_pub'
      && data.messageId === data.id && /^\d+$/.test(data.messageId)
      && Math.abs(Number(data.generateTime) - Date.now()) < 60000,
    `the second message was ${JSON.stringify(data)}, expected the payload with topic, messageId and generateTime`);
    expect(offline.topic === statusTopic && JSON.parse(offline.body).status === 'offline',
      `the third message was ${JSON.stringify(offline)}, expected the offline status`);
    ok(`got the online status, the payload on ${data.topic} (messageId ${data.messageId}), the offline status`);

    // Two consumers of one group share; another group gets everything.
    open.push(consume('app-2', 'DEFAULT_GROUP', inbox));
    open.push(consume('audit-1', 'AUDIT_GROUP', inbox));
    await inbox.waitFor('the receiver of app-2', (e) => e[0] === 'receiver' && e[1] === 'app-2');
    await inbox.waitFor('the receiver of audit-1', (e) => e[0] === 'receiver' && e[1] === 'audit-1');
    const payloads = Array.from({ length: 6 }, (_, i) => `shared ${i}`);
    mosquittoPub(payloads);
    // Each publish is a connection: 6 × (online, message, offline) = 18 for each group; the
    // audit group also kept the first 3 for its first consumer.
    const audit = await messages(inbox, 'audit-1', 21);
    const mine = [];
    const deadline = Date.now() + WAIT_MS;
    while (mine.length < 18 && Date.now() < deadline) {
      const [, name, message] = await inbox.waitFor('a shared message', (e) => e[0] === 'message'
        && (e[1] === 'app-1' || e[1] === 'app-2'));
      mine.push([name, message]);
    }
    const byConsumer = (name) => mine.filter(([n]) => n === name).length;
    expect(mine.length === 18 && byConsumer('app-1') > 0 && byConsumer('app-2') > 0,
      `DEFAULT_GROUP's two consumers got ${byConsumer('app-1')} and ${byConsumer('app-2')} of 18`);
    expect(audit.filter((m) => m.body.startsWith('shared')).map((m) => m.body).join(',') === payloads.join(','),
      `AUDIT_GROUP got ${JSON.stringify(audit.map((m) => m.body))}`);
    ok(`DEFAULT_GROUP shared 18 messages (app-1 ${byConsumer('app-1')}, app-2 ${byConsumer('app-2')}); AUDIT_GROUP got them all, and the 3 it kept from before its consumer came`);

    // A consumer that never accepts, killed: what it held goes to the next one.
    for (const connection of open.splice(0)) connection.close();
    const hog = consume('hog', 'AUDIT_GROUP', inbox, { accept: false });
    await inbox.waitFor('the receiver of hog', (e) => e[0] === 'receiver' && e[1] === 'hog');
    mosquittoPub(['held by the hog']);
    const held = await messages(inbox, 'hog', 3);
    hog.socket.destroy();
    open.push(consume('heir', 'AUDIT_GROUP', inbox));
    const again = await messages(inbox, 'heir', 3);
    expect(JSON.stringify(again.map((m) => m.messageId).sort()) === JSON.stringify(held.map((m) => m.messageId).sort()),
      `the next consumer got ${JSON.stringify(again)}, expected the three the killed one held: ${JSON.stringify(held)}`);
    ok('a consumer killed with 3 messages unaccepted: the next consumer of its group got the same 3');

    // Thing-model data: a property post comes in the platform's forwarded form.
    open.push(consume('thing-1', 'THING_GROUP', inbox));
    await inbox.waitFor('the receiver of thing-1', (e) => e[0] === 'receiver' && e[1] === 'thing-1');
    mosquittoPub([JSON.stringify({ id: '42', version: '1.0', params: { temperature: { value: 21.5, time: 1700000000123 } },
      method: 'thing.event.property.post' })], `/sys/${pk}/${dn}/thing/event/property/post`);
    const [posted] = await messages(inbox, 'thing-1', 1);
    const post = JSON.parse(posted.body);
    expect(posted.topic === `/${pk}/${dn}/thing/event/property/post` && post.requestId === '42'
      && post.productKey === pk && post.deviceName === dn && /^\w{20}$/.test(post.iotId)
      && post.items.temperature.value === 21.5 && post.items.temperature.time === 1700000000123
      && typeof post.gmtCreate === 'number',
    `THING_GROUP got ${JSON.stringify(posted)}, expected the forwarded property post`);
    ok(`a property post reached THING_GROUP on ${posted.topic} with iotId ${post.iotId} and its items`);

    // Refusals.
    const refused = async (name, why, group, login) => {
      consume(name, group, inbox, login);
      await inbox.waitFor(`${name} refused (${why})`, (e) => ['error', 'disconnected', 'close', 'receiver-error'].includes(e[0]) && e[1] === name);
      const opened = await inbox.waitFor(`no receiver for ${name}`, (e) => e[0] === 'receiver' && e[1] === name, 500).then(() => true, () => false);
      expect(!opened || why.startsWith('unknown consumer group'), `${name} (${why}) was not refused`);
    };
    await refused('bad-sign', 'wrong signature', 'DEFAULT_GROUP', { secret: 'not-the-secret' });
    await refused('bad-key', 'unknown AccessKey', 'DEFAULT_GROUP', { keyId: 'LTAINobody' });
    await refused('bad-group', 'unknown consumer group', 'NO_SUCH_GROUP', {});
    ok('refused: a wrong signature, an unknown AccessKey, an unknown consumer group');

    const two = consume('two-links', 'DEFAULT_GROUP', inbox);
    await inbox.waitFor('the first receiver of two-links', (e) => e[0] === 'receiver' && e[1] === 'two-links');
    const second = two.open_receiver();
    const refusedLink = new Promise((resolve) => second.on('receiver_error', (context) => resolve(JSON.stringify(context.receiver.error))));
    const error = await Promise.race([refusedLink, new Promise((_, reject) => setTimeout(() => reject(new CheckFailed('a second receiver was not refused')), WAIT_MS))]);
    two.close();
    ok(`a second receiver on one connection was refused: ${error}`);

    const idle = rhea.create_container({ id: 'idle' }).connect({
      host: '127.0.0.1', port: Number(args.amqpPort), reconnect: false, idle_time_out: 60000,
      ...transport, ...credentials('DEFAULT_GROUP', { clientId: 'idle' }),
    });
    const closedAt = await new Promise((resolve, reject) => {
      const started = Date.now();
      idle.on('disconnected', () => resolve(Date.now() - started));
      idle.on('connection_close', () => resolve(Date.now() - started));
      setTimeout(() => reject(new CheckFailed('a connection with no receiver was not closed within 20 s')), 20000);
    });
    expect(closedAt >= 14000, `the connection with no receiver closed after ${closedAt} ms, before 15 s`);
    ok(`a connection that opened no receiver was closed after ${(closedAt / 1000).toFixed(1)} s`);
    for (const connection of open) connection.close();
    return 0;
  } catch (error) {
    const message = error instanceof CheckFailed ? error.message : `unexpected error: ${error.stack || error}`;
    console.log(`  FAILED (rhea consumer): ${message}`);
    return 1;
  }
}

main().then((status) => process.exit(status), (error) => {
  console.log(`  FAILED: ${error.stack || error}`);
  process.exit(1);
});
