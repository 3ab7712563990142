"""Build an index in a process of its own and print the report with peak memory (JSON).

Run by the hostile-file test as ``python run_ingest.py DATA_DIR FOLDER``: the peak
resident set of this process and of its parse workers (reaped when the pool closes, so
RUSAGE_CHILDREN covers them) belongs to this build alone, not to the test session.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from ingest import Source, build_index
from lorebot.settings import Settings


def main() -> None:
    data_dir, folder = Path(sys.argv[1]), Path(sys.argv[2])
    settings = Settings(data_dir=data_dir, index={"parse_workers": 1})
    report = build_index(settings, [Source(folder, "hostile")], progress=False, workers=1)
    print(
        json.dumps(
            {
                "version": report.version,
                "files": {
                    f.path: {"status": f.status, "reason": f.reason, "chunks": f.chunks}
                    for f in report.files
                },
                "self_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "children_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
