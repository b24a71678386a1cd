'use strict';
/**
 * A gate's entitlement cache as the contract describes it (docs/contract.md, "Entitlements"): a
 * decoded snapshot, then deltas applied whole on top of the version they name, or refused whole.
 * Tickets are keyed by their id as a decimal string (a u64 does not fit a JS number).
 */

const MAX_ZONES = 64;

class DeltaRefused extends Error {}

/** A registry.proto Ticket (proto-loader: keepCase, longs and enums as strings) in the snapshot's shape. */
function ticketFromProto(t) {
  return {
    ticket_id: String(t.ticket_id),
    category: t.category,
    ticket_type: t.ticket_type,
    zones: [...t.zones],
    windows: t.windows.map((w) => [Number(w.valid_from), Number(w.valid_until)]),
    max_entries: t.max_entries,
    entries_used: t.entries_used,
    badge_serial: t.badge_serial,
    state: t.state,
    inside: [...t.inside],
    benefits: t.benefits.map((b) => [b.name, b.remaining]),
    name: t.name,
    company: t.company,
    phone_last4: t.phone_last4,
  };
}

const STATES = new Set(['TICKET_STATE_ACTIVE', 'TICKET_STATE_REVOKED']);

class EntitlementCache {
  constructor() {
    this.version = 0;
    this.tickets = new Map();
    this.zones = new Map();
  }

  loadSnapshot(snapshot) {
    this.version = snapshot.version;
    this.zones = new Map(snapshot.zones);
    this.tickets = new Map(snapshot.tickets.map((t) => [t.ticket_id, t]));
  }

  /**
   * Apply a Delta whole, or throw DeltaRefused and keep everything as it was. Changed tickets are
   * copied first and put in place only once every op has been checked.
   */
  applyDelta(delta) {
    const base = Number(delta.base_version), version = Number(delta.version);
    if (base !== this.version) throw new DeltaRefused(`delta builds on version ${base}, the cache holds ${this.version}`);
    if (!(version > base)) throw new DeltaRefused(`delta version ${version} is not above its base ${base}`);
    const changed = new Map();
    const zones = new Map(this.zones);
    const held = (id, n) => {
      const key = String(id);
      const ticket = changed.get(key) ?? this.tickets.get(key);
      if (ticket === undefined) throw new DeltaRefused(`op ${n}: ticket ${key} is not in the cache`);
      const copy = structuredClone(ticket);
      changed.set(key, copy);
      return copy;
    };
    delta.ops.forEach((op, n) => {
      switch (op.op) {
        case 'upsert': {
          const t = ticketFromProto(op.upsert);
          if (!STATES.has(t.state)) throw new DeltaRefused(`op ${n}: ticket ${t.ticket_id}: state ${t.state}`);
          changed.set(t.ticket_id, t);
          for (const z of [...t.zones, ...t.inside]) if (!zones.has(z)) zones.set(z, 0);
          break;
        }
        case 'set_state':
          if (!STATES.has(op.set_state.state)) throw new DeltaRefused(`op ${n}: state ${op.set_state.state}`);
          held(op.set_state.ticket_id, n).state = op.set_state.state;
          break;
        case 'reissue':
          if (op.reissue.badge_serial > 0xffff) throw new DeltaRefused(`op ${n}: badge serial over 65535`);
          held(op.reissue.ticket_id, n).badge_serial = op.reissue.badge_serial;
          break;
        case 'set_usage': {
          const t = held(op.set_usage.ticket_id, n);
          t.entries_used = op.set_usage.entries_used;
          t.inside = [...op.set_usage.inside];
          for (const z of t.inside) if (!zones.has(z)) zones.set(z, 0);
          break;
        }
        case 'set_benefit': {
          const t = held(op.set_benefit.ticket_id, n);
          const benefit = t.benefits.find(([name]) => name === op.set_benefit.name);
          if (benefit === undefined) throw new DeltaRefused(`op ${n}: ticket ${t.ticket_id} has no benefit ${op.set_benefit.name}`);
          if (op.set_benefit.remaining > 0xffff) throw new DeltaRefused(`op ${n}: remaining over 65535`);
          benefit[1] = op.set_benefit.remaining;
          break;
        }
        case 'set_zone':
          if (!op.set_zone.name) throw new DeltaRefused(`op ${n}: a zone without a name`);
          zones.set(op.set_zone.name, op.set_zone.capacity);
          break;
        default: // a DeltaOp with nothing set: from a newer registry this gate does not understand
          throw new DeltaRefused(`op ${n}: an operation this gate does not know`);
      }
    });
    if (zones.size > MAX_ZONES) throw new DeltaRefused(`more than ${MAX_ZONES} zones`);
    for (const [id, ticket] of changed) this.tickets.set(id, ticket);
    this.zones = zones;
    this.version = version;
  }
}

module.exports = { DeltaRefused, EntitlementCache, ticketFromProto };
