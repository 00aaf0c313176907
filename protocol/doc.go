// Package protocol holds the ic-websocket wire types shared by the gateway roles, the Go client and
// the replica simulator's canister: the Candid types of the canister interface (ic-websocket-cdk
// 0.4.1) with their codecs, the CBOR frames exchanged on the WebSocket, client keys and their
// subject-safe form, and the certificate checks a client applies to every canister message.
//
// The Candid codecs (EncodeWsOpenArgs, DecodeWsMessageArgs, DecodeGetMessagesResult, ...) are the
// only Candid code in the module that reads bytes from the network or from the IC: they decode
// with a bounded decoder that applies Candid subtyping as the CDK does, so a newer SDK or CDK that
// adds record fields still decodes.
package protocol
