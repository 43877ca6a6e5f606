// A client built on the TypeScript MCP SDK (@modelcontextprotocol/sdk, the
// SDK the Inspector and most agents' clients use), for interop tests.
// Usage: node ts_client.mjs --sdk DIR --url URL [--token T] --tool NAME [--args JSON]
// Calls one tool over Streamable HTTP and prints one JSON line:
//   {"result": <CallToolResult>, "logs": [<logging notification data>...]}
// The SDK's transport reconnects (GET with Last-Event-ID) when the server
// closes a stream mid-call, after the priming event's `retry` interval.
import path from "node:path";
import { pathToFileURL } from "node:url";

const opts = {};
for (let i = 2; i < process.argv.length; i += 2) opts[process.argv[i].slice(2)] = process.argv[i + 1];
const load = (p) => import(pathToFileURL(path.join(opts.sdk, "dist/esm", p)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { LoggingMessageNotificationSchema } = await load("types.js");

const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(opts.url), {
  requestInit: { headers },
  reconnectionOptions: { initialReconnectionDelay: 200, maxReconnectionDelay: 2000, reconnectionDelayGrowFactor: 1.5, maxRetries: 5 },
});
const client = new Client({ name: "portcullis-ts-client", version: "1.0.0" });
const logs = [];
client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => { logs.push(n.params.data); });
await client.connect(transport);
const result = await client.callTool({ name: opts.tool, arguments: JSON.parse(opts.args || "{}") });
process.stdout.write(JSON.stringify({ result, logs }) + "\n");
await client.close();
