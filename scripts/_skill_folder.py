"""Put the skill folder's package and vendor/ on sys.path, and refuse a Python the code cannot run on."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENDOR = os.path.join(ROOT, "vendor")
PROJECT_FLOOR = (3, 9)
# A built folder may leave charset_normalizer out (its wheel here is compiled); requests then
# says so once at import. The note means nothing to a user, in this process or the waiter's.
QUIET = "ignore:Unable to find acceptable character detection"


def required_python():
    """The oldest Python this folder runs on: vendor/VENDORED.txt's `requires-python >=3.N`, else the project's."""
    try:
        with open(os.path.join(VENDOR, "VENDORED.txt"), encoding="utf-8") as manifest:
            for line in manifest:
                if line.startswith("requires-python >="):
                    found = tuple(int(part) for part in line.split(">=", 1)[1].strip().split(".")[:2])
                    return max(found, PROJECT_FLOOR)
    except (OSError, ValueError):
        pass
    return PROJECT_FLOOR


def prepare():
    """Check the interpreter, then make `import libtv_fsm` and its dependencies find this folder's copies."""
    needed = required_python()
    if sys.version_info[:2] < needed:
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(encoding="utf-8", errors="replace")
        print("❌ This skill needs Python >= {0}.{1}; this python3 is {2}. Run it with a newer python3 "
              "(or `uv run`).".format(needed[0], needed[1], sys.version.split()[0]), flush=True)
        raise SystemExit(1)
    for extra in (VENDOR, ROOT):
        if os.path.isdir(extra) and extra not in sys.path:
            sys.path.insert(0, extra)
    if os.path.isdir(VENDOR):
        import warnings

        warnings.filterwarnings("ignore", message="Unable to find acceptable character detection")
        if QUIET not in os.environ.get("PYTHONWARNINGS", ""):
            os.environ["PYTHONWARNINGS"] = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), QUIET) if w)
