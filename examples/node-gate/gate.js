#!/usr/bin/env node
'use strict';
/**
 * A gate in Node.js, built from proto/gated/v1/registry.proto (loaded unchanged) and docs/contract.md
 * alone, playing the calls a gate makes against a registry:
 *
 *   1. GetTime            three samples, the shortest round trip sets the clock offset
 *   2. WatchEntitlements  the snapshot (chunks reassembled, decoded, CRC checked), then a delta
 *                         (someone changes a ticket at the registry while it waits), applied whole
 *   3. WatchKeys          the first message: the ring (kids only; keys are never printed)
 *   4. StreamEvents       a decision and a passage, one ack per batch (an empty batch too), then the
 *                         same batch resent on a new stream: acknowledged, stored once
 *   5. grpc.health.v1     SERVING
 *
 * Progress goes to stderr as JSON lines ({"progress": ...}); the results to stdout as one JSON line.
 * Any failure: one line on stderr naming the step, exit status 1. Plaintext only (loopback): the gate
 * id travels in the `gated-gate-id` metadata entry.
 */

const crypto = require('node:crypto');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const health = require('grpc-health-check');
const { SnapshotAssembler } = require('./snapshot');
const { EntitlementCache } = require('./entitlements');

const PROTO_ROOT = path.join(__dirname, '..', '..', 'proto');
// Every 64-bit value as a decimal string (ticket ids, seqs, epochs are u64), enums by name,
// proto3 defaults filled in, and the name of the oneof case set.
const LOAD_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const USAGE = 'usage: gate.js --target HOST:PORT --gate-id ID [--ticket ID] [--zone Z] [--lane L] '
  + '[--lookup ID,ID...] [--delta-timeout S] [--call-timeout S]';

class StepError extends Error {}

function progress(what, fields) {
  process.stderr.write(`${JSON.stringify({ progress: what, ...fields })}\n`);
}

function describe(err) {
  if (err && typeof err.code === 'number' && err.details !== undefined) {
    return `${grpc.status[err.code]}: ${err.details}`;
  }
  return err && err.message ? err.message : String(err);
}

/** Await `promise`, or fail with `what` after `seconds`. */
function within(seconds, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StepError(`no ${what} within ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function loadServices() {
  const registry = grpc.loadPackageDefinition(protoLoader.loadSync('gated/v1/registry.proto',
    { ...LOAD_OPTIONS, includeDirs: [PROTO_ROOT] }));
  const healthPkg = grpc.loadPackageDefinition(protoLoader.loadSync(health.protoPath, LOAD_OPTIONS));
  return { RegistryService: registry.gated.v1.RegistryService, Health: healthPkg.grpc.health.v1.Health };
}

function unary(client, method, request, options) {
  return new Promise((resolve, reject) => {
    const args = options.metadata ? [request, options.metadata, { deadline: options.deadline() }]
      : [request, { deadline: options.deadline() }];
    client[method](...args, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// ------------------------------------------------------------------ 1. time

async function measureTime(registry, options) {
  let best = null;
  for (let i = 0; i < 3; i++) {
    const sentNs = BigInt(Date.now()) * 1000000n;
    const t0 = process.hrtime.bigint();
    const { unix_nanos: unixNanos } = await unary(registry, 'GetTime', {}, { deadline: options.deadline });
    const rttNs = process.hrtime.bigint() - t0;
    if (best === null || rttNs < best.rttNs) best = { rttNs, offsetNs: BigInt(unixNanos) - (sentNs + rttNs / 2n), unixNanos };
  }
  return {
    samples: 3,
    registry_unix_nanos: String(best.unixNanos),
    rtt_ms: Number(best.rttNs) / 1e6,
    offset_ms: Number(best.offsetNs) / 1e6,
  };
}

// --------------------------------------------------------- 2. entitlements

/**
 * The entitlement watch, kept open for the whole run as a gate keeps it. `until(predicate)` resolves
 * once the cache satisfies it (checked after every snapshot and delta).
 */
class EntitlementWatch {
  constructor(registry, metadata) {
    this.cache = new EntitlementCache();
    this.assembler = null;
    this.snapshot = null;
    this.deltas = [];
    this.waiters = [];
    this.failure = null;
    this.call = registry.WatchEntitlements({ have_version: '0' }, metadata);
    this.call.on('data', (update) => {
      try {
        this.receive(update);
      } catch (err) {
        this.fail(err);
      }
    });
    this.call.on('error', (err) => {
      if (err.code !== grpc.status.CANCELLED) this.fail(err);
    });
  }

  receive(update) {
    if (update.update === 'snapshot') {
      this.assembler ??= new SnapshotAssembler();
      const snapshot = this.assembler.add(update.snapshot);
      if (snapshot === null) return;
      this.cache.loadSnapshot(snapshot);
      this.snapshot = {
        format: snapshot.format,
        version: snapshot.version,
        chunks: this.assembler.chunks,
        bytes: this.assembler.total,
        tickets: snapshot.tickets.length,
        revoked: snapshot.tickets.filter((t) => t.state === 'TICKET_STATE_REVOKED').length,
        zones: snapshot.zones,
      };
      this.assembler = null;
      progress('snapshot', { version: snapshot.version, tickets: snapshot.tickets.length });
    } else if (update.update === 'delta') {
      this.cache.applyDelta(update.delta); // a refused delta ends the run (a gate would reopen the watch)
      const ops = update.delta.ops.map((op) => ({ [op.op]: op[op.op] }));
      this.deltas.push({ base_version: Number(update.delta.base_version), version: Number(update.delta.version), ops });
      progress('delta', { version: this.cache.version, ops: ops.length });
    } else {
      throw new StepError('an update with neither a snapshot nor a delta');
    }
    this.settle();
  }

  fail(err) {
    this.failure = err;
    this.settle();
  }

  settle() {
    this.waiters = this.waiters.filter(({ predicate, resolve, reject }) => {
      if (this.failure) reject(this.failure);
      else if (predicate()) resolve();
      else return true;
      return false;
    });
  }

  until(predicate) {
    return new Promise((resolve, reject) => {
      this.waiters.push({ predicate, resolve, reject });
      this.settle();
    });
  }

  close() {
    this.call.cancel();
  }
}

// ------------------------------------------------------------------ 3. keys

function firstKeyMessage(registry, metadata) {
  return new Promise((resolve, reject) => {
    const call = registry.WatchKeys({ have_kids: [] }, metadata);
    call.once('data', (update) => {
      call.cancel();
      // The kids and the size of each key; the keys themselves are never printed.
      resolve({
        complete: update.complete,
        kids: update.add.map((k) => k.kid),
        key_bytes: update.add.map((k) => k.key.length),
        retire: update.retire,
      });
    });
    call.on('error', (err) => {
      if (err.code !== grpc.status.CANCELLED) reject(err);
    });
  });
}

// ---------------------------------------------------------------- 4. events

/**
 * One StreamEvents stream: each batch written, then its ack read, before the next (one ack per
 * batch, in order). Returns the acks; an ack beyond the last seq sent is a protocol error.
 */
async function sendBatches(registry, metadata, batches) {
  const call = registry.StreamEvents(metadata);
  const replies = call[Symbol.asyncIterator]();
  const acks = [];
  let lastSent = 0n;
  try {
    for (const batch of batches) {
      call.write(batch);
      if (batch.events.length) lastSent = BigInt(batch.events[batch.events.length - 1].seq);
      const { value, done } = await replies.next();
      if (done) throw new StepError(`the stream ended before the ack of batch ${acks.length + 1}`);
      if (BigInt(value.up_to_seq) > lastSent) {
        throw new StepError(`ack up_to_seq ${value.up_to_seq} beyond the last seq sent (${lastSent})`);
      }
      acks.push({ up_to_seq: Number(value.up_to_seq), version: Number(value.version) });
    }
    call.end();
    await replies.next(); // the registry's end of the stream (an error here is the call's status)
  } finally {
    call.cancel();
  }
  return acks;
}

function records(gateId, { ticket, zone, lane }) {
  const at = Date.now() / 1000;
  return [
    {
      event_id: `${gateId}:1`, seq: '1', at, kind: 'EVENT_KIND_DECISION', lane, ticket_id: ticket, reason: 'ok',
      decision: { code_kind: 'static', category: 'guest', zone, direction: 'in', mode: 'turnstile', source: 'node-scanner-1' },
    },
    {
      event_id: `${gateId}:2`, seq: '2', at: at + 1.5, kind: 'EVENT_KIND_PASSAGE', lane, ticket_id: ticket, reason: '',
      passage: { ticket_id: ticket, zone, direction: 'in', confirmed: true, decision_seq: '1' },
      extra_json: JSON.stringify({ vendor: 'node-gate' }),
    },
  ];
}

async function playEvents(registry, metadata, gateId, args) {
  // A new journal epoch: random, non-zero, 63 bits here (any non-zero u64 will do).
  const epoch = (crypto.randomBytes(8).readBigUInt64BE() >> 1n | 1n).toString();
  const events = records(gateId, args);
  const empty = { after_seq: '0', journal_epoch: epoch, events: [] };
  const batch = { after_seq: '0', journal_epoch: epoch, events };
  const first = await sendBatches(registry, metadata, [empty, batch]);
  // As after a lost ack: a new stream resends everything after the last acknowledged record.
  const resent = await sendBatches(registry, metadata, [batch, { ...empty, after_seq: '2' }]);
  return {
    journal_epoch: epoch,
    sent: events.map((e) => ({ seq: Number(e.seq), kind: e.kind, ticket_id: e.ticket_id, zone: args.zone })),
    streams: [first, resent],
  };
}

// ---------------------------------------------------------------- 5. health

async function healthOf(client, options) {
  const out = {};
  for (const service of ['', 'gated.v1.RegistryService']) {
    out[service] = (await unary(client, 'Check', { service }, { deadline: options.deadline })).status;
  }
  return out;
}

// ------------------------------------------------------------------ the run

function parse(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      target: { type: 'string' },
      'gate-id': { type: 'string' },
      ticket: { type: 'string', default: '5205320758' },
      zone: { type: 'string', default: 'hall-a' },
      lane: { type: 'string', default: 'in-1' },
      lookup: { type: 'string', default: '' },
      'delta-timeout': { type: 'string', default: '30' },
      'call-timeout': { type: 'string', default: '10' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (!values.target || !values['gate-id']) throw new StepError('--target and --gate-id are required');
  for (const id of [values.ticket, ...values.lookup.split(',').filter(Boolean)]) {
    if (!/^\d{1,20}$/.test(id) || BigInt(id) >= 2n ** 64n) throw new StepError(`${JSON.stringify(id)} is not a ticket id (0..2^64-1)`);
  }
  const seconds = (name) => {
    const s = Number(values[name]);
    if (!Number.isFinite(s) || s < 0) throw new StepError(`--${name} must be a number of seconds`);
    return s;
  };
  return {
    target: values.target, gateId: values['gate-id'], ticket: values.ticket, zone: values.zone, lane: values.lane,
    lookup: values.lookup.split(',').filter(Boolean), deltaTimeout: seconds('delta-timeout'), callTimeout: seconds('call-timeout'),
  };
}

async function main(args) {
  const { RegistryService, Health } = loadServices();
  const credentials = grpc.credentials.createInsecure();
  const registry = new RegistryService(args.target, credentials);
  const healthClient = new Health(args.target, credentials);
  const metadata = new grpc.Metadata();
  metadata.set('gated-gate-id', args.gateId);
  const options = { deadline: () => Date.now() + args.callTimeout * 1000 };
  const result = { target: args.target, gate_id: args.gateId };
  let step = 'GetTime';
  let watch = null;
  try {
    result.time = await measureTime(registry, options);

    step = 'WatchEntitlements';
    watch = new EntitlementWatch(registry, metadata);
    await within(args.callTimeout, 'snapshot', watch.until(() => watch.snapshot !== null));
    result.snapshot = watch.snapshot;
    if (args.deltaTimeout > 0) {
      await within(args.deltaTimeout, 'delta', watch.until(() => watch.deltas.length > 0));
      result.delta = watch.deltas[0];
    }

    step = 'WatchKeys';
    result.keys = await within(args.callTimeout, 'key ring', firstKeyMessage(registry, metadata));

    step = 'StreamEvents';
    result.events = await within(args.callTimeout, 'acks', playEvents(registry, metadata, args.gateId, args));
    // The ack's version: the registry's entitlement version with this passage counted; the watch
    // brings it (its usage delta) to this gate like to every other.
    const counted = Math.max(...result.events.streams.flat().map((ack) => ack.version));
    step = 'WatchEntitlements';
    await within(args.callTimeout, `version ${counted}`, watch.until(() => watch.cache.version >= counted));
    const mine = watch.cache.tickets.get(args.ticket);
    result.usage = {
      version: watch.cache.version,
      ticket_id: args.ticket,
      entries_used: mine ? mine.entries_used : null,
      inside: mine ? mine.inside : null,
    };
    result.deltas_seen = watch.deltas.length;
    result.lookup = Object.fromEntries(args.lookup.map((id) => {
      const t = watch.cache.tickets.get(id);
      return [id, t ? { state: t.state, category: t.category, zones: t.zones, entries_used: t.entries_used } : null];
    }));

    step = 'grpc.health.v1.Health/Check';
    result.health = await healthOf(healthClient, options);
  } catch (err) {
    throw new StepError(`${step}: ${describe(err)}`);
  } finally {
    if (watch) watch.close();
    registry.close();
    healthClient.close();
  }
  return result;
}

if (require.main === module) {
  let args;
  try {
    args = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`gate.js: ${err.message}\n${USAGE}\n`);
    process.exit(2);
  }
  main(args).then(
    (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
    (err) => {
      process.stderr.write(`gate.js: ${err instanceof StepError ? err.message : describe(err)}\n`);
      process.exitCode = 1;
    },
  );
}

module.exports = { main, parse };
