"""`make bench`: every benchmark, printed for a person to compare. `python -m bench NAME` runs one."""

import sys

from bench import checkins, forward, geo, inbound, parser

BENCHES = {
    "parser": parser.main,
    "geo": geo.main,
    "inbound": inbound.main,
    "forward": forward.main,
    "checkins": checkins.main,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(BENCHES):
        if name not in BENCHES:
            sys.exit(f"unknown benchmark {name!r}; known: {', '.join(BENCHES)}")
        BENCHES[name]()
        print()
