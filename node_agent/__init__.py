"""node-agent: turns the coding agents' logs on one machine into usage events."""
