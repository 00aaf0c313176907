package replica

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/aviate-labs/secp256k1"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/protocol"
)

// Limits of ingress validation, as in dfinity/ic rs/limits and the interface spec.
const (
	maxNonceBytes     = 32
	maxDelegations    = 20
	maxTargets        = 1000
	anonymousSenderID = 0x04
	maxPrincipalBytes = 29
)

var (
	ed25519DERPrefix   = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
	secp256k1DERPrefix = []byte{0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00}
	p256DERPrefix      = []byte{0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00}
	requestDomain      = []byte("\x0Aic-request")
	delegationDomain   = []byte("\x1Aic-request-auth-delegation")
)

// httpError is a refusal answered as text/plain with the IC's status code.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d: %s", e.status, e.msg) }

func badRequest(format string, args ...any) *httpError {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// decMode decodes agent input: duplicate map keys are refused, non-minimal integers (agent-js
// ingress_expiry) are accepted by fxamacker's default.
var decMode, _ = cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF}.DecMode()

type envelope struct {
	Content          cbor.RawMessage    `cbor:"content"`
	SenderPubKey     []byte             `cbor:"sender_pubkey"`
	SenderSig        []byte             `cbor:"sender_sig"`
	SenderDelegation []signedDelegation `cbor:"sender_delegation"`
}

type signedDelegation struct {
	Delegation cbor.RawMessage `cbor:"delegation"`
	Signature  []byte          `cbor:"signature"`
}

type delegation struct {
	PubKey     []byte    `cbor:"pubkey"`
	Expiration uint64    `cbor:"expiration"`
	Targets    *[][]byte `cbor:"targets"`
}

// ingress is a validated request.
type ingress struct {
	id          protocol.RequestID
	requestType string
	sender      principal.Principal
	expiry      time.Time
	canisterID  principal.Principal
	hasCanister bool
	method      string
	arg         []byte
	paths       [][][]byte
	// targets restricts which canisters the delegation chain allows; nil means any.
	targets [][]byte
}

func (in *ingress) targetAllowed(canister principal.Principal) bool {
	if in.targets == nil {
		return true
	}
	for _, t := range in.targets {
		if bytes.Equal(t, canister.Raw) {
			return true
		}
	}
	return false
}

// validation holds the knobs of ingress validation.
type validation struct {
	maxTTL time.Duration
	drift  time.Duration
}

// validate decodes and authenticates an envelope as the IC's ingress validator does.
func (v validation) validate(body []byte, wantType string, ecid principal.Principal, now time.Time) (*ingress, *httpError) {
	var env envelope
	if err := decMode.Unmarshal(protocol.StripSelfDescribe(body), &env); err != nil {
		return nil, badRequest("Could not parse body as %s message: %v", wantType, err)
	}
	if len(env.Content) == 0 {
		return nil, badRequest("Could not parse body as %s message: missing field `content`", wantType)
	}
	in, herr := decodeContent(env.Content, wantType)
	if herr != nil {
		return nil, herr
	}
	if in.hasCanister && !in.canisterID.Equal(ecid) {
		return nil, badRequest("Specified CanisterId %s does not match effective canister id in URL %s", in.canisterID, ecid)
	}
	minExpiry, maxExpiry := now, now.Add(v.maxTTL+v.drift)
	if in.expiry.Before(minExpiry) || in.expiry.After(maxExpiry) {
		return nil, badRequest("Invalid request expiry: Specified ingress_expiry not within expected range: Minimum allowed expiry: %s, Maximum allowed expiry: %s, Provided expiry: %s",
			minExpiry.UTC().Format(time.RFC3339Nano), maxExpiry.UTC().Format(time.RFC3339Nano), in.expiry.UTC().Format(time.RFC3339Nano))
	}
	if herr := v.authenticate(in, &env, now); herr != nil {
		return nil, herr
	}
	return in, nil
}

func decodeContent(raw []byte, wantType string) (*ingress, *httpError) {
	var fields map[string]cbor.RawMessage
	if err := decMode.Unmarshal(protocol.StripSelfDescribe(raw), &fields); err != nil {
		return nil, badRequest("Could not parse body as %s message: content: %v", wantType, err)
	}
	id, err := protocol.RequestIDOfContent(raw)
	if err != nil {
		return nil, badRequest("Could not parse body as %s message: %v", wantType, err)
	}
	in := &ingress{id: id}
	field := func(name string, out any, required bool) *httpError {
		b, ok := fields[name]
		if !ok {
			if required {
				return badRequest("Could not parse body as %s message: missing field `%s`", wantType, name)
			}
			return nil
		}
		if err := decMode.Unmarshal(b, out); err != nil {
			return badRequest("Could not parse body as %s message: invalid field `%s`: %v", wantType, name, err)
		}
		return nil
	}
	if herr := field("request_type", &in.requestType, true); herr != nil {
		return nil, herr
	}
	if in.requestType != wantType {
		return nil, badRequest("Could not parse body as %s message: request_type is %q", wantType, in.requestType)
	}
	var sender []byte
	var expiry uint64
	var nonce []byte
	if herr := errs(
		field("sender", &sender, true),
		field("ingress_expiry", &expiry, true),
		field("nonce", &nonce, false),
	); herr != nil {
		return nil, herr
	}
	if len(nonce) > maxNonceBytes {
		return nil, badRequest("Invalid nonce: nonce of %d bytes exceeds the maximum of %d bytes", len(nonce), maxNonceBytes)
	}
	if len(sender) > maxPrincipalBytes {
		return nil, badRequest("Could not parse body as %s message: sender of %d bytes is not a principal", wantType, len(sender))
	}
	in.sender = principal.Principal{Raw: sender}
	if expiry > uint64(1<<63-1) {
		return nil, badRequest("Invalid request expiry: %d is out of range", expiry)
	}
	in.expiry = time.Unix(0, int64(expiry))
	switch wantType {
	case "call", "query":
		var canister []byte
		if herr := errs(
			field("canister_id", &canister, true),
			field("method_name", &in.method, true),
			field("arg", &in.arg, true),
		); herr != nil {
			return nil, herr
		}
		in.canisterID, in.hasCanister = principal.Principal{Raw: canister}, true
		if in.arg == nil {
			in.arg = []byte{}
		}
	case "read_state":
		if herr := field("paths", &in.paths, true); herr != nil {
			return nil, herr
		}
	}
	return in, nil
}

func errs(list ...*httpError) *httpError {
	for _, e := range list {
		if e != nil {
			return e
		}
	}
	return nil
}

func (v validation) authenticate(in *ingress, env *envelope, now time.Time) *httpError {
	anonymous := len(in.sender.Raw) == 1 && in.sender.Raw[0] == anonymousSenderID
	if env.SenderPubKey == nil && env.SenderSig == nil && env.SenderDelegation == nil {
		if !anonymous {
			return badRequest("Invalid signature: Missing signature for non-anonymous sender %s", in.sender)
		}
		return nil
	}
	if anonymous {
		return badRequest("Invalid signature: The anonymous user must not send a public key, signature or delegation")
	}
	if env.SenderPubKey == nil || env.SenderSig == nil {
		return badRequest("Invalid signature: sender_pubkey and sender_sig must both be present")
	}
	if want := principal.NewSelfAuthenticating(env.SenderPubKey); !want.Equal(in.sender) {
		return badRequest("Invalid signature: The user id %s does not match the public key %x", in.sender, env.SenderPubKey)
	}
	if len(env.SenderDelegation) > maxDelegations {
		return badRequest("Invalid delegation: Chain of delegations is too long: got %d delegations, but at most %d are allowed", len(env.SenderDelegation), maxDelegations)
	}
	key := env.SenderPubKey
	seen := map[string]bool{string(key): true}
	for i, sd := range env.SenderDelegation {
		var d delegation
		if err := decMode.Unmarshal(sd.Delegation, &d); err != nil || d.PubKey == nil {
			return badRequest("Invalid delegation: delegation %d is malformed: %v", i, err)
		}
		h, err := protocol.RequestIDOfContent(sd.Delegation)
		if err != nil {
			return badRequest("Invalid delegation: delegation %d: %v", i, err)
		}
		msg := append(append([]byte{}, delegationDomain...), h[:]...)
		if err := verifySignature(key, msg, sd.Signature); err != nil {
			return badRequest("Invalid delegation: Invalid signature of delegation %d: %v", i, err)
		}
		if d.Expiration < uint64(now.UnixNano()) {
			return badRequest("Invalid delegation: Delegation %d has expired: expiration %s is before the current time %s",
				i, time.Unix(0, int64(min(d.Expiration, 1<<63-1))).UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
		}
		if seen[string(d.PubKey)] {
			return badRequest("Invalid delegation: Chain of delegations contains a cycle: public key %x appears twice", d.PubKey)
		}
		seen[string(d.PubKey)] = true
		if d.Targets != nil {
			if len(*d.Targets) > maxTargets {
				return badRequest("Invalid delegation: delegation %d has %d targets, at most %d are allowed", i, len(*d.Targets), maxTargets)
			}
			in.targets = intersect(in.targets, *d.Targets)
		}
		key = d.PubKey
	}
	msg := append(append([]byte{}, requestDomain...), in.id[:]...)
	if err := verifySignature(key, msg, env.SenderSig); err != nil {
		return badRequest("Invalid signature: Invalid basic signature: %v", err)
	}
	if in.hasCanister && !in.targetAllowed(in.canisterID) {
		return badRequest("Invalid delegation: Canister %s is not one of the delegation targets", in.canisterID)
	}
	return nil
}

// intersect narrows the allowed targets by one delegation's list.
func intersect(have, next [][]byte) [][]byte {
	if have == nil {
		return append([][]byte{}, next...)
	}
	out := [][]byte{}
	for _, h := range have {
		for _, n := range next {
			if bytes.Equal(h, n) {
				out = append(out, h)
				break
			}
		}
	}
	return out
}

// verifySignature checks sig over msg by a DER public key: Ed25519, ECDSA secp256k1 or ECDSA P-256
// (r‖s over sha256, high S accepted as the IC does).
func verifySignature(pubDER, msg, sig []byte) error {
	switch {
	case len(pubDER) == len(ed25519DERPrefix)+ed25519.PublicKeySize && bytes.HasPrefix(pubDER, ed25519DERPrefix):
		if len(sig) != ed25519.SignatureSize {
			return fmt.Errorf("ed25519 signature of %d bytes", len(sig))
		}
		if !ed25519.Verify(ed25519.PublicKey(pubDER[len(ed25519DERPrefix):]), msg, sig) {
			return errors.New("ed25519 signature verification failed")
		}
		return nil
	case len(pubDER) == len(secp256k1DERPrefix)+65 && bytes.HasPrefix(pubDER, secp256k1DERPrefix):
		pk, err := secp256k1.ParsePubKey(pubDER[len(secp256k1DERPrefix):], secp256k1.S256())
		if err != nil {
			return fmt.Errorf("secp256k1 public key: %w", err)
		}
		r, s, err := splitRS(sig)
		if err != nil {
			return err
		}
		h := sha256.Sum256(msg)
		if !(&secp256k1.Signature{R: r, S: s}).Verify(h[:], pk) {
			return errors.New("secp256k1 signature verification failed")
		}
		return nil
	case len(pubDER) == len(p256DERPrefix)+65 && bytes.HasPrefix(pubDER, p256DERPrefix):
		key, err := x509.ParsePKIXPublicKey(pubDER)
		if err != nil {
			return fmt.Errorf("P-256 public key: %w", err)
		}
		pk, ok := key.(*ecdsa.PublicKey)
		if !ok || pk.Curve != elliptic.P256() {
			return errors.New("P-256 public key expected")
		}
		r, s, err := splitRS(sig)
		if err != nil {
			return err
		}
		h := sha256.Sum256(msg)
		if !ecdsa.Verify(pk, h[:], r, s) {
			return errors.New("P-256 signature verification failed")
		}
		return nil
	default:
		return fmt.Errorf("unsupported public key %x", pubDER)
	}
}

func splitRS(sig []byte) (*big.Int, *big.Int, error) {
	if len(sig) != 64 {
		return nil, nil, fmt.Errorf("ECDSA signature of %d bytes, want 64 (r‖s)", len(sig))
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, nil, errors.New("ECDSA signature with zero r or s")
	}
	return r, s, nil
}
