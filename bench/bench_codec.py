"""DL/T 645 codec throughput: frames encoded plus decoded per second.

One *exchange* is what a master and a meter do for one read, all in this process and without I/O:

1. master: ``ReadRequest`` -> request bytes (``services.request_bytes``: FE preamble, +33H, CS);
2. meter: bytes -> ``Frame`` -> ``ReadRequest`` (``decode_frame`` + ``parse_request``);
3. meter: value -> data (``registry.encode_data``) -> reply bytes (``services.reply_bytes``);
4. master: reply bytes through the sans-I/O ``MasterConnection`` (deframer, (address, function,
   DI) matching, ``parse_reply`` with the value decoded by the DI registry).

That is 4 frame codec operations (2 encodes, 2 decodes) per exchange; the figure reported is
frames encoded + decoded per second = 4 x exchanges per second. The items rotate over a
single value (00010000), a block (0201FF00) and a max-demand value with its time (01010000).

Baseline in the same run: the link layer alone (``encode_frame`` + ``decode_frame`` of the same
frames, no services, no DI registry); the ratio shows what the service and value layers cost.
The two are timed in alternating slices (0.25 s each) rather than one after the other, so a
change in the machine's load during the run shifts both and not just the ratio; the spread of
the per-slice-pair ratios is reported as well.

    python -m bench.bench_codec            # about 6 s
    python -m bench.bench_codec --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from protocols.dlt645.connection import NEED_DATA, MasterConnection
from protocols.dlt645.events import ReadRequest, ReadResponse
from protocols.dlt645.frame import decode_frame, encode_frame
from protocols.dlt645.registry import encode_data
from protocols.dlt645.services import parse_request, reply_bytes, request_bytes

ADDRESS = "000000000001"
ITEMS: list[tuple[int, object]] = [
    (0x00010000, 12345.67),
    (0x0201FF00, [220.1, 221.3, 219.8]),
    (0x01010000, [1.2345, datetime(2026, 11, 1, 13, 45)]),
]


def exchange(conn: MasterConnection, di: int, value: object) -> object:
    raw_req = conn.send(ReadRequest(ADDRESS, di))
    req = parse_request(decode_frame(raw_req))
    assert isinstance(req, ReadRequest)
    raw_reply = reply_bytes(ReadResponse(req.address, req.di, encode_data(req.di, value)))
    conn.receive_data(raw_reply)
    ev = conn.next_event()
    assert isinstance(ev, ReadResponse) and ev.decoded is not None and ev.decoded.error is None
    assert conn.next_event() is NEED_DATA
    return ev.decoded.value


def link_only(frames: list[tuple[bytes, bytes]]) -> Callable[[int], None]:
    from protocols.dlt645.frame import Frame

    parsed = [(decode_frame(a), decode_frame(b)) for a, b in frames]

    def run(i: int) -> None:
        fa, fb = parsed[i % len(parsed)]
        decode_frame(encode_frame(Frame(fa.address, fa.control, fa.data), preamble=4))
        decode_frame(encode_frame(Frame(fb.address, fb.control, fb.data), preamble=0))

    return run


def measure(fn: Callable[[int], object], seconds: float, n: int = 0) -> tuple[int, float]:
    """Calls of ``fn`` (counter continuing from ``n``) made in about ``seconds``, and the time taken."""
    start = time.perf_counter()
    deadline = start + seconds
    first = n
    while True:
        for _ in range(200):
            fn(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n - first, now - start


def interleaved(a: Callable[[int], object], b: Callable[[int], object], seconds: float,
                slice_s: float = 0.25) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``a`` and ``b`` measured in alternating slices, ``seconds`` in total for each."""
    slices = max(1, round(seconds / slice_s))
    ra: list[tuple[int, float]] = []
    rb: list[tuple[int, float]] = []
    na = nb = 0
    for _ in range(slices):
        ra.append(measure(a, seconds / slices, na))
        rb.append(measure(b, seconds / slices, nb))
        na += ra[-1][0]
        nb += rb[-1][0]
    return ra, rb


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement (each of the two)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)

    conn = MasterConnection()
    sample = [(request_bytes(ReadRequest(ADDRESS, di)), reply_bytes(ReadResponse(ADDRESS, di, encode_data(di, v))))
              for di, v in ITEMS]

    def full(i: int) -> object:
        di, value = ITEMS[i % len(ITEMS)]
        return exchange(conn, di, value)

    full(0)  # warm caches (DI lookup) before timing
    full_slices, link_slices = interleaved(full, link_only(sample), args.seconds)
    exchanges = sum(n for n, _ in full_slices) / sum(t for _, t in full_slices)
    link_exchanges = sum(n for n, _ in link_slices) / sum(t for _, t in link_slices)
    pair_ratios = sorted((nf / tf) / (nl / tl) for (nf, tf), (nl, tl) in zip(full_slices, link_slices, strict=True))
    result: dict[str, object] = {
        "benchmark": "dlt645 codec",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}",
        "exchanges_per_s": round(exchanges),
        "frames_per_s": round(4 * exchanges),  # 2 encodes + 2 decodes per exchange
        "baseline_link_only_frames_per_s": round(4 * link_exchanges),
        "ratio_to_link_only": round(exchanges / link_exchanges, 3),
        "slices": len(full_slices),
        "slice_ratio_min": round(pair_ratios[0], 3),
        "slice_ratio_median": round(statistics.median(pair_ratios), 3),
        "slice_ratio_max": round(pair_ratios[-1], 3),
        "us_per_exchange": round(1e6 / exchanges, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"DL/T 645 codec: {result['frames_per_s']:,} frames encoded+decoded per second "
              f"({result['exchanges_per_s']:,} read exchanges/s, {result['us_per_exchange']} us each)")
        print(f"baseline, link layer only: {result['baseline_link_only_frames_per_s']:,} frames/s; "
              f"full codec / link only = {result['ratio_to_link_only']} "
              f"({result['slices']} slice pairs: {result['slice_ratio_min']}-{result['slice_ratio_max']}, "
              f"median {result['slice_ratio_median']})")
    return result


if __name__ == "__main__":
    main()
