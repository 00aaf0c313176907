package protocol

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
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
// and remembers what it verified: the last few certificates whose signature it checked and the
// subnet delegations they carry (BLS pairings are the dominant cost), the last certificate it decoded with its certified_data, and
// the last tree it decoded and matched. Every frame of one ws_get_messages batch carries the same
// certificate, and either the batch's tree or (from an icws gateway) its own message's witness;
// only the tree is then decoded and hashed per frame. The time check, the content hash and the
// content decoding still run on each message. Safe for concurrent use.
type Verifier struct {
	Canister   principal.Principal
	RootKey    []byte
	MaxCertAge time.Duration

	keys     certificate.KeyCache // root key and delegations, shared by every certificate
	mu       sync.Mutex
	verified [8][32]byte
	next     int
	cert     *verifiedCert
	batch    *verifiedBatch
}

// verifiedCert is a certificate whose signature verified, with the bytes it was decoded from and
// the canister's certified_data in it.
type verifiedCert struct {
	raw       []byte
	cert      *certificate.Certificate
	certified []byte
}

// verifiedBatch is a verified certificate and a tree whose root hash is its certified_data, with
// the bytes the tree was decoded from.
type verifiedBatch struct {
	*verifiedCert
	rawTree []byte
	tree    *hashtree.Node
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

// last returns the last batch if msg has its certificate and tree, else the last certificate if
// msg has it.
func (v *Verifier) last(msg CanisterToClientMessage) (*verifiedBatch, *verifiedCert) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if b := v.batch; b != nil && bytes.Equal(b.raw, msg.Cert) && bytes.Equal(b.rawTree, msg.Tree) {
		return b, b.verifiedCert
	}
	if c := v.cert; c != nil && bytes.Equal(c.raw, msg.Cert) {
		return nil, c
	}
	return nil, nil
}

func (v *Verifier) rememberBatch(b *verifiedBatch) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.batch, v.cert = b, b.verifiedCert
}

func verifyCanisterMessage(msg CanisterToClientMessage, canister principal.Principal, rootKey []byte, maxCertAge time.Duration, now time.Time, cache *Verifier) (WebsocketMessage, error) {
	if maxCertAge <= 0 {
		maxCertAge = 5 * time.Minute
	}
	var batch *verifiedBatch
	var cert *verifiedCert
	if cache != nil {
		batch, cert = cache.last(msg)
	}
	if cert == nil {
		var err error
		if cert, err = verifyCertificate(msg.Cert, canister, rootKey, maxCertAge, now, cache); err != nil {
			return WebsocketMessage{}, err
		}
		if cache != nil {
			cert.raw = bytes.Clone(msg.Cert)
		}
	} else if err := checkTimes(cert.cert, maxCertAge, now); err != nil {
		return WebsocketMessage{}, err
	}
	if batch == nil {
		tree, err := verifyTree(msg.Tree, cert.certified, canister)
		if err != nil {
			return WebsocketMessage{}, err
		}
		batch = &verifiedBatch{verifiedCert: cert, tree: tree}
		if cache != nil {
			batch.rawTree = bytes.Clone(msg.Tree)
			cache.rememberBatch(batch)
		}
	}
	leaf, st := batch.tree.Lookup([]byte("websocket"), []byte(msg.Key))
	if st != hashtree.Found {
		// ic-websocket-js accepts a leaf directly under "websocket" as a fallback.
		var fallback hashtree.LookupStatus
		if leaf, fallback = batch.tree.Lookup([]byte("websocket")); fallback != hashtree.Found {
			return WebsocketMessage{}, fmt.Errorf("%w: key %q is %s in the tree", ErrContentHash, msg.Key, st)
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

// verifyCertificate runs checks 1 and 2 of VerifyCanisterMessage and reads the canister's
// certified_data.
func verifyCertificate(raw []byte, canister principal.Principal, rootKey []byte, maxCertAge time.Duration, now time.Time, cache *Verifier) (*verifiedCert, error) {
	cert, err := certificate.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCertificateDecode, err)
	}
	if err := checkTimes(cert, maxCertAge, now); err != nil {
		return nil, err
	}
	var certSum [32]byte
	if cache != nil {
		certSum = sha256.Sum256(raw)
	}
	if cache == nil || !cache.known(certSum) {
		var keys *certificate.KeyCache
		if cache != nil {
			keys = &cache.keys
		}
		if err := cert.VerifyCached(keys, rootKey, canister.Raw); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCertificateSignature, err)
		}
		if cache != nil {
			cache.remember(certSum)
		}
	}
	certified, st := cert.Tree.Lookup([]byte("canister"), canister.Raw, []byte("certified_data"))
	if st != hashtree.Found {
		return nil, fmt.Errorf("%w: certified_data of canister %s is %s in the certificate", ErrCertifiedData, canister, st)
	}
	return &verifiedCert{cert: cert, certified: certified}, nil
}

// verifyTree runs check 3 of VerifyCanisterMessage: the tree's root hash is certified.
func verifyTree(raw, certified []byte, canister principal.Principal) (*hashtree.Node, error) {
	tree, err := hashtree.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTreeDecode, err)
	}
	root := tree.Digest()
	if !bytes.Equal(certified, root[:]) {
		return nil, fmt.Errorf("%w: certified_data %x, tree root %x", ErrCertifiedData, certified, root)
	}
	return tree, nil
}

// checkTimes checks the certificate's time and, if it has one, the delegation's (agent-js checks
// only the future bound on the delegation's certificate).
func checkTimes(cert *certificate.Certificate, maxCertAge time.Duration, now time.Time) error {
	if err := checkCertificateTime(cert, maxCertAge, now); err != nil {
		return err
	}
	if cert.Delegation != nil {
		if err := checkCertificateTime(cert.Delegation.Certificate, 0, now); err != nil {
			return fmt.Errorf("delegation: %w", err)
		}
	}
	return nil
}

// checkCertificateTime applies agent-js's rule; maxAge 0 skips the lower bound.
func checkCertificateTime(cert *certificate.Certificate, maxAge time.Duration, now time.Time) error {
	t, err := cert.Time()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCertificateTime, err)
	}
	if maxAge > 0 && t.Before(now.Add(-maxAge)) {
		return fmt.Errorf("%w: signed more than %s in the past (%s, now %s)", ErrCertificateTime, maxAge, t.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	if t.After(now.Add(maxCertFuture)) {
		return fmt.Errorf("%w: signed more than %s in the future (%s, now %s)", ErrCertificateTime, maxCertFuture, t.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	return nil
}
