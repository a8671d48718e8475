"""A Codex rollout's `session_meta`: which thread wrote it, its role, its parent, where and when.

Read the checked way (orjson dicts): a rollout has one or a few of these lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from node_agent.sources._values import count as _int
from node_agent.sources._values import iso_time
from node_agent.sources._values import number as _num
from node_agent.sources._values import text as _text
from shared.events import Role

_AUXILIARY_SOURCES: Final = frozenset({"review", "compact", "memory_consolidation"})
_AUXILIARY_THREAD_SOURCES: Final = frozenset(
    {"memory_consolidation", "guardian_review", "review", "compact"}
)


class Meta(msgspec.Struct, frozen=True, gc=False):
    thread: str
    role: Role = Role.MAIN
    parent: str | None = None  # spawning thread, else the thread it was forked from
    lineage: bool = False  # forked or spawned: the rollout may start with copied history
    subagent_id: str | None = None
    cwd: str | None = None
    git_branch: str | None = None
    git_repo: str | None = None
    version: str | None = None
    provider: str | None = None
    created_ms: float | None = None
    boundary: int | None = None  # first ordinal that is the thread's own


def obj(value: object) -> dict[str, object] | None:
    return value if isinstance(value, dict) else None


def parse_ts(value: object) -> float | None:
    if isinstance(value, str):
        return iso_time(value)  # rollout timestamps are UTC
    number = _num(value)
    if number is None:
        return None
    return number / 1000.0 if number > 1e11 else number  # epoch ms or s


def uuid7_ms(value: str | None) -> float | None:
    """Creation time (epoch ms) of a UUIDv7: Codex thread and turn ids are UUIDv7."""
    if value is None or len(value) != 36 or value[8] != "-" or value[14] != "7":
        return None
    try:
        return float(int(value[:8] + value[9:13], 16))
    except ValueError:
        return None


def _role(source: object, thread_source: str | None) -> Role:
    src = obj(source)
    if src is not None:
        sub = src.get("subagent")
        if sub is not None:
            if isinstance(sub, str):
                return Role.AUXILIARY if sub in _AUXILIARY_SOURCES else Role.SUBAGENT
            sub_obj = obj(sub)
            if sub_obj is not None and "thread_spawn" in sub_obj:
                return Role.SUBAGENT
            if sub_obj is not None and sub_obj.get("other") == "guardian":
                return Role.AUXILIARY  # guardian review of the same user turn
            return Role.SUBAGENT
        if "internal" in src:
            return Role.AUXILIARY  # e.g. {"internal": "memory_consolidation"}
    if thread_source == "subagent":
        return Role.SUBAGENT
    if thread_source in _AUXILIARY_THREAD_SOURCES:
        return Role.AUXILIARY
    return Role.MAIN  # "user", or a plain string source ("cli", "vscode", "exec", ...)


def parse_meta(payload: Mapping[str, object], line: Mapping[str, object]) -> Meta | None:
    # `id` is this thread; on spawned threads `session_id` names the root thread.
    thread = _text(payload.get("id")) or _text(payload.get("session_id"))
    if thread is None:
        return None
    source = payload.get("source")
    spawn: dict[str, object] | None = None
    src = obj(source)
    if src is not None:
        sub = obj(src.get("subagent"))
        if sub is not None:
            spawn = obj(sub.get("thread_spawn"))
    parent = _text(payload.get("parent_thread_id"))
    if parent is None and spawn is not None:
        parent = _text(spawn.get("parent_thread_id"))
    forked = _text(payload.get("forked_from_id"))
    role = _role(source, _text(payload.get("thread_source")))
    subagent_id = None
    if role is Role.SUBAGENT:
        holder = spawn or payload
        subagent_id = (
            _text(holder.get("agent_path"))
            or _text(holder.get("agent_nickname"))
            or _text(payload.get("agent_path"))
            or _text(payload.get("agent_nickname"))
        )
    git = obj(payload.get("git")) or obj(line.get("git")) or {}
    created = uuid7_ms(thread)
    if created is None:
        stamp = parse_ts(payload.get("timestamp"))
        if stamp is None:
            stamp = parse_ts(line.get("timestamp"))
        created = stamp * 1000.0 if stamp is not None else None
    bounds = [_int(payload.get("subagent_history_start_ordinal"))]
    base = obj(payload.get("history_base"))
    if base is not None:
        bounds.append(_int(base.get("end_ordinal_exclusive")))
    known = [b for b in bounds if b is not None]
    return Meta(
        thread=thread,
        role=role,
        parent=parent or forked,
        lineage=(parent or forked) not in (None, thread),
        subagent_id=subagent_id,
        cwd=_text(payload.get("cwd")),
        git_branch=_text(git.get("branch")),
        git_repo=_text(git.get("repository_url")),
        version=_text(payload.get("cli_version")),
        provider=_text(payload.get("model_provider")),
        created_ms=created,
        boundary=max(known) if known else None,
    )
