"""Peak RSS of `upload` of a 200 MB (sparse) video through the CLI subprocess against the simulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from libtv_fsm.sim import Simulator

SIZE = 200 * 1024 * 1024  # the upload limit itself
TARGET_MIB = 64


def run(args: List[str], env: Dict[str, str], cwd: str) -> Tuple[int, str, float, float]:
    """(exit code, stdout, peak RSS in MiB of this one child, seconds)."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "-m", "libtv_fsm", *args], env=env, cwd=cwd,
                                stdout=out, stderr=subprocess.DEVNULL)
        # wait4, not Popen.wait: it gives this child's own rusage, not the maximum over all children.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return proc.returncode, text, rss, time.monotonic() - start


def measure() -> List[Dict[str, object]]:
    """Table rows: the 200 MB upload's peak RSS (and a 1 KB upload's, for scale)."""
    from common import Row

    with tempfile.TemporaryDirectory() as tmp, Simulator() as sim:
        home = Path(tmp) / "nexu"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBTV_", "NEXU_", "FEISHU_"))}
        env.update(sim.env(), NEXU_HOME=str(home))
        subprocess.run([sys.executable, "-m", "libtv_fsm", "setup", "--api-key", Simulator.GATEWAY_KEY],
                       env=env, cwd=tmp, check=True, capture_output=True)
        small = Path(tmp) / "small.mp4"
        small.write_bytes(b"\0" * 1024)
        big = Path(tmp) / "big.mp4"
        with big.open("wb") as handle:
            handle.truncate(SIZE)  # sparse: no 200 MB on disk, but 200 MB read and sent
        code, out, base_rss, _ = run(["upload", "--file", str(small)], env, tmp)
        assert code == 0, out
        code, out, rss, seconds = run(["upload", "--file", str(big)], env, tmp)
        assert code == 0, out
        json.loads(out.strip().splitlines()[-1])["url"]
        sent = sim.uploads[-1]["size"]
        assert sent == SIZE, (sent, SIZE)
    return [Row(f"upload of a {SIZE // 1048576} MB file: peak RSS", f"{rss:.1f} MiB", f"< {TARGET_MIB} MiB", rss < TARGET_MIB,
                f"ru_maxrss of the CLI child; a 1 KB upload: {base_rss:.1f} MiB; {seconds:.1f} s")]


def main() -> int:
    for row in measure():
        print(f"{row['verdict']:<5} {row['what']}: {row['figure']} (target {row['target']}; {row['note']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
