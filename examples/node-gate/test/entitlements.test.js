'use strict';
// Deltas applied whole on top of the version they name, or refused whole (docs/contract.md, "All or nothing").
const test = require('node:test');
const assert = require('node:assert/strict');
const { DeltaRefused, EntitlementCache } = require('../entitlements');

const REG_NO = '5205320758';
const BIG = '9223372036854775783'; // a random 63-bit id: past 2^53, kept as a string

function cache() {
  const c = new EntitlementCache();
  const ticket = (id, benefits = []) => ({ ticket_id: id, category: 'guest', ticket_type: '', zones: ['hall-a'], windows: [],
    max_entries: 0, entries_used: 0, badge_serial: 0, state: 'TICKET_STATE_ACTIVE', inside: [], benefits, name: '',
    company: '', phone_last4: '' });
  c.loadSnapshot({ version: 7, zones: [['hall-a', 0]], tickets: [ticket(REG_NO, [['lunch_day1', 1]]), ticket(BIG)] });
  return c;
}

const delta = (base, version, ...ops) => ({ base_version: String(base), version: String(version), ops });

test('a delta on the version held applies; values are absolute, so the same view twice converges', () => {
  const c = cache();
  c.applyDelta(delta(7, 8,
    { op: 'set_state', set_state: { ticket_id: BIG, state: 'TICKET_STATE_REVOKED' } },
    { op: 'set_usage', set_usage: { ticket_id: REG_NO, entries_used: 1, inside: ['hall-a'] } },
    { op: 'set_benefit', set_benefit: { ticket_id: REG_NO, name: 'lunch_day1', remaining: 0 } }));
  c.applyDelta(delta(8, 9, { op: 'set_usage', set_usage: { ticket_id: REG_NO, entries_used: 1, inside: ['hall-a'] } }));
  assert.equal(c.version, 9);
  assert.equal(c.tickets.get(BIG).state, 'TICKET_STATE_REVOKED');
  assert.deepEqual([c.tickets.get(REG_NO).entries_used, c.tickets.get(REG_NO).inside], [1, ['hall-a']]);
  assert.deepEqual(c.tickets.get(REG_NO).benefits, [['lunch_day1', 0]]);
});

test('one bad op refuses the whole delta and the cache keeps what it had', () => {
  const ok = { op: 'set_state', set_state: { ticket_id: REG_NO, state: 'TICKET_STATE_REVOKED' } };
  const bad = [
    [delta(6, 8, ok), /builds on version 6/],
    [delta(7, 8, ok, { op: 'set_usage', set_usage: { ticket_id: String(BigInt(REG_NO) + 1n), entries_used: 1, inside: [] } }),
      /5205320759 is not in the cache/],
    [delta(7, 8, ok, { op: 'set_benefit', set_benefit: { ticket_id: BIG, name: 'dinner', remaining: 1 } }), /no benefit dinner/],
    [delta(7, 8, ok, { op: 'set_state', set_state: { ticket_id: BIG, state: 'TICKET_STATE_UNSPECIFIED' } }), /state/],
    [delta(7, 8, ok, { op: undefined }), /does not know/],
    [delta(7, 8, ok, ...Array.from({ length: 64 }, (_, i) => ({ op: 'set_zone', set_zone: { name: `z${i}`, capacity: 0 } }))),
      /more than 64 zones/],
  ];
  for (const [d, says] of bad) {
    const c = cache();
    assert.throws(() => c.applyDelta(d), (err) => err instanceof DeltaRefused && says.test(err.message));
    assert.equal(c.version, 7);
    assert.equal(c.tickets.get(REG_NO).state, 'TICKET_STATE_ACTIVE');
    assert.equal(c.zones.size, 1);
  }
});

test('an upsert earlier in the delta makes its ticket known to the ops after it', () => {
  const c = cache();
  const t = { ticket_id: '3000017', category: 'media', ticket_type: '', zones: ['press'], windows: [{ valid_from: '1780000000',
    valid_until: '1780086400' }], max_entries: 0, entries_used: 0, badge_serial: 0, state: 'TICKET_STATE_ACTIVE', inside: [],
  benefits: [], name: 'Zoë', company: '', phone_last4: '' };
  c.applyDelta(delta(7, 8, { op: 'upsert', upsert: t }, { op: 'reissue', reissue: { ticket_id: '3000017', badge_serial: 2 } }));
  assert.deepEqual(c.tickets.get('3000017').windows, [[1780000000, 1780086400]]);
  assert.equal(c.tickets.get('3000017').badge_serial, 2);
  assert.ok(c.zones.has('press'));
});
