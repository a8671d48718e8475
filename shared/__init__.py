"""The contract between node-agent and fleet-hub: event types, wire codec, config schema."""
