"""fleet-hub: receives events from nodes, prices and rolls them up, shows the fleet."""
