// Package protocol holds the ic-websocket wire types shared by the gateway roles, the Go client and
// the replica simulator's canister: the Candid types of the canister interface (ic-websocket-cdk
// 0.4.1), the CBOR frames exchanged on the WebSocket, client keys and their subject-safe form, and
// the certificate checks a client applies to every canister message.
package protocol
