// Package protocol holds the ic-websocket wire types shared by the gateway roles, the Go client and
// the replica simulator's canister: the Candid types of the canister interface (ic-websocket-cdk
// 0.4.1) with their codecs, the CBOR frames exchanged on the WebSocket with one codec each, client
// keys and their subject-safe form, the certificate checks a client applies to every canister
// message, and the IC's ingress verification of signed envelopes (IngressPolicy: every key type
// the IC accepts, canister signatures of Internet Identity users against the IC root key), which
// the edge applies to every client frame and the replica simulator to every request.
//
// Every decoder here reads network input in a bounded mode: CBOR with duplicate map keys refused
// and nesting, array and map sizes bounded; Candid (EncodeWsOpenArgs, DecodeWsMessageArgs,
// DecodeGetMessagesResult, ...) through a bounded decoder that applies Candid subtyping as the CDK
// does, so a newer SDK or CDK that adds record fields still decodes. Nothing is allocated from a
// length the input does not hold.
package protocol
