"""Write the seed corpora (valid inputs) under fuzz/corpus/: `python -m fuzz.seed`.

Run once when a target's input format changes; the corpora are kept in the repo.
"""

import hashlib
from pathlib import Path

from gated.rpc import convert
from gated.rpc.v1 import registry_pb2 as pb
from gated.validation import Delta, SetState, SetUsage, TicketState
from gated.validation.token import mint_dynamic, mint_static, mint_wallet
from fuzz.targets import KEYS, NOW, _BASE, _BASE_SNAPSHOT

ROOT = Path(__file__).parent / "corpus"
REPO = Path(__file__).parent.parent


def _lp(*messages) -> bytes:
    return b"".join(len(m).to_bytes(2, "little") + m for m in messages)


def seeds() -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    ids = [1, 42, 5205320758, 3_000_017, 2**63 - 25, 2**64 - 1]
    out["token"] = [mint_static(KEYS[1], 1, t, s).encode() for t, s in zip(ids, (0, 1, 2, 0, 65535, 7))]
    out["token"] += [mint_dynamic(KEYS[7], 7, t, NOW).encode() for t in ids[:3]]
    out["token"] += [mint_wallet(KEYS[7], 7, t, NOW).encode() for t in ids[:3]]
    out["token"] += [b"", b"12345678", bytes(range(11))]
    out["framer"] = [b"\x00\x20" + b"GT1ABCDEF\r", b"\x01\x10" + b"abc\r\ndef\n\n", b"\x02\x40" + b"one\r\ntwo\r\n",
                     b"\x01\x02b\r\r\r\n", b"\x00\x05" + b"x" * 20 + b"\ryy\r"]
    # HID: (keycode, value) pairs; KEY_G=34, KEY_T=20, KEY_1=2, KEY_LEFTSHIFT=42, KEY_ENTER=28
    press = lambda code: bytes([code & 0xFF, (code >> 8) | (1 << 1)]) + bytes([code & 0xFF, (code >> 8)])  # noqa: E731
    out["hid_keys"] = [b"\x00\x20" + press(34) + press(20) + press(2) + press(28),
                       b"\x01\x10" + bytes([42, 2]) + press(34) + bytes([42, 0]) + press(28),
                       b"\x02\x03" + press(16) * 5 + press(28)]
    out["config"] = [(REPO / path).read_bytes() for path in ("config/example.toml", "hw_sim/sim.toml")]
    out["config"] += [b'[gate]\nid = "g"\nkey_file = "keys.json"\n[[lane]]\nid = "in-1"\nzone = "hall"\ndirection = "in"\n'
                      b'mode = "turnstile"\n[[lane.scanner]]\nkind = "serial"\nport = "/dev/ttyACM0"\n']
    out["snapshot"] = [_BASE_SNAPSHOT[:-4]]
    from gated.validation import encode_snapshot, TicketRecord
    out["snapshot"].append(encode_snapshot(1, [TicketRecord(7, "guest")])[:-4])
    snap = list(convert.snapshot_updates(9, _BASE_SNAPSHOT, chunk_bytes=200))
    delta = convert.delta_to_proto(Delta(5, 6, (SetUsage(10, 1, ("hall",)), SetState(3_000_017, TicketState.REVOKED))))
    out["registry_update"] = [
        b"\x00" + _lp(pb.WatchEntitlementsResponse(delta=delta).SerializeToString()),
        b"\x00" + _lp(*(u.SerializeToString() for u in snap)),
        b"\x00" + _lp(pb.WatchEntitlementsResponse(delta=convert.delta_to_proto(Delta(5, 6, tuple(convert.op_from_proto(convert.op_to_proto(op), "x") for op in ())))).SerializeToString()),
        b"\x01" + convert.key_change_to_proto(convert.KeyChange(True, ((1, KEYS[1]),), ())).SerializeToString(),
    ]
    return out


def main() -> None:
    for target, inputs in seeds().items():
        d = ROOT / target
        d.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{target}: {len(inputs)} seeds in {d}")


if __name__ == "__main__":
    main()
