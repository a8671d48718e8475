"""`make bench`: every benchmark, each printing its own figures."""

from __future__ import annotations

from bench import scan


def main() -> None:
    print("== cold scan: node-agent scan vs ccusage ==")
    scan.main()


if __name__ == "__main__":
    main()
