"""One module per agent; each exposes a `Source` subclass."""
