"""`make bench`: every benchmark, printed for a person to compare."""

from bench import inbound

if __name__ == "__main__":
    inbound.main()
