// A minimal CBOR encoder for the one frame the page writes itself, the icws resume request.
// @dfinity/agent's Cbor.encode writes every bigint as a tagged bignum, but the resume frame's
// numbers (client_nonce, last_seq) must be plain unsigned integers (CBOR major type 0).

const SELF_DESCRIBE = Uint8Array.of(0xd9, 0xd9, 0xf7); // tag 55799

// encodeCbor encodes maps (plain objects), text strings, byte strings (Uint8Array) and unsigned
// integers (number or bigint), prefixed with the self-describe tag.
export function encodeCbor(value) {
  const out = [...SELF_DESCRIBE];
  writeValue(out, value);
  return Uint8Array.from(out);
}

function writeValue(out, v) {
  if (v instanceof Uint8Array) {
    writeHead(out, 2, BigInt(v.length));
    for (const b of v) out.push(b);
  } else if (typeof v === "string") {
    const bytes = new TextEncoder().encode(v);
    writeHead(out, 3, BigInt(bytes.length));
    for (const b of bytes) out.push(b);
  } else if (typeof v === "bigint" || typeof v === "number") {
    const n = BigInt(v);
    if (n < 0n || n >= 1n << 64n) throw new RangeError(`cbor: ${v} is not a uint64`);
    writeHead(out, 0, n);
  } else if (v !== null && typeof v === "object") {
    const entries = Object.entries(v);
    writeHead(out, 5, BigInt(entries.length));
    for (const [k, val] of entries) {
      writeValue(out, k);
      writeValue(out, val);
    }
  } else {
    throw new TypeError(`cbor: cannot encode ${typeof v}`);
  }
}

// writeHead writes a major type with its argument in the shortest form.
function writeHead(out, major, n) {
  const m = major << 5;
  if (n < 24n) {
    out.push(m | Number(n));
    return;
  }
  let size;
  let info;
  if (n < 1n << 8n) [size, info] = [1, 24];
  else if (n < 1n << 16n) [size, info] = [2, 25];
  else if (n < 1n << 32n) [size, info] = [4, 26];
  else [size, info] = [8, 27];
  out.push(m | info);
  for (let i = size - 1; i >= 0; i--) out.push(Number((n >> BigInt(8 * i)) & 0xffn));
}
