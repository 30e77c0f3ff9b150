"""``sitewatch-collector`` with detectors that cost nothing: ``bench/ingest.py --free-detectors``.

Every registered detector's ``update_one`` (score a reading, then learn it) is replaced by one
that returns 0 at once. Everything around the detectors still runs as deployed: the hand-over
of the readings to the detection process, the rules and streams, the policies, the anomaly
points, the ticks. A collector with detection on cannot use less CPU per reading than this,
however fast its detectors are made, so the ratio this run reaches is the ceiling of the
detection-on ratio for the engine as it is.

The detection process is spawned, and a spawned process imports its parent's main module
again (as ``__mp_main__``): the patch below is made in both processes, the CLI run in the
parent only.

    python bench/_free_detectors.py run --config collector.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitewatch.collector.detectors import REGISTRY


def _free_update(self: object, ts_s: float, value: float) -> float:
    return 0.0


for _kind in REGISTRY.values():
    _kind.build.update_one = _free_update  # type: ignore[attr-defined]

if __name__ == "__main__":
    from sitewatch.collector.cli import main

    sys.exit(main())
