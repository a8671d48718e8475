// Loads an OpenCode plugin file and calls its hooks as OpenCode's plugin API does
// (packages/plugin/src/index.ts: a plugin is `async (ctx) => hooks`; a hook is
// `async (input, output) => void`, and a throw refuses the call). Prints one JSON line.
import { pathToFileURL } from "node:url";

const [file, directory, sessionID] = process.argv.slice(2);
const logged = [];
const client = { app: { log: async ({ body }) => { logged.push(body); } } };
const mod = await import(pathToFileURL(file).href);
const results = {};
for (const [name, plugin] of Object.entries(mod)) {
  const hooks = await plugin({ client, project: { id: "p1" }, directory, worktree: directory, $: null });
  const calls = {
    "chat.params": [
      { sessionID, agent: "build", model: { id: "claude-sonnet-4-5", providerID: "anthropic" },
        provider: { source: "env", info: {}, options: {} }, message: { id: "msg_1", role: "user" } },
      { temperature: 0, topP: 1, options: {} },
    ],
    "tool.execute.before": [{ tool: "bash", sessionID, callID: "call_1" }, { args: { command: "npm test" } }],
  };
  for (const [hook, [input, output]] of Object.entries(calls)) {
    try {
      await hooks[hook](input, output);
      results[hook] = { threw: false };
    } catch (err) {
      results[hook] = { threw: true, message: String(err.message) };
    }
  }
  results.exports = (results.exports || []).concat([name]);
}
results.logged = logged;
process.stdout.write(JSON.stringify(results) + "\n");
