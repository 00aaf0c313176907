package icclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
)

// queryAnswer is the body of a query answer.
type queryAnswer struct {
	Status string `cbor:"status"`
	Reply  *struct {
		Arg []byte `cbor:"arg"`
	} `cbor:"reply"`
	RejectCode    uint64           `cbor:"reject_code"`
	RejectMessage string           `cbor:"reject_message"`
	ErrorCode     *string          `cbor:"error_code"`
	Signatures    []querySignature `cbor:"signatures"`
}

type querySignature struct {
	Timestamp uint64 `cbor:"timestamp"`
	Signature []byte `cbor:"signature"`
	Identity  []byte `cbor:"identity"`
}

// responseSignDomain prefixes the hash a node signs over a query answer.
var responseSignDomain = []byte("\x0Bic-response")

// Query makes a query signed by the gateway identity and verifies the node signatures of the answer
// with subnet node keys cached per effective canister. A reject is *RejectError.
func (c *Client) Query(ctx context.Context, canister principal.Principal, method string, arg []byte) ([]byte, error) {
	r := c.newRequest(RequestQuery)
	r.Canister, r.Method, r.Arg, r.Nonce = canister, method, arg, randomNonce()
	env, rid, err := SignEnvelope(c.cfg.Identity, r)
	if err != nil {
		return nil, fmt.Errorf("query %s.%s: %w", canister, method, err)
	}
	ans, err := c.do(ctx, http.MethodPost, "/api/v2/canister/"+canister.Encode()+"/query", env, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("query %s.%s: %w", canister, method, err)
	}
	a, err := decodeQueryAnswer(ans.data)
	c.release(ans) // the decoder copied what it keeps
	if err != nil {
		return nil, fmt.Errorf("query %s.%s: %w", canister, method, err)
	}
	signed, err := a.signedMap(rid)
	if err != nil {
		return nil, fmt.Errorf("query %s.%s: %w", canister, method, err)
	}
	if !c.cfg.SkipQuerySignatures {
		if err := c.verifyQuery(ctx, canister, a.Signatures, signed); err != nil {
			return nil, fmt.Errorf("query %s.%s: %w", canister, method, err)
		}
	}
	if a.Status == "rejected" {
		re := &RejectError{Code: a.RejectCode, Message: a.RejectMessage}
		if a.ErrorCode != nil {
			re.ErrorCode = *a.ErrorCode
		}
		return nil, re
	}
	return a.Reply.Arg, nil
}

func decodeQueryAnswer(body []byte) (*queryAnswer, error) {
	var a queryAnswer
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(body), &a); err != nil {
		return nil, &DecodeError{fmt.Errorf("query answer: %w", err)}
	}
	return &a, nil
}

// signedMap is the map whose hash the nodes sign, without the per-signature timestamp.
func (a *queryAnswer) signedMap(rid protocol.RequestID) (map[string]any, error) {
	m := map[string]any{"status": a.Status, "request_id": rid[:]}
	switch a.Status {
	case "replied":
		if a.Reply == nil {
			return nil, &DecodeError{errors.New("replied query answer without reply")}
		}
		if a.Reply.Arg == nil {
			a.Reply.Arg = []byte{} // an empty reply is still hashed (HashOfMap skips nil values)
		}
		m["reply"] = map[string]any{"arg": a.Reply.Arg}
	case "rejected":
		m["reject_code"] = a.RejectCode
		m["reject_message"] = a.RejectMessage
		if a.ErrorCode != nil {
			m["error_code"] = *a.ErrorCode
		}
	default:
		return nil, &DecodeError{fmt.Errorf("unexpected query answer status %q", a.Status)}
	}
	return m, nil
}

// nodeKeys are the Ed25519 keys of the nodes of the subnet that hosts a canister.
type nodeKeys struct {
	keys    map[string]ed25519.PublicKey // by node id raw bytes; nil after a failed fetch
	fetched time.Time
	err     error // why the fetch failed
}

// keyFetchHoldOff is how long a failed node-key fetch is remembered before the next attempt.
const keyFetchHoldOff = time.Second

func (c *Client) verifyQuery(ctx context.Context, canister principal.Principal, sigs []querySignature, signed map[string]any) error {
	if len(sigs) == 0 {
		return &VerificationError{errors.New("query answer has no node signatures")}
	}
	keys, err := c.nodeKeysFor(ctx, canister, false)
	if err != nil {
		return err
	}
	err = checkQuerySignatures(keys, sigs, signed, c.cfg.IngressExpiry)
	if err == nil {
		return nil
	}
	// A subnet may have gained nodes or rotated keys since the fetch: refresh once, rate-limited so
	// that a stream of bad answers does not become a stream of read_state requests.
	if time.Since(keys.fetched) < c.cfg.NodeKeyMinRefresh {
		return err
	}
	c.log.Info("query signature check failed; refreshing node keys", "canister", canister.Encode(), "err", err)
	keys, ferr := c.nodeKeysFor(ctx, canister, true)
	if ferr != nil {
		return errors.Join(err, ferr)
	}
	return checkQuerySignatures(keys, sigs, signed, c.cfg.IngressExpiry)
}

func checkQuerySignatures(keys *nodeKeys, sigs []querySignature, signed map[string]any, maxAge time.Duration) error {
	// Each signature costs a hash and an Ed25519 check: an answer may carry at most one per node
	// of the subnet, or a boundary node could make every poll cost seconds of CPU by repeating
	// one genuine signature.
	if len(sigs) > len(keys.keys) {
		return &VerificationError{fmt.Errorf("%d signatures from a subnet of %d nodes", len(sigs), len(keys.keys))}
	}
	now := time.Now()
	seen := make(map[string]bool, len(sigs))
	for i, s := range sigs {
		pk, ok := keys.keys[string(s.Identity)]
		if !ok {
			return &VerificationError{fmt.Errorf("signature %d: node %s is not in the subnet", i, principal.Principal{Raw: s.Identity})}
		}
		if seen[string(s.Identity)] {
			return &VerificationError{fmt.Errorf("signature %d: node %s signed twice", i, principal.Principal{Raw: s.Identity})}
		}
		seen[string(s.Identity)] = true
		ts := time.Unix(0, int64(s.Timestamp))
		if now.Sub(ts) > maxAge || ts.Sub(now) > maxFutureSkew {
			return &VerificationError{fmt.Errorf("signature %d: timestamp %s out of range", i, ts)}
		}
		m := make(map[string]any, len(signed)+1)
		for k, v := range signed {
			m[k] = v
		}
		m["timestamp"] = s.Timestamp
		h, err := protocol.HashOfMap(m)
		if err != nil {
			return fmt.Errorf("signature %d: hash: %w", i, err)
		}
		if !ed25519.Verify(pk, append(append([]byte{}, responseSignDomain...), h[:]...), s.Signature) {
			return &VerificationError{fmt.Errorf("signature %d by node %s does not verify", i, principal.Principal{Raw: s.Identity})}
		}
	}
	return nil
}

// nodeKeysFor returns the cached keys for canister, fetching them when missing, stale or forced.
// Concurrent fetches for the same canister are merged.
func (c *Client) nodeKeysFor(ctx context.Context, canister principal.Principal, force bool) (*nodeKeys, error) {
	id := canister.Encode()
	c.keysMu.Lock()
	k := c.keys[id]
	c.keysMu.Unlock()
	if k != nil && k.keys != nil && !force && time.Since(k.fetched) < c.cfg.NodeKeyTTL {
		return k, nil
	}
	if k != nil && k.keys == nil && time.Since(k.fetched) < keyFetchHoldOff {
		// The last fetch failed moments ago: do not turn every query into a read_state.
		return nil, fmt.Errorf("node keys for %s: %w", id, k.err)
	}
	v, err, _ := c.keysSF.Do(id, func() (any, error) {
		// Another caller may have refreshed while we waited.
		c.keysMu.Lock()
		cur := c.keys[id]
		c.keysMu.Unlock()
		if cur != nil && cur != k && cur.keys != nil && time.Since(cur.fetched) < c.cfg.NodeKeyTTL {
			return cur, nil
		}
		nk, err := c.fetchNodeKeys(ctx, canister)
		if err != nil {
			c.keysMu.Lock()
			if cur == nil || cur.keys == nil {
				c.keys[id] = &nodeKeys{fetched: time.Now(), err: err}
			}
			c.keysMu.Unlock()
			return nil, err
		}
		c.keysMu.Lock()
		c.keys[id] = nk
		c.keysMu.Unlock()
		return nk, nil
	})
	if err != nil {
		return nil, fmt.Errorf("node keys for %s: %w", id, err)
	}
	return v.(*nodeKeys), nil
}

func (c *Client) fetchNodeKeys(ctx context.Context, canister principal.Principal) (*nodeKeys, error) {
	cert, err := c.readState(ctx, canister, [][][]byte{{[]byte("subnet")}})
	if err != nil {
		return nil, err
	}
	nk, err := nodeKeysOf(cert, c.rootKey, canister)
	if err != nil {
		return nil, err
	}
	c.log.Debug("fetched subnet node keys", "canister", canister.Encode(), "nodes", len(nk.keys))
	return nk, nil
}

// nodeKeysOf reads the node keys of the subnet that signed a verified read_state [subnet]
// certificate for canister.
func nodeKeysOf(cert *certificate.Certificate, rootKey []byte, canister principal.Principal) (*nodeKeys, error) {
	// With a delegation the subnet is named in it; without one the root key signs for the subnet
	// itself, which agent-js names selfAuthenticating(root key) and agent-go the NNS subnet id.
	var candidates [][]byte
	if cert.Delegation != nil {
		candidates = [][]byte{cert.Delegation.SubnetID}
	} else {
		candidates = [][]byte{principal.NewSelfAuthenticating(rootKey).Raw, principal.MustDecode(certificate.NNSSubnetID).Raw}
	}
	var lastErr error
	for _, sid := range candidates {
		subnet := principal.Principal{Raw: sid}
		nodes, st := cert.Tree.LookupSubtree([]byte("subnet"), sid, []byte("node"))
		if st != hashtree.Found {
			lastErr = fmt.Errorf("subnet %s nodes are %s", subnet, st)
			continue
		}
		if cert.Delegation == nil {
			if err := checkRanges(cert, sid, canister); err != nil {
				lastErr = err
				continue
			}
		}
		children, _ := nodes.Children() // pruned node entries carry no key
		nk := &nodeKeys{keys: make(map[string]ed25519.PublicKey, len(children)), fetched: time.Now()}
		for _, ch := range children {
			der, st := ch.Subtree().Lookup([]byte("public_key"))
			if st != hashtree.Found {
				continue
			}
			pk, err := certificate.ParseEd25519PublicKeyDER(der)
			if err != nil {
				return nil, &VerificationError{fmt.Errorf("node %x key: %w", ch.Label(), err)}
			}
			nk.keys[string(ch.Label())] = pk
		}
		if len(nk.keys) == 0 {
			lastErr = fmt.Errorf("subnet %s lists no node keys", subnet)
			continue
		}
		return nk, nil
	}
	return nil, &VerificationError{fmt.Errorf("no node keys in read_state [subnet] answer: %w", lastErr)}
}

// checkRanges verifies, when the tree lists them, that the subnet's canister ranges hold canister.
func checkRanges(cert *certificate.Certificate, sid []byte, canister principal.Principal) error {
	ok, err := certificate.SubnetHasCanister(cert.Tree, sid, canister.Raw)
	switch {
	case errors.Is(err, certificate.ErrNoRanges):
		return nil // ranges are optional in a root-signed tree
	case err != nil:
		return fmt.Errorf("subnet %s: %w", principal.Principal{Raw: sid}, err)
	case !ok:
		return fmt.Errorf("canister %s is not in the ranges of subnet %s", canister, principal.Principal{Raw: sid})
	}
	return nil
}
