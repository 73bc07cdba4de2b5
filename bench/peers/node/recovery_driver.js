#!/usr/bin/env node
// Recovery benchmark driver for Node's amqplib + amqp-connection-manager (versions pinned in
// package.json / package-lock.json beside this file; `npm ci` here installs them), run by
// bench/recovery. It publishes persistent messages with confirms to one durable queue while the
// harness kills, restarts or closes nodes, and records what the client reported for every publish.
// Workload, output lines and trace format: bench/recovery/README.md ("Driver contract").
//
//   node bench/peers/node/recovery_driver.js --uris URI[,URI...] --queue NAME [options]
//
// The way amqp-connection-manager is meant to be used: a ChannelWrapper in confirm mode whose
// setup function declares the queue (replayed after every reconnect), publish() returning a
// promise per message (resolved on ack, rejected on nack or when the channel closes), and the
// manager's own reconnect (reconnectTimeInSeconds, 1 s here) trying the URLs in order. The window
// of 500 counts promises not yet settled; publishes made while disconnected are held by the
// wrapper and sent after the reconnect, and they count against the window too.
'use strict';

const readline = require('node:readline');
const fs = require('node:fs');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const amqp = require('amqp-connection-manager');

const NONE = 0;
const ACK = 1;
const NACK = 2;
const FAIL = 3;
const OUTCOME_NAMES = ['none', 'ack', 'nack', 'fail'];

function usage(why) {
  process.stderr.write(
    `recovery_driver.js: ${why}\n` +
      'usage: recovery_driver.js --uris URI[,URI...] --queue NAME [--queue-type quorum|classic]' +
      ' [--duration S] [--window N] [--size B] [--reconnect-s S] [--drain S] [--trace FILE]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    uris: [],
    queue: null,
    queueType: 'quorum',
    durationS: 20,
    window: 500,
    size: 100,
    reconnectS: 1,
    drainS: 5,
    trace: null,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const a = argv[i];
    const v = argv[i + 1];
    if (v === undefined) usage(`missing value of ${a}`);
    switch (a) {
      case '--uris':
        o.uris.push(...v.split(','));
        break;
      case '--queue':
        o.queue = v;
        break;
      case '--queue-type':
        if (v !== 'quorum' && v !== 'classic') usage('--queue-type quorum|classic');
        o.queueType = v;
        break;
      case '--duration':
        o.durationS = Number(v);
        break;
      case '--window':
        o.window = Number(v);
        break;
      case '--size':
        o.size = Number(v);
        break;
      case '--reconnect-s':
        o.reconnectS = Number(v);
        break;
      case '--drain':
        o.drainS = Number(v);
        break;
      case '--trace':
        o.trace = v;
        break;
      default:
        usage(`unknown option ${a}`);
    }
  }
  if (o.uris.length === 0 || !o.queue) usage('--uris and --queue are required');
  if (!(o.size >= 20)) usage('--size must be at least 20 (the sequence number is at octets 12-19)');
  if (!(o.window >= 1)) usage('--window must be at least 1');
  return o;
}

// Wall-clock epoch milliseconds with sub-millisecond resolution.
const nowMs = () => performance.timeOrigin + performance.now();
const fmt = (t) => (t === null || Number.isNaN(t) ? null : Number(t.toFixed(3)));
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const pubT = [0];
  const outT = [0];
  const outcome = [NONE];
  let published = 0;
  let outstanding = 0;
  let faultT = null;
  let stop = false;
  let recoveries = 0;
  let connects = 0;
  let wake = null; // resolves the publisher's wait for room in the window
  const wakeUp = () => {
    if (wake) {
      const w = wake;
      wake = null;
      w();
    }
  };

  const settle = (seq, what) => {
    if (outcome[seq] !== NONE) return;
    outcome[seq] = what;
    outT[seq] = nowMs();
    outstanding--;
    wakeUp();
  };

  const commands = readline.createInterface({ input: process.stdin });
  // End of input means stop as well: the harness has gone.
  commands.on('close', () => {
    stop = true;
    wakeUp();
  });
  commands.on('line', (line) => {
    const w = line.trim().split(/\s+/);
    if (w.length === 2 && w[0] === 'fault') {
      faultT = Number(w[1]);
      emit({ event: 'fault', t: faultT });
    } else if (w.length === 1 && w[0] === 'stop') {
      stop = true;
      wakeUp();
    } else if (line.trim() !== '') {
      process.stderr.write(`recovery_driver.js: unknown command: ${line}\n`);
    }
  });

  const versionOf = (pkg) =>
    JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', pkg, 'package.json'))).version;
  const version = versionOf('amqp-connection-manager');
  const amqplibVersion = versionOf('amqplib');
  const manager = amqp.connect(o.uris, { reconnectTimeInSeconds: o.reconnectS });
  manager.on('connect', ({ connection, url }) => {
    let port = null;
    try {
      port = connection.connection.stream.remotePort;
    } catch (_) {
      port = Number(new URL(url).port) || 5672;
    }
    connects++;
    if (connects > 1) recoveries++;
    emit({
      event: connects > 1 ? 'recovered' : 'connected',
      t: fmt(nowMs()),
      port,
      client: 'node',
      version: `amqp-connection-manager ${version}, amqplib ${amqplibVersion}`,
    });
  });
  manager.on('disconnect', ({ err }) => {
    emit({ event: 'lost', t: fmt(nowMs()), reason: err ? String(err.message || err) : '' });
  });
  manager.on('connectFailed', ({ err }) => {
    emit({ event: 'connect_failed', t: fmt(nowMs()), reason: String(err && err.message) });
  });

  const queueArgs = o.queueType === 'quorum' ? { 'x-queue-type': 'quorum' } : {};
  const channel = manager.createChannel({
    confirm: true,
    setup: (ch) => ch.assertQueue(o.queue, { durable: true, arguments: queueArgs }),
  });
  channel.on('error', (err) => {
    emit({ event: 'channel_error', t: fmt(nowMs()), reason: String(err && err.message) });
  });
  await channel.waitForConnect();

  const start = nowMs();
  const end = start + o.durationS * 1000;
  emit({ event: 'ready', t: fmt(start) });
  const timer = setTimeout(() => {
    stop = true;
    wakeUp();
  }, o.durationS * 1000);

  while (!stop && nowMs() < end) {
    if (outstanding >= o.window) {
      await new Promise((resolve) => {
        wake = resolve;
      });
      continue;
    }
    const seq = ++published;
    const t = nowMs();
    pubT[seq] = t;
    outT[seq] = 0;
    outcome[seq] = NONE;
    outstanding++;
    // Octets 0-7 publish time (epoch microseconds), 8-11 producer number 0, 12-19 the sequence
    // number, all big-endian; the rest zeros.
    const body = Buffer.alloc(o.size);
    body.writeBigUInt64BE(BigInt(Math.round(t * 1000)), 0);
    body.writeUInt32BE(0, 8);
    body.writeBigUInt64BE(BigInt(seq), 12);
    channel.publish('', o.queue, body, { persistent: true }).then(
      () => settle(seq, ACK),
      (err) => settle(seq, err && err.message === 'message nacked' ? NACK : FAIL),
    );
  }
  clearTimeout(timer);

  // Drain: no new publishes; wait (bounded) for every promise to settle.
  const drainEnd = nowMs() + o.drainS * 1000;
  while (outstanding > 0 && nowMs() < drainEnd) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const stopT = nowMs();

  const count = [0, 0, 0, 0];
  const atFault = [0, 0, 0, 0];
  let firstConfirmAfter = null;
  let firstPublishAfter = null;
  for (let s = 1; s <= published; s++) {
    count[outcome[s]]++;
    if (faultT === null) continue;
    if (pubT[s] <= faultT && (outcome[s] === NONE || outT[s] > faultT)) atFault[outcome[s]]++;
    if (pubT[s] > faultT && outcome[s] !== FAIL) {
      if (firstPublishAfter === null) firstPublishAfter = pubT[s];
      if (outcome[s] === ACK && (firstConfirmAfter === null || outT[s] < firstConfirmAfter)) {
        firstConfirmAfter = outT[s];
      }
    }
  }
  emit({
    event: 'summary',
    client: 'node',
    published,
    acked: count[ACK],
    nacked: count[NACK],
    failed: count[FAIL],
    unreported: count[NONE],
    recoveries,
    fault_t: fmt(faultT),
    first_publish_after_fault_t: fmt(firstPublishAfter),
    first_confirm_after_fault_t: fmt(firstConfirmAfter),
    unconfirmed_at_fault: {
      total: atFault[0] + atFault[1] + atFault[2] + atFault[3],
      acked: atFault[ACK],
      nacked: atFault[NACK],
      failed: atFault[FAIL],
      never: atFault[NONE],
    },
    stop_t: fmt(stopT),
  });
  if (o.trace) {
    const lines = [];
    for (let s = 1; s <= published; s++) {
      const out = outcome[s] === NONE ? null : fmt(outT[s]);
      lines.push(JSON.stringify([s, fmt(pubT[s]), OUTCOME_NAMES[outcome[s]], out]));
    }
    fs.writeFileSync(o.trace, lines.length ? `${lines.join('\n')}\n` : '');
  }
  // Closing is best effort (the broker may be gone): the summary above is what matters.
  await Promise.race([manager.close().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(0);
}

main().catch((err) => {
  emit({ event: 'error', t: fmt(nowMs()), what: String((err && err.stack) || err) });
  process.exit(1);
});
