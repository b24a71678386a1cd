'use strict';
// The snapshot reader against the contract's known-answer vectors (docs/snapshot-vectors.json):
// every vector reads back to its tickets, and a snapshot that breaks a rule is refused whole.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { SnapshotAssembler, SnapshotError, crc32, decodeSnapshot } = require('../snapshot');

const VECTORS = JSON.parse(fs.readFileSync(path.join(__dirname, '../../../docs/snapshot-vectors.json'), 'utf8'));
const DAY = VECTORS.vectors.find((v) => v.tickets.length > 1);

function bytesOf(vector) {
  return Buffer.from(vector.snapshot_hex, 'hex');
}

/** A copy of `data` with `edit` applied and the CRC made right again, so only the edit is wrong. */
function edited(data, edit) {
  const copy = Buffer.from(data);
  edit(copy);
  copy.writeUInt32LE(crc32(copy.subarray(0, copy.length - 4)), copy.length - 4);
  return copy;
}

for (const vector of VECTORS.vectors) {
  test(`format ${VECTORS.format} vector "${vector.name}" reads back to its tickets`, () => {
    const snapshot = decodeSnapshot(bytesOf(vector));
    assert.equal(snapshot.format, 2);
    assert.equal(snapshot.version, vector.version);
    assert.deepEqual(snapshot.tickets, vector.tickets);
    for (const [name, capacity] of vector.zones) {
      assert.deepEqual(snapshot.zones.find(([n]) => n === name), [name, capacity]);
    }
  });
}

test('a cache saved in format 1 still reads (state 0 active, 1 revoked)', () => {
  const snapshot = decodeSnapshot(bytesOf(VECTORS.format_1));
  assert.equal(snapshot.format, 1);
  assert.deepEqual(snapshot.tickets, VECTORS.format_1.tickets);
});

test('the CRC is zlib\'s', () => {
  const data = bytesOf(DAY);
  assert.equal(crc32(data.subarray(0, data.length - 4)), data.readUInt32LE(data.length - 4));
  if (zlib.crc32) assert.equal(crc32(data), zlib.crc32(data));
});

test('chunks cut anywhere assemble to the same tickets; a chunk out of place refuses the snapshot', () => {
  const data = bytesOf(DAY);
  for (const size of [1, 7, 39, data.length]) {
    const assembler = new SnapshotAssembler();
    let snapshot = null;
    for (let offset = 0; offset < data.length; offset += size) {
      assert.equal(snapshot, null);
      snapshot = assembler.add({ version: String(DAY.version), total_size: String(data.length), offset: String(offset),
        data: data.subarray(offset, offset + size) });
    }
    assert.deepEqual(snapshot.tickets, DAY.tickets);
  }
  const assembler = new SnapshotAssembler();
  assembler.add({ version: '42', total_size: String(data.length), offset: '0', data: data.subarray(0, 10) });
  assert.throws(() => assembler.add({ version: '42', total_size: String(data.length), offset: '11', data: data.subarray(11, 20) }),
    /offset 11, expected 10/);
});

test('a snapshot that breaks a rule is refused with a reason', () => {
  const data = bytesOf(DAY);
  const headLen = data.readUInt32LE(8);
  const rows = DAY.tickets.length;
  const stateColumn = 12 + headLen + rows * (8 + 4 + 4 + 2);
  const phoneColumn = stateColumn + rows * (1 + 8);
  const cases = [
    ['a flipped bit', Buffer.from(data).fill(data[20] ^ 1, 20, 21), /CRC-32/],
    ['a bad magic', edited(data, (b) => b.write('XTSNAP', 0, 'latin1')), /magic/],
    ['an unknown format', edited(data, (b) => { b[7] = 3; }), /format 3/],
    ['a state byte 3', edited(data, (b) => { b[stateColumn] = 3; }), /state byte 3/],
    ['a phone suffix 12345', edited(data, (b) => b.writeUInt16LE(12345, phoneColumn)), /phone suffix 12345/],
    ['a byte too many', edited(Buffer.concat([data.subarray(0, data.length - 4), Buffer.alloc(5)]), () => {}), /do not add up/],
    ['a truncated file', data.subarray(0, 30), /CRC-32|too short/],
  ];
  for (const [what, bad, says] of cases) {
    assert.throws(() => decodeSnapshot(bad), (err) => err instanceof SnapshotError && says.test(err.message), what);
  }
});
