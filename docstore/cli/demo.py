"""``immudoc demo``: a short story on a temporary ledger, printed step by step."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable


def run_demo(entries: int, say: Callable[[str], None]) -> None:
    import kvcore

    with tempfile.TemporaryDirectory(prefix="immudoc-demo-") as tmp:
        path = os.path.join(tmp, "ledger")
        say(f"1. Opening a new ledger in {path}")
        with kvcore.Ledger.open(path) as led:
            t = time.perf_counter()
            batch = 1000
            for start in range(0, entries, batch):
                led.set_all(
                    {
                        f"sensor/{i:06d}".encode(): f"reading {i * 7 % 1000}".encode()
                        for i in range(start, min(entries, start + batch))
                    }
                )
            dt = time.perf_counter() - t
            say(f"2. Wrote {entries} entries in {led.tx_id} transactions ({entries / dt:,.0f}/s, fsynced)")
            saved = led.state()
            say(f"3. Saved the trusted state: {json.dumps(saved.to_dict())}")
            led.set(b"sensor/000042", b"reading corrected")
            entry = led.get(b"sensor/000042")
            proof = led.prove_entry(b"sensor/000042", entry.tx_id)
            now = led.state()
            kvcore.verify_consistency(saved, now, led.prove_consistency(saved.tx_id))
            kvcore.verify_entry(proof, entry.key, entry.value, now)
            say(
                f"4. Corrected sensor/000042 (revision {entry.revision}); its proof verifies "
                f"against state {now.tx_id}, which extends the saved state"
            )
            old = led.get(b"sensor/000042", at_tx=saved.tx_id)
            say(f"5. As of transaction {saved.tx_id} it read {old.value.decode()!r}; history stays")
            try:
                kvcore.verify_entry(proof, entry.key, b"reading forged", now)
            except kvcore.VerificationError as e:
                say(f"6. A forged value is rejected: {e}")
            report = led.audit()
            say(f"7. Full audit: {report}")
            say(f"Final state: {json.dumps(now.to_dict())}")
