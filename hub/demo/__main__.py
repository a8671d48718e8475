"""`python -m hub.demo --seconds N`: the demo fleet headless (see `hub.demo._headless`)."""

from hub.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
