// The icws demo page: a chat with the demo canister through the gateway, using ic-websocket-js
// 0.5.0 with the icws resume extension (resume.js). The server injects where everything is
// (the JSON in #icws-config).
import { Actor, HttpAgent } from "@dfinity/agent";
import { createWsConfig, generateRandomIdentity } from "ic-websocket-js";
import { openResumableIcWebSocket } from "./resume.js";

// The demo canister's Candid (replica/wscanister/demo.did); the SDK reads the application message
// type from the actor's ws_message.
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

const MAX_CHAT_LINES = 200;
const MAX_BURST = 1000;

const config = JSON.parse(document.getElementById("icws-config").textContent);
const $ = (id) => document.getElementById(id);

// The page's model: what was received, what the canister must send back, in which order.
const state = {
  session: null, // { ws, transport }
  status: "idle",
  received: 0,
  expected: 0,
  outOfOrder: 0,
  // Texts still owed by the canister, in order: an echo is one entry, burst:N is N entries.
  owed: [],
};

function render() {
  $("status").textContent = state.status;
  $("status").dataset.status = state.status;
  $("received").textContent = String(state.received);
  $("expected").textContent = String(state.expected);
  const exact = state.received === state.expected && state.outOfOrder === 0;
  $("count").dataset.exact = String(exact);
  $("order").textContent = state.outOfOrder === 0 ? "in order" : `${state.outOfOrder} out of order`;
  const t = state.session && state.session.transport;
  $("resumes").textContent = String(t ? t.resumes : 0);
  $("resent").textContent = String(t ? t.resent : 0);
  $("last-seq").textContent = t ? String(t.lastSeq) : "0";
  const open = state.status === "open";
  // While a dropped session resumes, sends are queued and go out once it has resumed.
  const canSend = open || state.status === "resuming";
  for (const id of ["send", "burst", "text", "burst-n"]) $(id).disabled = !canSend;
  $("drop").disabled = !(open && t && t.resumable);
  $("close").disabled = !open;
  $("open").disabled = state.status === "open" || state.status === "connecting" || state.status === "resuming";
}

function chat(who, text) {
  const li = document.createElement("li");
  li.className = who;
  li.textContent = text;
  const list = $("chat");
  list.append(li);
  while (list.children.length > MAX_CHAT_LINES) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

function event(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  $("events").append(li);
}

function owe(text) {
  const m = /^burst:(\d+)$/.exec(text);
  const n = m ? Number(m[1]) : 0;
  if (n > 0) {
    for (let i = 1; i <= n; i++) state.owed.push(`burst:${i}`);
    state.expected += n;
  } else {
    state.owed.push(text);
    state.expected += 1;
  }
}

function onMessage(ev) {
  const text = ev.data.text;
  state.received++;
  const want = state.owed.shift();
  if (want !== text) state.outOfOrder++;
  // A burst is shown as one line per 10 messages, so the chat stays readable.
  const m = /^burst:(\d+)$/.exec(text);
  if (!m || Number(m[1]) % 10 === 0 || state.owed[0] !== `burst:${Number(m[1]) + 1}`) {
    chat("canister", text);
  }
  render();
}

function send(text) {
  const { ws } = state.session;
  ws.send({ text, timestamp: BigInt(Date.now()) * 1_000_000n });
  owe(text);
  chat("me", text);
  render();
}

function open() {
  state.received = 0;
  state.expected = 0;
  state.outOfOrder = 0;
  state.owed = [];
  state.status = "connecting";
  const identity = generateRandomIdentity();
  const agent = HttpAgent.createSync({ host: config.icUrl, identity });
  const canisterActor = Actor.createActor(idlFactory, { agent, canisterId: config.canisterId });
  const session = openResumableIcWebSocket(config.gatewayUrl, createWsConfig({
    canisterId: config.canisterId,
    canisterActor,
    identity,
    networkUrl: config.icUrl,
    ackMessageIntervalMs: config.ackIntervalMs,
  }), {
    ondrop: ({ code, reason }) => {
      state.status = "resuming";
      chat("system", "connection dropped; resuming");
      event(`connection dropped (${code}${reason ? " " + reason : ""}); resuming`);
      render();
    },
    onresumed: ({ lastClientSeq, lastSeq, resent }) => {
      state.status = "open";
      chat("system", `resumed with ${state.received} of ${state.expected} received so far`);
      event(`resumed: the gateway had my messages up to #${lastClientSeq}, replays canister messages after #${lastSeq}; re-sent ${resent}`);
      render();
    },
    onresumefailed: ({ code, reason }) => {
      event(`resume failed (${code} ${reason}); the session is over`);
    },
  });
  state.session = session;
  session.ws.onopen = () => {
    state.status = "open";
    event(`session open: principal ${identity.getPrincipal().toText()}${session.transport.resumable ? ", resume on" : ", the gateway offers no resume"}`);
    render();
  };
  session.ws.onmessage = onMessage;
  session.ws.onerror = (ev) => {
    event(`error: ${ev.error ? ev.error.message : ev.message}`);
  };
  session.ws.onclose = (ev) => {
    state.status = "closed";
    event(`session closed (${ev.code}${ev.reason ? " " + ev.reason : ""})`);
    render();
  };
  event(`opening a session with ${config.canisterId} through ${config.gatewayUrl}`);
  render();
}

$("send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (text === "") return;
  send(text);
  $("text").value = "";
});
$("burst").addEventListener("click", () => {
  const n = Math.max(1, Math.min(MAX_BURST, Number($("burst-n").value) || 1));
  send(`burst:${n}`);
});
$("drop").addEventListener("click", () => {
  state.session.transport.drop();
});
$("close").addEventListener("click", () => {
  state.session.ws.close();
});
$("open").addEventListener("click", open);

$("gateway-url").textContent = config.gatewayUrl;
$("canister-id").textContent = config.canisterId;
open();
