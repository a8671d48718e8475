"""The API's answers as typed models: the OpenAPI document describes them, the fuzzer checks
answers against them, and a client (the dashboard, next) can generate its types from them.
Money is an exact decimal string, null when unknown; times are epoch seconds."""

from typing import Literal

from pydantic import BaseModel, Field

Money = str | None


class TokenCounts(BaseModel):
    input: int
    output: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    reasoning: int


class Cost(BaseModel):
    api_equivalent: Money
    metered: Money
    subscription_included: Money
    estimated: Money
    unknown: Money = Field(description='"0" when every call is priced, null when some are not')


class Figures(BaseModel):
    """A scope's sums, in the row shape of `fleet-hub report --json`."""

    calls: int
    tokens: TokenCounts
    web_search_requests: int
    cost: Cost
    unknown_calls: int
    unknown_tokens: int


class Summary(BaseModel):
    metered: Money
    subscription_included: Money
    estimated: Money
    api_equivalent: Money
    unknown_calls: int
    unknown_tokens: int
    burn_paid_5m: Money = Field(description="metered + estimated $/h over the last 5 minutes")
    burn_paid_1h: Money
    burn_api_5m: Money
    burn_api_1h: Money
    projected_day: Money = Field(description="paid, at midnight; null: too little data yet")
    projected_month: Money
    nodes_online: int
    nodes: int


class Reader(BaseModel):
    files: int
    events: int
    problems: int
    pending: int
    blocked: bool
    last_problem: str | None
    stalled: str | None
    status_file: str | None


class Node(BaseModel):
    machine: str
    state: Literal["online", "stale", "offline"]
    last_seen: float | None
    version: str | None
    backlog: int | None = Field(description="events in the node's outbox; null: not reported")
    reader: Reader | None


class Machine(Node):
    agents_running: int
    agents_paused: int
    spend: Figures


class Window(BaseModel):
    used_percent: float | None
    resets_at: float | None


class Credit(BaseModel):
    """A Claude subscription's Agent SDK credit this month (since 2026-06-15 `claude -p` and the
    Agent SDK draw a monthly dollar credit, then overage at API rates if extra usage is on)."""

    month: str = Field(description="YYYY-MM in the profile's zone ([[subscriptions]] tz)")
    credit_usd: Money | None = Field(
        description="the month's credit (null: not known, see credit_known and note)"
    )
    credit_known: bool = Field(
        description="false: the plan's credit is not known, so SDK calls count as estimated"
    )
    credit_from: str = Field(description="where the amount comes from: the plan or the config")
    used_usd: Money = Field(description="credit drawn by SDK calls (API-equivalent)")
    remaining_usd: Money | None
    overage_usd: Money = Field(description="SDK spend past the credit: billed at API rates")
    extra_usage: bool
    refused_usd: Money = Field(description="SDK spend past the credit with extra usage off")
    untold_usd: Money = Field(
        description="calls whose log does not say interactive or SDK: not counted (estimated)"
    )
    sdk_calls: int
    overage_calls: int
    untold_calls: int
    unpriced_sdk_calls: int
    estimated: bool = Field(description="the figures rest on calls that could not be placed")
    note: str = Field(description="why the figures are estimated, in words")


class Profile(BaseModel):
    key: str
    machine: str
    profile: str
    agent: str
    billing: str
    account: str | None
    plan: str | None
    state: str
    since: float | None
    until: float | None
    switched_to: str | None
    reason: str | None
    last_call: float | None
    windows: dict[str, Window]
    spend: Figures
    credit: Credit | None = Field(
        default=None, description="the Agent SDK credit (Claude subscriptions only)"
    )


class Process(BaseModel):
    pid: int
    create_time: float
    agent: str
    state: str
    profile: str | None
    session_id: str | None
    cwd: str | None
    cpu_percent: float
    rss: int
    children: int


class Session(BaseModel):
    key: str
    label: str
    machine: str
    agent: str
    profile: str | None
    account: str | None
    project: str | None
    git_branch: str | None
    model: str
    first_call: float
    last_call: float
    tokens_per_minute: float
    main: Figures
    subagents: Figures
    process: Process | None


class SpendRow(Figures):
    key: str | None = Field(description="the group's key; null: calls that do not say")


class AuditRow(BaseModel):
    id: int
    when: float
    who: str
    action: str
    target: str
    result: str


class AuditPage(BaseModel):
    rows: list[AuditRow]
    limit: int
    offset: int


class FeedLine(BaseModel):
    when: float
    kind: str
    machine: str
    text: str


class ProfileChange(BaseModel):
    when: float
    state: str
    until: float | None
    switched_to: str | None
    reason: str | None


class Series(BaseModel):
    first_call: float
    last_call: float
    bins: list[Money]
    rolled_up_before: float | None = Field(
        default=None,
        description="calls before this time (epoch s) are summed by quarter-hour from the "
        "roll-ups: their events were pruned (null: every call from its event)",
    )
