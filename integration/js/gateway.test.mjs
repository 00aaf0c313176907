// The real client, ic-websocket-js 0.5.0, against an icws gateway (`icws dev`).
//
// Run by TestICWebSocketJS (integration/js_test.go), which starts `icws dev` and sets:
//   GATEWAY_URL      ws://127.0.0.1:<port>          the gateway's WebSocket address
//   IC_URL           http://127.0.0.1:<port>        the replica (networkUrl; the SDK fetches the root key)
//   CANISTER_ID      the demo canister
//   CONTROL_URL      <IC_URL>/_/control/<canister>/ the demo canister's TEST-ONLY control API
//   ACK_INTERVAL_MS  the canister's send_ack_interval (ackMessageIntervalMs must equal it)
//   KEEPALIVE_TIMEOUT_MS  the canister's keep-alive timeout (for the keep-alive test's timing)
//   JS_SUITE         "main" (default canister timings: open, echo, 200 each way, burst, close),
//                    "keepalive" (a canister with short ack/keep-alive intervals), "scenario" (the
//                    scenario TestSameScenarioGoAndJS shares with client/) or "stack" (open, echo,
//                    burst, close through one edge of the compose stack that
//                    TestComposeStackRunsAsLocalProcesses runs)
//
// "main" and "keepalive" are separate suites because the SDK verifies the BLS certificate of every
// message in order on one thread (about 0.1-0.2 s each here): while it works through a few hundred
// messages, an AckMessage waits behind them for longer than a 2 s keep-alive timeout allows, and
// the canister would close the client. Real deployments use 300 s / 60 s.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";

// Node 20 has no WebSocket and no ErrorEvent; the SDK needs the first and reports errors with the
// second (without it, onerror is silently never called).
globalThis.WebSocket = WebSocket;
if (typeof globalThis.ErrorEvent === "undefined") {
  globalThis.ErrorEvent = class ErrorEvent extends Event {
    constructor(type, init = {}) {
      super(type);
      this.error = init.error;
      this.message = init.message ?? String(init.error);
    }
  };
}
// Imported after the globals above are in place.
const { IcWebSocket, generateRandomIdentity, createWsConfig } = await import("ic-websocket-js");
const { Actor, HttpAgent } = await import("@dfinity/agent");

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run this file through TestICWebSocketJS)`);
  return v;
}
const GATEWAY_URL = env("GATEWAY_URL");
const IC_URL = env("IC_URL");
const CANISTER_ID = env("CANISTER_ID");
const CONTROL_URL = env("CONTROL_URL").replace(/\/?$/, "/");
const ACK_INTERVAL_MS = Number(env("ACK_INTERVAL_MS"));
const KEEPALIVE_TIMEOUT_MS = Number(process.env.KEEPALIVE_TIMEOUT_MS || 2000);
const SUITE = process.env.JS_SUITE || "main";
const main = { skip: SUITE !== "main" && `JS_SUITE=${SUITE}` };
const keepalive = { skip: SUITE !== "keepalive" && `JS_SUITE=${SUITE}` };

// The demo canister's Candid (replica/wscanister/demo.did): the CDK's ws_types.did with
// AppMessage = record { text : text; timestamp : nat64 }.
const idlFactory = ({ IDL }) => {
  const ClientKey = IDL.Record({ client_principal: IDL.Principal, client_nonce: IDL.Nat64 });
  const WebsocketMessage = IDL.Record({
    client_key: ClientKey,
    sequence_num: IDL.Nat64,
    timestamp: IDL.Nat64,
    is_service_message: IDL.Bool,
    content: IDL.Vec(IDL.Nat8),
  });
  const CanisterOutputMessage = IDL.Record({ client_key: ClientKey, key: IDL.Text, content: IDL.Vec(IDL.Nat8) });
  const CanisterOutputCertifiedMessages = IDL.Record({
    messages: IDL.Vec(CanisterOutputMessage),
    cert: IDL.Vec(IDL.Nat8),
    tree: IDL.Vec(IDL.Nat8),
    is_end_of_queue: IDL.Bool,
  });
  const Result = IDL.Variant({ Ok: IDL.Null, Err: IDL.Text });
  const AppMessage = IDL.Record({ text: IDL.Text, timestamp: IDL.Nat64 });
  return IDL.Service({
    ws_open: IDL.Func([IDL.Record({ client_nonce: IDL.Nat64, gateway_principal: IDL.Principal })], [Result], []),
    ws_close: IDL.Func([IDL.Record({ client_key: ClientKey })], [Result], []),
    ws_message: IDL.Func([IDL.Record({ msg: WebsocketMessage }), IDL.Opt(AppMessage)], [Result], []),
    ws_get_messages: IDL.Func(
      [IDL.Record({ nonce: IDL.Nat64 })],
      [IDL.Variant({ Ok: CanisterOutputCertifiedMessages, Err: IDL.Text })],
      ["query"],
    ),
  });
};

// --- control API of the demo canister (TEST ONLY) ---

async function control(method, path, body) {
  const res = await fetch(CONTROL_URL + path, {
    method,
    headers: body ? { "content-type": "application/json" } : undefined,
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`control ${path}: HTTP ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}
const received = (token) => control("GET", "received?client=" + encodeURIComponent(token));
const canisterSend = (token, text) => control("POST", "send", { client: token, text });

// --- helpers ---

async function waitUntil(what, timeoutMs, cond) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await cond();
      if (last === true) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last, bigintJSON)}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

const bigintJSON = (_k, v) => (typeof v === "bigint" ? v.toString() : v);
const now = () => BigInt(Date.now()) * 1_000_000n;

// openClient opens an IcWebSocket with a fresh identity and resolves once the canister's
// OpenMessage arrived (onopen). It records messages, errors and the close event.
async function openClient() {
  const started = Date.now();
  const identity = generateRandomIdentity();
  const agent = HttpAgent.createSync({ host: IC_URL, identity });
  const canisterActor = Actor.createActor(idlFactory, { agent, canisterId: CANISTER_ID });
  const ws = new IcWebSocket(
    GATEWAY_URL,
    undefined,
    createWsConfig({
      canisterId: CANISTER_ID,
      canisterActor,
      identity,
      networkUrl: IC_URL,
      ackMessageIntervalMs: ACK_INTERVAL_MS,
    }),
  );
  const c = {
    ws,
    messages: [],
    errors: [],
    closeEvent: null,
    opened: false,
    token: null,
  };
  ws.onopen = () => {
    c.opened = true;
  };
  ws.onmessage = (ev) => {
    c.messages.push(ev.data);
  };
  ws.onerror = (ev) => {
    c.errors.push(ev?.error?.message ?? ev?.message ?? String(ev));
  };
  ws.onclose = (ev) => {
    c.closeEvent = { code: ev.code, reason: ev.reason };
  };
  await waitUntil("onopen", 30_000, () => {
    if (c.closeEvent) throw new Error(`closed before open: ${JSON.stringify(c.closeEvent)}; errors: ${c.errors.join("; ")}`);
    return c.opened;
  });
  // The control API names a client by "<principal text>_<nonce>"; the canister lists the
  // connected ones, and this principal has exactly one.
  const prefix = ws.getPrincipal().toText() + "_";
  const clients = await control("GET", "clients");
  const mine = clients.filter((t) => t.startsWith(prefix));
  assert.equal(mine.length, 1, `canister clients for ${prefix}: ${JSON.stringify(clients)}`);
  c.token = mine[0];
  console.log(`# client ${c.token} open after ${Date.now() - started} ms`);
  return c;
}

function assertHealthy(c) {
  assert.equal(c.closeEvent, null, `client closed: ${JSON.stringify(c.closeEvent)}; errors: ${c.errors.join("; ")}`);
  assert.deepEqual(c.errors, []);
}

async function waitMessages(c, n, timeoutMs = 30_000) {
  await waitUntil(`${n} messages (have ${c.messages.length})`, timeoutMs, () => {
    if (c.closeEvent) throw new Error(`closed: ${JSON.stringify(c.closeEvent)}; errors: ${c.errors.join("; ")}`);
    return c.messages.length >= n;
  });
}

async function closeClient(c) {
  if (c.closeEvent) return;
  c.ws.close();
  await waitUntil("onclose", 10_000, () => c.closeEvent !== null);
}

// --- tests ---

// The SDK's first certificate check in a process is slow (about 2.5 s here: the BLS code warms
// up), longer than a 2 s keep-alive timeout; a throw-away session takes that cost up front.
before(async () => {
  const t0 = Date.now();
  try {
    const c = await openClient();
    await closeClient(c);
  } catch (e) {
    console.log(`# warm-up session failed (ignored): ${e.message}`);
  }
  console.log(`# warm-up took ${Date.now() - t0} ms`);
}, { timeout: 60_000 });

test("open and echo round trip", { ...main, timeout: 60_000 }, async () => {
  const c = await openClient();
  try {
    c.ws.send({ text: "hello", timestamp: now() });
    await waitMessages(c, 1);
    assert.equal(c.messages[0].text, "hello");
    assert.equal(typeof c.messages[0].timestamp, "bigint");
    assertHealthy(c);
  } finally {
    await closeClient(c);
  }
});

test("200 messages each way, in order", { ...main, timeout: 180_000 }, async () => {
  const c = await openClient();
  try {
    const n = 200;
    let t0 = Date.now();
    for (let i = 1; i <= n; i++) c.ws.send({ text: `m${i}`, timestamp: now() });
    await waitMessages(c, n, 120_000);
    console.log(`# ${n} echoes in ${Date.now() - t0} ms`);
    assert.deepEqual(c.messages.map((m) => m.text), Array.from({ length: n }, (_, i) => `m${i + 1}`));

    const log = await received(c.token);
    assert.deepEqual(log.texts, Array.from({ length: n }, (_, i) => `m${i + 1}`));
    assert.equal(log.sequence_errors, 0);

    // Canister-initiated: 200 sends through the control API.
    t0 = Date.now();
    for (let i = 1; i <= n; i++) await canisterSend(c.token, `c${i}`);
    await waitMessages(c, 2 * n, 120_000);
    console.log(`# ${n} canister-initiated messages in ${Date.now() - t0} ms`);
    assert.deepEqual(c.messages.slice(n).map((m) => m.text), Array.from({ length: n }, (_, i) => `c${i + 1}`));
    assertHealthy(c);
  } finally {
    await closeClient(c);
  }
});

test("burst:100 arrives complete and in order", { ...main, timeout: 90_000 }, async () => {
  const c = await openClient();
  try {
    const t0 = Date.now();
    c.ws.send({ text: "burst:100", timestamp: now() });
    await waitMessages(c, 100, 60_000);
    console.log(`# burst:100 in ${Date.now() - t0} ms`);
    assert.deepEqual(c.messages.map((m) => m.text), Array.from({ length: 100 }, (_, i) => `burst:${i + 1}`));
    assertHealthy(c);
  } finally {
    await closeClient(c);
  }
});

test("keep-alive: the SDK answers acks and stays open across 3 ack cycles", { ...keepalive, timeout: 120_000 }, async () => {
  const c = await openClient();
  try {
    // Something sent arms the SDK's ack watchdog, so the acks must really arrive.
    c.ws.send({ text: "before", timestamp: now() });
    await waitMessages(c, 1);
    const cycles = 3;
    const start = Date.now();
    await waitUntil(`${cycles} keep-alives at the canister`, (cycles + 2) * ACK_INTERVAL_MS + 10_000, async () => {
      if (c.closeEvent) throw new Error(`closed: ${JSON.stringify(c.closeEvent)}; errors: ${c.errors.join("; ")}`);
      const log = await received(c.token);
      if (!log.open) throw new Error(`canister dropped the client: ${JSON.stringify(log.closes)}`);
      return log.keep_alives >= cycles ? true : log;
    });
    // One more keep-alive timeout after the last ack round, to see the canister keep the client.
    await new Promise((r) => setTimeout(r, KEEPALIVE_TIMEOUT_MS + 500));
    const log = await received(c.token);
    assert.equal(log.open, true, `canister closes: ${JSON.stringify(log.closes)}`);
    assert.deepEqual(log.closes ?? [], []);
    assert.ok(Date.now() - start >= (cycles - 1) * ACK_INTERVAL_MS);
    c.ws.send({ text: "after", timestamp: now() });
    await waitMessages(c, 2);
    assert.equal(c.messages[1].text, "after");
    assertHealthy(c);
  } finally {
    await closeClient(c);
  }
});

test("client close reaches the canister as ws_close", { ...main, timeout: 60_000 }, async () => {
  const c = await openClient();
  c.ws.send({ text: "bye", timestamp: now() });
  await waitMessages(c, 1);
  c.ws.close();
  await waitUntil("onclose", 10_000, () => c.closeEvent !== null);
  assert.equal(c.closeEvent.code, 1000);
  await waitUntil("ws_close at the canister", 20_000, async () => {
    const log = await received(c.token);
    return !log.open && (log.closes ?? []).includes("ws_close") ? true : log;
  });
});

test("canister close reaches the SDK as 4001 ClosedByApplication", { ...main, timeout: 60_000 }, async () => {
  const c = await openClient();
  await control("POST", "close", { client: c.token });
  await waitUntil("onclose", 20_000, () => c.closeEvent !== null);
  // The code is the SDK's own (it closes with 4001 "ClosedByApplication"); the reason the ws
  // library reports is the one the gateway echoes, which may be empty.
  assert.equal(c.closeEvent.code, 4001, JSON.stringify(c.closeEvent));
  const log = await received(c.token);
  assert.equal(log.open, false);
  assert.ok((log.closes ?? []).includes("ClosedByApplication"), JSON.stringify(log.closes));
});

// --- the shared scenario (TestSameScenarioGoAndJS runs it through client/ too) ---
// Sends "one", "two", "burst:3", "three", has the canister push "pushed", closes, and writes what
// it saw to SCENARIO_OUT as JSON: the texts received in order and the canister's view of the client.
const scenario = { skip: SUITE !== "scenario" && `JS_SUITE=${SUITE}` };
export const SCENARIO_SENDS = ["one", "two", "burst:3", "three"];

test("shared scenario", { ...scenario, timeout: 90_000 }, async () => {
  const c = await openClient();
  for (const text of SCENARIO_SENDS) c.ws.send({ text, timestamp: now() });
  await waitMessages(c, 6);
  await canisterSend(c.token, "pushed");
  await waitMessages(c, 7);
  assertHealthy(c);
  await closeClient(c);
  const log = await waitCanisterClosed(c.token);
  const out = {
    received: c.messages.map((m) => m.text),
    canister_texts: log.texts,
    canister_sequence_errors: log.sequence_errors,
    canister_closes: log.closes,
  };
  const { writeFile } = await import("node:fs/promises");
  await writeFile(env("SCENARIO_OUT"), JSON.stringify(out));
});

async function waitCanisterClosed(token) {
  let log;
  await waitUntil("ws_close at the canister", 30_000, async () => {
    log = await received(token);
    return (log.closes ?? []).includes("ws_close");
  });
  return log;
}

// --- the compose stack (TestComposeStackRunsAsLocalProcesses runs this through each edge) ---
const stack = { skip: SUITE !== "stack" && `JS_SUITE=${SUITE}` };

test("stack: open, echo, burst, close", { ...stack, timeout: 90_000 }, async () => {
  const c = await openClient();
  const echoes = ["one", "two", "three", "four", "five"];
  for (const text of echoes) c.ws.send({ text, timestamp: now() });
  await waitMessages(c, echoes.length);
  assert.deepEqual(c.messages.map((m) => m.text), echoes);

  const n = 20;
  c.ws.send({ text: `burst:${n}`, timestamp: now() });
  await waitMessages(c, echoes.length + n);
  assert.deepEqual(c.messages.slice(echoes.length).map((m) => m.text), Array.from({ length: n }, (_, i) => `burst:${i + 1}`));
  assertHealthy(c);

  await closeClient(c);
  assert.equal(c.closeEvent.code, 1000);
  const log = await waitCanisterClosed(c.token);
  assert.deepEqual(log.texts, [...echoes, `burst:${n}`]);
  assert.equal(log.sequence_errors, 0);
});
