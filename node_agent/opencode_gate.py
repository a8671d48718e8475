"""fleetmeter's OpenCode plugin: OpenCode has no hook entries in its config, only JS plugins
loaded from its plugin directories, so the gate is a small file we write and remove whole.

Its `chat.params` hook runs before each model call and `tool.execute.before` before each tool;
both ask the node (spawning `node-agent hook EVENT --agent opencode`, or POSTing to the node's
hook_port with its token) and throw the stop reason when a budget is exhausted: OpenCode then
refuses the call (checked against the real OpenCode 1.18.33: no request reaches the provider).
The reason is thrown in words OpenCode does not take for a provider's passing trouble, which it
would retry for a minute (see `finalWords`). A node that does not answer lets the call through
and logs so, unless the plugin was installed with `--on-node-down block`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

from node_agent.agent_config import _write
from shared.config import ConfigError

PLUGIN_NAME: Final = "fleetmeter.js"
MARKER: Final = "// fleetmeter budget gate: written by `node-agent hooks install --agent opencode`"
TIMEOUT_MS: Final = 3000  # a dead node costs OpenCode seconds, in-process

PLUGIN_BODY: Final = r"""import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";

function runHook(event, body) {
  return new Promise((resolve, reject) => {
    const child = spawn(COMMAND[0], [...COMMAND.slice(1), "hook", event, ...EXTRA], {
      stdio: ["pipe", "pipe", "ignore"],
    });
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`no answer in ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    child.stdout.on("data", (chunk) => { out += chunk; });
    child.on("error", (err) => { clearTimeout(timer); reject(err); });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`node-agent hook exited ${code}`));
      try { resolve(out.trim() ? JSON.parse(out) : {}); } catch (err) { reject(err); }
    });
    child.stdin.on("error", () => {});
    child.stdin.end(JSON.stringify(body));
  });
}

async function askPort(event, body) {
  const token = (await readFile(HTTP.tokenFile, "utf8")).trim();
  const answer = await fetch(`http://127.0.0.1:${HTTP.port}/hook/${event}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  if (!answer.ok) throw new Error(`the node answered ${answer.status}`);
  return await answer.json();
}

// OpenCode (1.18.33, its SessionRetry) retries a failed model call whose error reads like a
// provider's passing trouble: "exhausted", "unavailable", "rate limit", "overloaded", "timeout",
// "connection refused", a status such as 429 or 500 anywhere in the text. It then asks this
// hook again, up to 5 times over a minute, and calls the refusal "Provider is overloaded". A
// refusal is final: an invisible word joiner after the first letter of such words keeps the
// text as it reads and stops OpenCode from taking it for one.
const TRANSIENT = [
  /exhausted|unavailable|overloaded|capacity|too[-_ ]?many[-_ ]?requests/gi,
  /rate[-_ ]?limit|rate increased|resource[-_ ]exhausted|internal[-_ ]error|server[-_ ]error/gi,
  /timeout|timed out|time out|terminated|fetch failed|failed to fetch|network[-_ ]error/gi,
  /connection|socket|reset before|getaddrinfo|enotfound|eai_again|econn\w*|etimedout/gi,
  /try (?:again|your request)|retry|provider returned error|upstream|\d{3,}/gi,
];

function finalWords(message) {
  // a number gets one between every digit: "1500" must not read as 500 either
  const joined = (word) =>
    /^\d+$/.test(word) ? word.split("").join("\u2060") : `${word[0]}\u2060${word.slice(1)}`;
  return TRANSIENT.reduce((text, pattern) => text.replace(pattern, joined), String(message));
}

async function gate(event, body, log) {
  let answer;
  try {
    answer = HTTP ? await askPort(event, body) : await runHook(event, body);
  } catch (err) {
    const why = `fleetmeter: the node does not answer (${err.message})`;
    if (BLOCK_WHEN_DOWN) throw new Error(finalWords(`${why}; blocked as configured`));
    await log("warn", `${why}; let through`);
    return;
  }
  // A throw is how OpenCode refuses the model call or the tool.
  if (answer.continue === false) {
    throw new Error(finalWords(answer.stopReason || "fleetmeter: stop"));
  }
  const note = answer.systemMessage || answer.hookSpecificOutput?.additionalContext;
  if (note) await log("warn", note);
}

export const FleetmeterGate = async ({ client, directory }) => {
  const log = async (level, message) => {
    try {
      await client?.app?.log?.({ body: { service: "fleetmeter", level, message } });
    } catch {}
  };
  const body = (event, sessionID, more) => ({
    session_id: sessionID, cwd: directory, hook_event_name: event, ...more,
  });
  return {
    "chat.params": async (input, output) => {
      const more = { model: input.model?.id, agent: input.agent };
      await gate("BeforeModel", body("BeforeModel", input.sessionID, more), log);
    },
    "tool.execute.before": async (input, output) => {
      const more = { tool_name: input.tool, tool_use_id: input.callID };
      await gate("PreToolUse", body("PreToolUse", input.sessionID, more), log);
    },
  };
};
"""


def plugin_path(scope: str, project: Path) -> Path:
    if scope == "project":
        return project / ".opencode" / "plugins" / PLUGIN_NAME
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "opencode" / "plugins" / PLUGIN_NAME


def plugin_text(
    command: list[str],
    extra: list[str],
    block_when_down: bool,
    http: tuple[int, Path] | None = None,
) -> str:
    """The plugin, its settings as JS constants (JSON is valid JS: no quoting of our own)."""
    port = None if http is None else {"port": http[0], "tokenFile": str(http[1])}
    settings = [
        f"const COMMAND = {json.dumps(command)};",
        f"const EXTRA = {json.dumps(extra)};",
        f"const HTTP = {json.dumps(port)};",
        f"const BLOCK_WHEN_DOWN = {json.dumps(block_when_down)};",
        f"const TIMEOUT_MS = {TIMEOUT_MS};",
    ]
    return "\n".join([MARKER, *settings, "", PLUGIN_BODY])


def _ours(path: Path) -> bool:
    try:
        return path.read_text(errors="replace").startswith(MARKER)
    except OSError:
        return False


def install_plugin(path: Path, text: str) -> bool:
    if path.exists():
        if not _ours(path):
            raise ConfigError(f"{path} is not fleetmeter's plugin; move it first")
        if path.read_text() == text:
            return False
    _write(path, text)
    return True


def remove_plugin(path: Path) -> bool:
    """Deletes only our file (and the copy an earlier install left beside it)."""
    if not path.exists():
        return False
    if not _ours(path):
        raise ConfigError(f"{path} is not fleetmeter's plugin; left as it is")
    path.unlink()
    path.with_name(path.name + ".fleetmeter-backup").unlink(missing_ok=True)
    return True
