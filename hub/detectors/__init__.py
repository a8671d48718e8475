"""Anomaly detectors on the hub's live calls: run-rate spikes, peer outliers, cache thrash,
retry loops, model swaps, context growth and subagent fan-out (one module each), and the
runner that feeds them each stored call once (`runner.attach`). Each finding goes to a
`hub.findings.FindingSink`; `journal.FindingJournal` keeps them in the hub's store."""
