// The icws resume extension (docs/RESUME.md) for ic-websocket-js 0.5.0, which has none.
//
// ic-websocket-js builds its socket with `new WebSocket(url)` and then only uses the socket's
// WebSocket surface (readyState, binaryType, send, close, on* handlers). ResumingSocket is that
// surface over a sequence of real WebSockets: while the session lives it hides drops from the SDK,
// reconnects with `icws-resume=1`, resumes the session and re-sends what the gateway lacks. The SDK
// itself is used unchanged; it still verifies every canister message and checks its sequence number,
// so a replay with a gap or a duplicate would fail there, loudly.
//
// Everything the resume frame needs is read from the wire, not from the SDK's private state:
// the client key and canister from the signed ws_open envelope, client sequence numbers from the
// ws_message envelopes, and the last canister sequence number from the frames handed to the SDK.
// A frame handed to the SDK is verified by it in order before the next one; if one fails, the SDK
// closes the session, so claiming it in last_seq never skips a message the client accepts.
import { Cbor } from "@dfinity/agent";
import { IcWebSocket } from "ic-websocket-js";
import { decodeWebsocketServiceMessageContent, wsMessageIdl, wsOpenIdl } from "ic-websocket-js/lib/esm/idl";
import { IDL } from "@dfinity/candid";
import { encodeCbor } from "./cbor.js";

export const RESUME_QUERY_PARAM = "icws-resume";
// Asks the gateway for heartbeat frames (RESUME.md §7): a browser cannot see WebSocket pings, so
// heartbeats are how it tells a hung gateway from a quiet session.
export const HEARTBEAT_QUERY_PARAM = "icws-heartbeat";
export const CLOSE_NOT_RESUMABLE = 4100;
export const CLOSE_RESUMED_ELSEWHERE = 4102;
// The gateway lost its message bus: resume at once, elsewhere.
export const CLOSE_RESUME_ELSEWHERE = 4103;
// Closes after which the session is worth resuming (as in the Go client): going away, abnormal,
// no status, internal error, restart, try again later, slow client, resume elsewhere, no answer to
// ping. Any other code from the gateway means the session is gone.
const RESUMABLE_CLOSES = new Set([1001, 1005, 1006, 1011, 1012, 1013, 4101, 4103, 4104]);
// The close the wrapper reports when it gave up a silent connection itself.
const CLOSE_SILENT = 1006;
// The code the page closes its own socket with to simulate a dropped connection.
export const CLOSE_DEMO_DROP = 3000;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

const wsOpenArgIdl = wsOpenIdl.argTypes[0];
const wsMessageArgIdl = wsMessageIdl.argTypes[0];

// withResumeParam adds icws-resume=1 and icws-heartbeat=1 to a ws:// or wss:// URL.
export function withResumeParam(url) {
  const u = new URL(url);
  u.searchParams.set(RESUME_QUERY_PARAM, "1");
  u.searchParams.set(HEARTBEAT_QUERY_PARAM, "1");
  return u.toString();
}

// openResumableIcWebSocket is `new IcWebSocket(url, undefined, config)` with the resume extension:
// the SDK gets a ResumingSocket as its socket. hooks (all optional) report the extension's events:
// ondrop({code, reason}), onresumed({lastClientSeq, lastSeq, resent}), onresumefailed({code, reason}).
export function openResumableIcWebSocket(url, config, hooks = {}, options = {}) {
  const Native = globalThis.WebSocket;
  let transport = null;
  // The SDK's constructor calls `new WebSocket(...)` once, synchronously; this class answers it.
  class Transport extends ResumingSocket {
    constructor(u, protocols) {
      super(u, protocols, { ...options, NativeWebSocket: Native, hooks });
      transport = this;
    }
  }
  globalThis.WebSocket = Transport;
  let ws;
  try {
    ws = new IcWebSocket(withResumeParam(url), undefined, config);
  } finally {
    globalThis.WebSocket = Native;
  }
  return { ws, transport };
}

function toBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v && typeof v.toUint8Array === "function") return v.toUint8Array(); // Principal
  throw new TypeError("not bytes");
}

// resumeOffer returns the token and heartbeat interval (ms, 0 for none) of a handshake's
// icws_resume offer, or null without one.
function resumeOffer(handshake) {
  const r = handshake && handshake.icws_resume;
  if (!r || Number(r.version) !== 1 || !r.token) return null;
  const token = toBytes(r.token);
  if (token.length === 0) return null;
  const heartbeatMs = r.heartbeat_ms ? Number(r.heartbeat_ms) : 0;
  return { token, heartbeatMs: Number.isFinite(heartbeatMs) && heartbeatMs > 0 ? heartbeatMs : 0 };
}

// isHeartbeat tells a heartbeat frame ({icws_heartbeat: …}) from a canister message; only small
// frames are decoded for it (a canister message carries a certificate).
function isHeartbeat(data) {
  const bytes = toBytes(data);
  if (bytes.length > 256) return false;
  try {
    const f = Cbor.decode(bytes);
    return f !== null && typeof f === "object" && "icws_heartbeat" in f;
  } catch {
    return false;
  }
}

function closeEvent(code, reason, wasClean) {
  const init = { code, reason, wasClean };
  if (typeof CloseEvent === "function") return new CloseEvent("close", init);
  return Object.assign(new Event("close"), init);
}

export class ResumingSocket {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSING = CLOSING;
  static CLOSED = CLOSED;

  constructor(url, protocols, { NativeWebSocket, hooks = {}, resumeTimeoutMs = 60_000, reconnectMinMs = 100, reconnectMaxMs = 2_000, connectTimeoutMs = 5_000 }) {
    this.url = url;
    this.binaryType = "arraybuffer"; // frames always reach the SDK as ArrayBuffers
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this.CONNECTING = CONNECTING;
    this.OPEN = OPEN;
    this.CLOSING = CLOSING;
    this.CLOSED = CLOSED;

    this._protocols = protocols;
    this._Native = NativeWebSocket;
    this._hooks = hooks;
    this._resumeTimeoutMs = resumeTimeoutMs;
    this._reconnectMinMs = reconnectMinMs;
    this._reconnectMaxMs = reconnectMaxMs;
    this._connectTimeoutMs = connectTimeoutMs;
    this._heartbeatMs = 0; // heartbeat interval of the current connection; 0: no watchdog
    this._watchdog = null;

    this._state = CONNECTING;
    this._closeRequested = false; // the SDK (or the page through it) closed the session
    this._dropRequested = false; // drop() closed the socket: resume it
    this._resuming = false;
    this._offer = null; // token of the current connection's handshake
    this._sessionToken = null; // the session's current token; null: not resumable
    this._canisterId = null;
    this._clientPrincipal = null;
    this._clientNonce = null;
    this._lastSeq = 0n; // last canister sequence number handed to the SDK
    this._lastSentSeq = 0n; // last client sequence number the SDK sent
    this._pending = []; // {seq, frame}: ws_messages not yet confirmed by an ack or a resume
    this._queued = []; // other frames sent while the connection was down
    this.resumes = 0;
    this.resent = 0;

    this._ws = this._dial();
    this._attachFirst(this._ws);
  }

  get readyState() {
    if (this._state === CLOSED) return CLOSED;
    if (this._closeRequested) return CLOSING;
    return this._state;
  }

  // resumable tells whether the gateway offered resume and the session is open.
  get resumable() {
    return this._sessionToken !== null;
  }

  get lastSeq() {
    return this._lastSeq;
  }

  get pendingCount() {
    return this._pending.length;
  }

  send(data) {
    if (this._state === CLOSED || this._closeRequested) return;
    if (this._state === CONNECTING) throw new DOMException("WebSocket is not open", "InvalidStateError");
    const kept = this._inspectOutgoing(data);
    if (this._resuming) {
      // ws_messages are kept in _pending and re-sent on resume; anything else waits here.
      if (!kept) this._queued.push(data);
      return;
    }
    this._ws.send(data);
  }

  close(code = 1000, reason = "") {
    if (this._state === CLOSED || this._closeRequested) return;
    this._closeRequested = true;
    if (this._resuming) {
      this._finish(closeEvent(code, reason, true));
      return;
    }
    this._ws.close(code, reason);
  }

  // drop closes the current socket as a lost connection would: a resumable session is resumed,
  // any other one ends.
  drop() {
    if (this._state !== OPEN || this._resuming || this._closeRequested) return false;
    this._dropRequested = true;
    this._ws.close(CLOSE_DEMO_DROP, "icws demo: connection dropped");
    return true;
  }

  _dial() {
    const ws = new this._Native(this.url, this._protocols);
    ws.binaryType = "arraybuffer";
    return ws;
  }

  _attachFirst(ws) {
    let handshakeSeen = false;
    ws.onopen = (ev) => {
      this._state = OPEN;
      if (this.onopen) this.onopen(ev);
    };
    ws.onmessage = (ev) => {
      if (!handshakeSeen) {
        handshakeSeen = true;
        let offer = null;
        try {
          offer = resumeOffer(Cbor.decode(ev.data));
        } catch {
          offer = null; // not ours to judge: the SDK rejects a bad handshake
        }
        this._offer = offer ? offer.token : null;
        this._heartbeatMs = offer ? offer.heartbeatMs : 0;
        this._feedWatchdog(ws);
        if (this.onmessage) this.onmessage(new MessageEvent("message", { data: ev.data }));
        return;
      }
      this._receive(ws, ev.data);
    };
    this._attachLive(ws, false);
  }

  // _receive feeds the watchdog and hands everything but heartbeats to the SDK.
  _receive(ws, data) {
    this._feedWatchdog(ws);
    if (isHeartbeat(data)) return;
    this._deliver(data);
  }

  // _feedWatchdog restarts the silence watchdog of ws: nothing for twice the heartbeat interval
  // means the gateway hung or the network dropped the connection without a close, and the session
  // is resumed on a new connection (which a load balancer sends to a healthy gateway).
  //
  // When the timer fires, the page may itself have been busy (a long task, a throttled tab) while
  // frames waited to be handled: the connection is given up only if nothing arrives during one more
  // short grace period, which lets queued message events run first.
  _feedWatchdog(ws) {
    if (this._watchdog !== null) clearTimeout(this._watchdog);
    this._watchdog = null;
    if (this._heartbeatMs <= 0 || ws !== this._ws) return;
    const window = 2 * this._heartbeatMs;
    const grace = Math.max(50, this._heartbeatMs / 4);
    const gone = () => ws !== this._ws || this._state !== OPEN || this._resuming || this._closeRequested || !this.resumable;
    this._watchdog = setTimeout(() => {
      if (gone()) return;
      this._watchdog = setTimeout(() => {
        this._watchdog = null;
        if (gone()) return;
        this._abandon(ws);
        void this._resume(closeEvent(CLOSE_SILENT, "icws: nothing from the gateway for " + window + " ms", false));
      }, grace);
    }, window);
  }

  // _abandon stops listening to ws and closes it without waiting for the gateway's answer.
  _abandon(ws) {
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    try {
      ws.close(CLOSE_DEMO_DROP, "icws: gateway silent");
    } catch {
      // already closing
    }
  }

  // _attachLive wires close and error handling of the connection that carries the session.
  _attachLive(ws, resumed) {
    if (resumed) ws.onmessage = (ev) => this._receive(ws, ev.data);
    ws.onerror = (ev) => {
      // A drop of a resumable session is handled by the close that follows.
      if (!this.resumable && this.onerror) this.onerror(ev);
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws || this._state === CLOSED) return;
      const drop = this._dropRequested;
      this._dropRequested = false;
      if (!this._closeRequested && this.resumable && (drop || RESUMABLE_CLOSES.has(ev.code))) {
        void this._resume(ev);
        return;
      }
      this._finish(ev);
    };
  }

  _finish(ev) {
    if (this._watchdog !== null) clearTimeout(this._watchdog);
    this._watchdog = null;
    this._state = CLOSED;
    this._resuming = false;
    this._pending = [];
    this._queued = [];
    if (this.onclose) this.onclose(ev);
  }

  // _deliver hands a canister message frame to the SDK, noting its sequence number first and
  // forgetting sent messages the canister acknowledged.
  _deliver(data) {
    try {
      const frame = Cbor.decode(data);
      const msg = Cbor.decode(toBytes(frame.content));
      const seq = BigInt(msg.sequence_num);
      if (seq > this._lastSeq) this._lastSeq = seq;
      if (msg.is_service_message) {
        const svc = decodeWebsocketServiceMessageContent(toBytes(msg.content));
        if (svc.AckMessage) this._confirm(BigInt(svc.AckMessage.last_incoming_sequence_num));
      }
    } catch {
      // Left to the SDK, which closes the session on a frame it cannot use.
    }
    if (this.onmessage) this.onmessage(new MessageEvent("message", { data }));
  }

  _confirm(seq) {
    let i = 0;
    while (i < this._pending.length && this._pending[i].seq <= seq) i++;
    if (i > 0) this._pending.splice(0, i);
  }

  // _inspectOutgoing learns the session from the ws_open envelope and keeps every ws_message
  // envelope of a resumable session until it is confirmed; it returns whether it kept data.
  _inspectOutgoing(data) {
    let content;
    try {
      content = Cbor.decode(data).envelope.content;
    } catch {
      return false;
    }
    if (content.method_name === "ws_open") {
      const [arg] = IDL.decode([wsOpenArgIdl], toBytes(content.arg));
      this._canisterId = toBytes(content.canister_id);
      this._clientPrincipal = toBytes(content.sender);
      this._clientNonce = BigInt(arg.client_nonce);
      this._sessionToken = this._offer; // the offer of the connection that opens the session
    } else if (content.method_name === "ws_message" && this.resumable) {
      const [arg] = IDL.decode([wsMessageArgIdl], toBytes(content.arg));
      const seq = BigInt(arg.msg.sequence_num);
      if (seq > this._lastSentSeq) this._lastSentSeq = seq;
      this._pending.push({ seq, frame: data });
      return true;
    }
    return false;
  }

  async _resume(dropEvent) {
    this._resuming = true;
    if (this._watchdog !== null) clearTimeout(this._watchdog);
    this._watchdog = null;
    this._notify("ondrop", { code: dropEvent.code, reason: dropEvent.reason });
    const deadline = Date.now() + this._resumeTimeoutMs;
    let backoff = this._reconnectMinMs;
    // Told to go elsewhere, or given up as silent (already waited): the first attempt is at once.
    let atOnce = dropEvent.code === CLOSE_RESUME_ELSEWHERE || dropEvent.code === CLOSE_SILENT;
    for (;;) {
      const wait = atOnce ? 0 : backoff / 2 + Math.random() * (backoff / 2);
      atOnce = false;
      await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(0, deadline - Date.now()))));
      if (this._state === CLOSED) return; // closed by the SDK meanwhile
      try {
        await this._tryResume();
        return;
      } catch (err) {
        if (this._state === CLOSED) return;
        if (err.fatal || Date.now() >= deadline) {
          this._notify("onresumefailed", { code: err.code, reason: err.reason });
          this._finish(closeEvent(err.code ?? 1006, err.reason ?? "", false));
          return;
        }
      }
      backoff = Math.min(backoff * 2, this._reconnectMaxMs);
    }
  }

  // _tryResume opens one connection and resumes the session on it (RESUME.md §1.4, §1.5).
  _tryResume() {
    return new Promise((resolve, reject) => {
      const ws = this._dial();
      let step = "handshake";
      let nextOffer = null;
      // A hung gateway accepts the connection and never answers: give the attempt up. A gateway
      // that sends heartbeats answers at once, so its silence window bounds the attempt too.
      const attemptMs = this._heartbeatMs > 0 ? Math.min(this._connectTimeoutMs, 2 * this._heartbeatMs) : this._connectTimeoutMs;
      const timer = setTimeout(() => {
        if (step !== "handshake" && step !== "answer") return;
        this._abandonAttempt(ws);
        fail(false, CLOSE_SILENT, "icws: no answer from the gateway in " + attemptMs + " ms");
      }, attemptMs);
      const fail = (fatal, code, reason) => {
        clearTimeout(timer);
        step = "failed";
        reject({ fatal, code, reason });
      };
      ws.onerror = () => {}; // the close event follows
      ws.onclose = (ev) => {
        if (step === "handshake" || step === "answer") {
          const fatal = ev.code === CLOSE_NOT_RESUMABLE || ev.code === CLOSE_RESUMED_ELSEWHERE ||
            (step === "answer" && !RESUMABLE_CLOSES.has(ev.code));
          fail(fatal, ev.code, ev.reason);
        }
      };
      ws.onmessage = (ev) => {
        try {
          if (step === "handshake") {
            nextOffer = resumeOffer(Cbor.decode(ev.data));
            if (!nextOffer) {
              fail(true, 4000, "the gateway no longer offers resume");
              ws.close(1000);
              return;
            }
            ws.send(encodeCbor({
              icws_resume: {
                token: this._sessionToken,
                canister_id: this._canisterId,
                client_key: { client_principal: this._clientPrincipal, client_nonce: this._clientNonce },
                last_seq: this._lastSeq,
              },
            }));
            step = "answer";
            return;
          }
          if (step === "answer") {
            if (isHeartbeat(ev.data)) return; // the gateway is working on the answer
            const answer = Cbor.decode(ev.data);
            if (!answer || !answer.icws_resumed) throw new Error("no icws_resumed answer");
            const lastClientSeq = BigInt(answer.icws_resumed.last_client_seq);
            if (lastClientSeq > this._lastSentSeq) throw new Error(`gateway claims client message ${lastClientSeq}, last sent is ${this._lastSentSeq}`);
            step = "live";
            clearTimeout(timer);
            this._takeOver(ws, nextOffer, lastClientSeq);
            resolve();
          }
        } catch (err) {
          fail(true, 4000, `Resume failed: ${err.message ?? err}`);
          ws.close(4000, "Resume failed");
        }
      };
    });
  }

  // _takeOver makes ws the session's connection and re-sends what the gateway has not accepted,
  // in order, before anything the SDK sends next (this runs synchronously).
  _takeOver(ws, offer, lastClientSeq) {
    this._ws = ws;
    this._sessionToken = offer.token;
    this._heartbeatMs = offer.heartbeatMs;
    this._attachLive(ws, true);
    this._feedWatchdog(ws);
    this._confirm(lastClientSeq);
    let resent = 0;
    for (const p of this._pending) {
      ws.send(p.frame);
      resent++;
    }
    for (const f of this._queued) ws.send(f);
    this._queued = [];
    this._resuming = false;
    this.resumes++;
    this.resent += resent;
    this._notify("onresumed", { lastClientSeq, lastSeq: this._lastSeq, resent });
  }

  _abandonAttempt(ws) {
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    try {
      ws.close();
    } catch {
      // already closing
    }
  }

  _notify(name, info) {
    const fn = this._hooks[name];
    if (!fn) return;
    try {
      fn(info);
    } catch (err) {
      console.error(`icws resume: ${name} hook failed`, err);
    }
  }
}
