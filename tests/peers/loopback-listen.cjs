// Preload for Node peers whose servers call listen(port) without a host
// (server-everything does `app.listen(PORT)`, i.e. all interfaces).
// Usage: node --require tests/peers/loopback-listen.cjs <script> ...
// Forces every TCP listen() without an explicit host onto 127.0.0.1 (or
// $PEER_LISTEN_HOST) and, once bound, prints one line to stderr:
//   PEER_LISTENING 127.0.0.1:<port>
// so PORT=0 can be used and the real port read from stderr.
// $PEER_LISTEN_PORT, when set, replaces a port the script hard-codes (the
// TypeScript SDK's example servers listen on fixed ports).
"use strict";
const net = require("net");
const HOST = process.env.PEER_LISTEN_HOST || "127.0.0.1";
const PORT = process.env.PEER_LISTEN_PORT;
const origListen = net.Server.prototype.listen;
const isPort = (v) => typeof v === "number" || (typeof v === "string" && /^\d+$/.test(v));
net.Server.prototype.listen = function (...args) {
  if (args.length === 0 || typeof args[0] === "function") {
    args.unshift(0, HOST);
  } else if (isPort(args[0])) {
    if (PORT !== undefined) args[0] = Number(PORT);
    if (typeof args[1] !== "string") args.splice(1, 0, HOST);
  } else if (args[0] && typeof args[0] === "object" && !("path" in args[0]) && !args[0].host) {
    args[0] = { ...args[0], host: HOST };
  }
  this.once("listening", () => {
    const a = this.address();
    if (a && typeof a === "object") process.stderr.write(`PEER_LISTENING ${a.address}:${a.port}\n`);
  });
  return origListen.apply(this, args);
};
