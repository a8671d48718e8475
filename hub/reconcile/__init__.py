"""Reconciliation: the fleet's figures held against the providers' own usage and cost reports.

`settings` reads `[reconcile]` of hub.toml; `anthropic` and `openai` fetch a provider's reports
(through `transport`, behind an interface) into `model`'s shapes; `fleet` reads the hub's
figures per UTC day, model and key; `match` joins the two and `causes` names why a row drifts;
`run` ties them together and hands each drift past the threshold to a `FindingSink` (the alert
outbox) as a finding whose id is stable, so a drift found twice is one alert.

Bills the hub holds itself (`local`): exports imported with `fleet-hub reconcile import`
(`imports`, `import_generic`, `import_dashscope`, filed by `billed_store`; DeepSeek, Qwen,
Zhipu) and Cursor's own dollars on the stored calls (`cursor_billed`). What each provider
offers and what is unverified: docs/billing-imports.md.
`analytics` reads Claude Enterprise's analytics cost reports (Claude Code per day, model and
user) and `actors` holds them per user against the fleet's; `days` sums a run per provider
and day for the dashboard's Recon tab and answers `GET /api/v1/reconcile/latest`.
"""
