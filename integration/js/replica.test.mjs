// @dfinity/agent 2.4.1 against the icws replica simulator (package replica).
// Run by `go test ./replica -run TestAgentJS`, which starts the replica and sets:
//   REPLICA_URL          base URL of the replica
//   REPLICA_CANISTER_ID  the test canister (echo/trap updates, greet query)
// The replica runs with its TEST-ONLY hooks on (Config.TestHooks): POST
// /_/control/replica/corrupt?certificates=<bool>&query_signatures=<bool> makes it corrupt every
// certificate / query signature, so we can check that the agent refuses them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HttpAgent, Actor, Certificate, lookupResultToBuffer, polling } from '@dfinity/agent';
import { IDL } from '@dfinity/candid';
import { Principal } from '@dfinity/principal';
import { Ed25519KeyIdentity, ECDSAKeyIdentity, DelegationChain, DelegationIdentity } from '@dfinity/identity';
import { Secp256k1KeyIdentity } from '@dfinity/identity-secp256k1';

const host = process.env.REPLICA_URL;
const canisterIdText = process.env.REPLICA_CANISTER_ID;
if (!host || !canisterIdText) {
  throw new Error('REPLICA_URL and REPLICA_CANISTER_ID must be set (run via go test ./replica -run TestAgentJS)');
}
const canisterId = Principal.fromText(canisterIdText);

const idlFactory = ({ IDL }) =>
  IDL.Service({
    echo: IDL.Func([IDL.Text], [IDL.Text], []),
    greet: IDL.Func([IDL.Text], [IDL.Text], ['query']),
    trap: IDL.Func([], [], []),
    whoami: IDL.Func([], [IDL.Principal], []),
  });

async function newAgent(identity) {
  return HttpAgent.create({ host, shouldFetchRootKey: true, identity, verifyQuerySignatures: true, retryTimes: 0 });
}

async function corrupt(params) {
  const res = await fetch(`${host}/_/control/replica/corrupt?${params}`, { method: 'POST' });
  assert.equal(res.status, 200, `control endpoint: ${res.status} ${await res.text()}`);
}

function decodeLeb128(buf) {
  let n = 0n;
  let shift = 0n;
  for (const b of new Uint8Array(buf)) {
    n |= BigInt(b & 0x7f) << shift;
    shift += 7n;
    if ((b & 0x80) === 0) break;
  }
  return n;
}

async function identities() {
  const root = Ed25519KeyIdentity.generate();
  const session = Ed25519KeyIdentity.generate();
  const chain = await DelegationChain.create(root, session.getPublicKey(), new Date(Date.now() + 10 * 60 * 1000), {
    targets: [canisterId],
  });
  return {
    anonymous: undefined,
    ed25519: Ed25519KeyIdentity.generate(),
    secp256k1: Secp256k1KeyIdentity.generate(),
    p256: await ECDSAKeyIdentity.generate(),
    delegation: DelegationIdentity.fromDelegation(session, chain),
  };
}

test('v3 update and verified query with every identity type', async (t) => {
  for (const [name, identity] of Object.entries(await identities())) {
    await t.test(name, async () => {
      const agent = await newAgent(identity);
      const actor = Actor.createActor(idlFactory, { agent, canisterId });
      assert.equal(await actor.echo(`hi ${name}`), `hi ${name}`);
      assert.equal(await actor.greet(name), `Hello, ${name}!`);
    });
  }
});

test('a trapping update is a certified rejection', async () => {
  const actor = Actor.createActor(idlFactory, { agent: await newAgent(Ed25519KeyIdentity.generate()), canisterId });
  await assert.rejects(actor.trap(), (err) => {
    assert.match(String(err.message), /boom/);
    assert.match(String(err.message), /IC0503/);
    return true;
  });
});

test('v2 call with polling', async () => {
  const agent = await newAgent(Ed25519KeyIdentity.generate());
  const { requestId, response } = await agent.call(canisterId, {
    methodName: 'echo',
    arg: IDL.encode([IDL.Text], ['via v2']),
    callSync: false,
  });
  assert.equal(response.status, 202);
  const { reply } = await polling.pollForResponse(agent, canisterId, requestId, polling.defaultStrategy());
  assert.deepEqual(IDL.decode([IDL.Text], reply), ['via v2']);
});

test('read_state certificate verifies with Certificate.create', async () => {
  const agent = await newAgent(undefined);
  const path = [new TextEncoder().encode('time')];
  const { certificate } = await agent.readState(canisterId, { paths: [path] });
  const cert = await Certificate.create({ certificate, rootKey: agent.rootKey, canisterId });
  const time = decodeLeb128(lookupResultToBuffer(cert.lookup(path)));
  const skewMs = Number(BigInt(Date.now()) - time / 1_000_000n);
  assert.ok(Math.abs(skewMs) < 60_000, `certified time is ${skewMs} ms off`);
});

test('a corrupted certificate is refused', async () => {
  const agent = await newAgent(Ed25519KeyIdentity.generate());
  const actor = Actor.createActor(idlFactory, { agent, canisterId });
  await corrupt('certificates=true');
  try {
    const path = [new TextEncoder().encode('time')];
    const { certificate } = await agent.readState(canisterId, { paths: [path] });
    await assert.rejects(Certificate.create({ certificate, rootKey: agent.rootKey, canisterId }), /signature/i);
    await assert.rejects(actor.echo('corrupt'));
  } finally {
    await corrupt('certificates=false');
  }
  assert.equal(await actor.echo('clean again'), 'clean again');
});

test('a corrupted query signature is refused', async () => {
  const agent = await newAgent(undefined);
  const actor = Actor.createActor(idlFactory, { agent, canisterId });
  assert.equal(await actor.greet('before'), 'Hello, before!');
  await corrupt('query_signatures=true');
  try {
    await assert.rejects(actor.greet('corrupt'));
  } finally {
    await corrupt('query_signatures=false');
  }
  assert.equal(await actor.greet('after'), 'Hello, after!');
});

// An Internet Identity login as agent-js consumes it: a DelegationChain whose root is a canister
// signature key. The replica's TEST-ONLY hook signs as the Internet Identity canister would (a
// certificate of its certified data); agent-js builds and sends the chain itself.
test('a DelegationIdentity rooted at a canister signature (Internet Identity)', async () => {
  const ii = 'rdmx6-jaaaa-aaaaa-aaadq-cai';
  const seed = Buffer.from(`user ${Date.now()} at https://app.example`).toString('hex');
  const canisterSign = async (payload) => {
    const res = await fetch(`${host}/_/control/replica/canister-signature?canister=${ii}&seed=${seed}`, { method: 'POST', body: payload });
    assert.equal(res.status, 200, `canister-signature hook: ${res.status} ${await res.clone().text()}`);
    const { public_key: publicKey, signature } = await res.json();
    const bytes = (hex) => Uint8Array.from(Buffer.from(hex, 'hex')).buffer;
    return { publicKey: bytes(publicKey), signature: bytes(signature) };
  };
  const { publicKey } = await canisterSign(new Uint8Array());
  const user = {
    getPublicKey: () => ({ toDer: () => publicKey }),
    sign: async (challenge) => (await canisterSign(new Uint8Array(challenge))).signature,
  };
  const session = Ed25519KeyIdentity.generate();
  const chain = await DelegationChain.create(user, session.getPublicKey(), new Date(Date.now() + 10 * 60 * 1000), {
    targets: [canisterId],
  });
  const identity = DelegationIdentity.fromDelegation(session, chain);
  const principal = Principal.selfAuthenticating(new Uint8Array(publicKey));
  assert.equal(identity.getPrincipal().toText(), principal.toText());
  const actor = Actor.createActor(idlFactory, { agent: await newAgent(identity), canisterId });
  assert.equal(await actor.echo('hi Internet Identity'), 'hi Internet Identity');
  assert.equal((await actor.whoami()).toText(), principal.toText());
});
