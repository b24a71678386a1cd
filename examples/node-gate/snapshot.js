'use strict';
/**
 * The entitlement snapshot's bytes, read as docs/contract.md ("The snapshot") specifies them, from
 * the document alone: magic, a JSON header, little-endian columns, benefit counts, display text and a
 * CRC-32 of everything before it. Nothing here knows gRPC; a snapshot that breaks any rule throws a
 * SnapshotError and nothing of it is used.
 */

const MAGIC = Buffer.from('GTSNAP\x00', 'latin1');
const ROW_BYTES = 39; // tid 8, profile 4, used 4, serial 2, state 1, inside 8, phone 2, text_off 4, text_len 2, ben_off 4
const NO_PHONE = 0xffff;
const MAX_ZONES = 64;
const MAX_TEXT_BYTES = 65520;
// The state byte per format: format 2 uses TicketState's numbers, format 1 (a gate's older cache) did not.
const STATES = {
  1: { 0: 'TICKET_STATE_ACTIVE', 1: 'TICKET_STATE_REVOKED' },
  2: { 1: 'TICKET_STATE_ACTIVE', 2: 'TICKET_STATE_REVOKED' },
};

class SnapshotError extends Error {}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 as zlib computes it (IEEE 802.3, reflected, init and final xor 0xFFFFFFFF). */
function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function check(condition, message) {
  if (!condition) throw new SnapshotError(message);
}

/** A u64 as a decimal string: exact past 2^53, where a JavaScript number is not. */
function u64String(data, at) {
  const high = data.readUInt32LE(at + 4);
  // Below 2^53 a number holds it exactly, and is much cheaper than a BigInt.
  return high < 0x200000 ? String(high * 0x100000000 + data.readUInt32LE(at)) : data.readBigUInt64LE(at).toString();
}

/** The zone names of an `inside` bitmask given as its low and high 32 bits; no bit beyond the zones declared. */
function zonesIn(low, high, zoneNames, row) {
  if (low === 0 && high === 0) return [];
  const names = [];
  for (let bit = 0; bit < 64; bit++) {
    if (((bit < 32 ? low >>> bit : high >>> (bit - 32)) & 1) === 0) continue;
    check(bit < zoneNames.length, `ticket row ${row}: inside names zone ${bit}, beyond the ${zoneNames.length} declared`);
    names.push(zoneNames[bit]);
  }
  return names;
}

/**
 * Decode a whole snapshot.
 * @param {Buffer} data the chunks' data, appended in offset order
 * @returns {{format: number, version: number, zones: Array<[string, number]>, tickets: object[]}}
 *   each ticket as registry.proto's Ticket reads in JSON (ticket_id a decimal string: it is a u64)
 */
function decodeSnapshot(data) {
  check(data.length >= 16, `snapshot too short (${data.length} bytes)`);
  check(data.subarray(0, 7).equals(MAGIC), 'not a snapshot (bad magic)');
  const format = data[7];
  check(format in STATES, `snapshot format ${format} unknown (this reader knows 1 and 2)`);
  const body = data.length - 4;
  const crc = data.readUInt32LE(body);
  check(crc32(data.subarray(0, body)) === crc, 'snapshot CRC-32 does not match');

  const headLen = data.readUInt32LE(8);
  check(12 + headLen <= body, 'snapshot header runs past the end');
  let header;
  try {
    header = JSON.parse(data.subarray(12, 12 + headLen).toString('utf8'));
  } catch (err) {
    throw new SnapshotError(`snapshot header is not JSON: ${err.message}`);
  }
  check(header !== null && typeof header === 'object' && !Array.isArray(header), 'snapshot header is not a JSON object');
  const { version, rows, zones, profiles, benefit_counts: benefitCount, text_bytes: textBytes } = header;
  for (const [name, value] of Object.entries({ version, rows, benefit_counts: benefitCount, text_bytes: textBytes })) {
    check(Number.isSafeInteger(value) && value >= 0, `snapshot header: ${name} is not a count`);
  }
  check(Array.isArray(zones) && zones.length <= MAX_ZONES, `snapshot header: zones must be a list of at most ${MAX_ZONES}`);
  check(Array.isArray(profiles), 'snapshot header: profiles is not a list');
  const zoneNames = zones.map((z) => {
    check(Array.isArray(z) && typeof z[0] === 'string' && Number.isSafeInteger(z[1]), 'snapshot header: a zone is not [name, capacity]');
    return z[0];
  });
  for (const p of profiles) {
    check(Array.isArray(p) && p.length === 6 && Array.isArray(p[2]) && Array.isArray(p[3]) && Array.isArray(p[5]),
      'snapshot header: a profile is not [category, ticket_type, zones, windows, max_entries, benefits]');
    for (const zone of p[2]) check(zoneNames.includes(zone), `snapshot header: profile zone ${JSON.stringify(zone)} is not in zones`);
  }

  const colStart = 12 + headLen;
  const benStart = colStart + rows * ROW_BYTES;
  const textStart = benStart + 2 * benefitCount;
  check(textStart + textBytes === body,
    `snapshot sizes do not add up: ${body} bytes before the CRC, the header says ${textStart + textBytes}`);

  // Column after column: each column's offset is R times the widths before it.
  let at = colStart;
  const column = (width) => { const start = at; at += rows * width; return start; };
  const tid = column(8), profile = column(4), used = column(4), serial = column(2), state = column(1);
  const inside = column(8), phone = column(2), textOff = column(4), textLen = column(2), benOff = column(4);

  const tickets = new Array(rows);
  for (let i = 0; i < rows; i++) {
    const p = profiles[data.readUInt32LE(profile + 4 * i)];
    check(p !== undefined, `ticket row ${i}: profile index out of range`);
    const [category, ticketType, ticketZones, windows, maxEntries, benefitNames] = p;
    const stateByte = data[state + i];
    check(stateByte in STATES[format], `ticket row ${i}: state byte ${stateByte} is neither active nor revoked`);
    const insideNames = zonesIn(data.readUInt32LE(inside + 8 * i), data.readUInt32LE(inside + 8 * i + 4), zoneNames, i);
    const phoneValue = data.readUInt16LE(phone + 2 * i);
    check(phoneValue === NO_PHONE || phoneValue <= 9999, `ticket row ${i}: phone suffix ${phoneValue} is not 4 digits`);
    const tOff = data.readUInt32LE(textOff + 4 * i), tLen = data.readUInt16LE(textLen + 2 * i);
    check(tOff + tLen <= textBytes && tLen <= MAX_TEXT_BYTES, `ticket row ${i}: text out of range`);
    const text = tLen === 0 ? '' : data.subarray(textStart + tOff, textStart + tOff + tLen).toString('utf8');
    const cut = text.indexOf('\x1f');
    const bOff = data.readUInt32LE(benOff + 4 * i);
    check(bOff + benefitNames.length <= benefitCount, `ticket row ${i}: benefits out of range`);
    tickets[i] = {
      ticket_id: u64String(data, tid + 8 * i),
      category,
      ticket_type: ticketType,
      zones: ticketZones,
      windows,
      max_entries: maxEntries,
      entries_used: data.readUInt32LE(used + 4 * i),
      badge_serial: data.readUInt16LE(serial + 2 * i),
      state: STATES[format][stateByte],
      inside: insideNames,
      benefits: benefitNames.map((name, k) => [name, data.readUInt16LE(benStart + 2 * (bOff + k))]),
      name: cut < 0 ? text : text.slice(0, cut),
      company: cut < 0 ? '' : text.slice(cut + 1),
      phone_last4: phoneValue === NO_PHONE ? '' : String(phoneValue).padStart(4, '0'),
    };
  }
  return { format, version, zones, tickets };
}

/**
 * Appends SnapshotChunks as they arrive; `add` returns the decoded snapshot once the last one is in,
 * null before. A chunk out of place (another version or size, an offset that is not the bytes so far)
 * refuses the whole snapshot.
 */
class SnapshotAssembler {
  constructor() {
    this.parts = [];
    this.received = 0;
    this.version = null;
    this.total = null;
    this.chunks = 0;
  }

  add(chunk) {
    const version = Number(chunk.version), total = Number(chunk.total_size), offset = Number(chunk.offset);
    if (this.version === null) {
      this.version = version;
      this.total = total;
    }
    check(version === this.version && total === this.total, 'snapshot chunk of another version or size');
    check(offset === this.received, `snapshot chunk at offset ${offset}, expected ${this.received}`);
    this.parts.push(chunk.data);
    this.received += chunk.data.length;
    this.chunks += 1;
    check(this.received <= this.total, 'snapshot chunks exceed total_size');
    if (this.received < this.total) return null;
    const snapshot = decodeSnapshot(Buffer.concat(this.parts));
    check(snapshot.version === this.version, `snapshot header says version ${snapshot.version}, its chunks ${this.version}`);
    return snapshot;
  }
}

module.exports = { SnapshotAssembler, SnapshotError, crc32, decodeSnapshot };
