package protocol

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// Errors returned by VerifyCanisterMessage, one per check, so callers (and tests) can tell which
// check failed with errors.Is.
var (
	ErrCertificateDecode    = errors.New("certificate: undecodable")
	ErrCertificateSignature = errors.New("certificate: not signed by the root key (or its delegation)")
	ErrCertificateTime      = errors.New("certificate: time out of range")
	ErrCertifiedData        = errors.New("certified_data does not match the tree")
	ErrTreeDecode           = errors.New("tree: undecodable")
	ErrContentHash          = errors.New("content hash does not match the tree")
	ErrContentDecode        = errors.New("content: undecodable")
)

// maxCertFuture is agent-js's fixed bound for certificates from the future.
const maxCertFuture = 5 * time.Minute

// VerifyCanisterMessage checks one gateway → client frame the way ic-websocket-js 0.5.0 does
// (utils.ts isMessageBodyValid with agent-js 2.x Certificate.create), then decodes its content:
//
//  1. cert is an IC certificate signed by rootKey, directly or through a subnet delegation whose
//     canister ranges contain canister;
//  2. the certificate's time is at most maxCertAge old and at most 5 minutes in the future;
//  3. canister/<canister>/certified_data in the certificate equals the root hash of tree;
//  4. tree holds sha256(content) under ["websocket", key] (or, as a fallback, ["websocket"]).
//
// The returned message has not been checked for sequence number or client key; that is the
// caller's state. maxCertAge <= 0 means the SDK default of 5 minutes.
func VerifyCanisterMessage(msg CanisterToClientMessage, canister principal.Principal, rootKey []byte, maxCertAge time.Duration, now time.Time) (WebsocketMessage, error) {
	return verifyCanisterMessage(msg, canister, rootKey, maxCertAge, now, nil)
}

// Verifier verifies canister messages for one canister and root key like VerifyCanisterMessage,
// and remembers the last few certificates whose signature it checked: every frame of one
// ws_get_messages batch carries the same certificate, and BLS pairings are the dominant cost.
// The time check and every tree and hash check still run on each message. Safe for concurrent use.
type Verifier struct {
	Canister   principal.Principal
	RootKey    []byte
	MaxCertAge time.Duration

	mu       sync.Mutex
	verified [8][32]byte
	next     int
}

// Verify checks one frame at time now.
func (v *Verifier) Verify(msg CanisterToClientMessage, now time.Time) (WebsocketMessage, error) {
	return verifyCanisterMessage(msg, v.Canister, v.RootKey, v.MaxCertAge, now, v)
}

func (v *Verifier) known(sum [32]byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.verified {
		if s == sum {
			return true
		}
	}
	return false
}

func (v *Verifier) remember(sum [32]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.verified[v.next] = sum
	v.next = (v.next + 1) % len(v.verified)
}

func verifyCanisterMessage(msg CanisterToClientMessage, canister principal.Principal, rootKey []byte, maxCertAge time.Duration, now time.Time, cache *Verifier) (WebsocketMessage, error) {
	if maxCertAge <= 0 {
		maxCertAge = 5 * time.Minute
	}
	cert, err := decodeCertificate(msg.Cert)
	if err != nil {
		return WebsocketMessage{}, err
	}
	if err := checkCertificateTime(cert, maxCertAge, now); err != nil {
		return WebsocketMessage{}, err
	}
	if cert.Delegation != nil {
		// agent-js checks only the future bound on the delegation's certificate.
		if err := checkCertificateTime(cert.Delegation.Certificate, 0, now); err != nil {
			return WebsocketMessage{}, fmt.Errorf("delegation: %w", err)
		}
	}
	var certSum [32]byte
	if cache != nil {
		certSum = sha256.Sum256(msg.Cert)
	}
	if cache == nil || !cache.known(certSum) {
		if err := safeCall(func() error { return certification.VerifyCertificate(cert, canister, rootKey) }); err != nil {
			return WebsocketMessage{}, fmt.Errorf("%w: %w", ErrCertificateSignature, err)
		}
		if cache != nil {
			cache.remember(certSum)
		}
	}
	tree, err := decodeTree(msg.Tree)
	if err != nil {
		return WebsocketMessage{}, err
	}
	certified, err := cert.Tree.Lookup(hashtree.Label("canister"), canister.Raw, hashtree.Label("certified_data"))
	if err != nil {
		return WebsocketMessage{}, fmt.Errorf("%w: no certified_data for canister %s: %w", ErrCertifiedData, canister, err)
	}
	root := tree.Reconstruct()
	if !bytes.Equal(certified, root[:]) {
		return WebsocketMessage{}, fmt.Errorf("%w: certified_data %x, tree root %x", ErrCertifiedData, certified, root)
	}
	leaf, err := hashtree.Lookup(tree, hashtree.Label("websocket"), hashtree.Label(msg.Key))
	if err != nil {
		// ic-websocket-js accepts a leaf directly under "websocket" as a fallback.
		var fallbackErr error
		leaf, fallbackErr = hashtree.Lookup(tree, hashtree.Label("websocket"))
		if fallbackErr != nil {
			return WebsocketMessage{}, fmt.Errorf("%w: key %q not in tree: %w", ErrContentHash, msg.Key, err)
		}
	}
	sum := sha256.Sum256(msg.Content)
	if !bytes.Equal(leaf, sum[:]) {
		return WebsocketMessage{}, fmt.Errorf("%w: key %q: sha256(content) %x, tree %x", ErrContentHash, msg.Key, sum, leaf)
	}
	wm, err := DecodeWebsocketMessageCBOR(msg.Content)
	if err != nil {
		return WebsocketMessage{}, fmt.Errorf("%w: %w", ErrContentDecode, err)
	}
	return wm, nil
}

func decodeCertificate(raw []byte) (certification.Certificate, error) {
	var cert certification.Certificate
	err := safeCall(func() error { return cbor.Unmarshal(StripSelfDescribe(raw), &cert) })
	if err != nil {
		return cert, fmt.Errorf("%w: %w", ErrCertificateDecode, err)
	}
	if cert.Tree.Root == nil || len(cert.Signature) == 0 {
		return cert, fmt.Errorf("%w: tree or signature missing", ErrCertificateDecode)
	}
	if cert.Delegation != nil && cert.Delegation.Certificate.Tree.Root == nil {
		return cert, fmt.Errorf("%w: delegation without certificate", ErrCertificateDecode)
	}
	return cert, nil
}

func decodeTree(raw []byte) (hashtree.Node, error) {
	var n hashtree.Node
	err := safeCall(func() error {
		var err error
		n, err = hashtree.Deserialize(StripSelfDescribe(raw))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTreeDecode, err)
	}
	if n == nil {
		return nil, fmt.Errorf("%w: empty", ErrTreeDecode)
	}
	return n, nil
}

// checkCertificateTime applies agent-js's rule; maxAge 0 skips the lower bound.
func checkCertificateTime(cert certification.Certificate, maxAge time.Duration, now time.Time) error {
	raw, err := cert.Tree.Lookup(hashtree.Label("time"))
	if err != nil {
		return fmt.Errorf("%w: no time: %w", ErrCertificateTime, err)
	}
	ns, err := uleb128Decode(raw)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCertificateTime, err)
	}
	t := time.Unix(0, int64(ns))
	if maxAge > 0 && t.Before(now.Add(-maxAge)) {
		return fmt.Errorf("%w: signed more than %s in the past (%s, now %s)", ErrCertificateTime, maxAge, t.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	if t.After(now.Add(maxCertFuture)) {
		return fmt.Errorf("%w: signed more than %s in the future (%s, now %s)", ErrCertificateTime, maxCertFuture, t.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

func uleb128Decode(b []byte) (uint64, error) {
	var v uint64
	for i, c := range b {
		if i == 9 && c > 1 {
			return 0, errors.New("time: LEB128 overflows 64 bits")
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if i != len(b)-1 {
				return 0, errors.New("time: trailing bytes after LEB128")
			}
			return v, nil
		}
	}
	return 0, errors.New("time: truncated LEB128")
}

// safeCall turns a panic in agent-go's decoders (which index into untrusted input) into an error.
func safeCall(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed input: %v", r)
		}
	}()
	return f()
}
