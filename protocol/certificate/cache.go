package certificate

import (
	"crypto/sha256"
	"fmt"
	"sync"

	bls12381 "github.com/consensys/gnark-crypto/ecc/bls12-381"
)

// KeyCache remembers what verifying certificates of one subnet repeats for every certificate: the
// parsed root key (decompressing a G2 point and checking its subgroup) and each delegation whose
// signature verified (a BLS pairing check, as expensive as the certificate's own), and for each of
// these keys the Miller-loop lines of its fixed point, so that the pairing checks of later
// signatures skip the G2 arithmetic. A gateway
// verifies a certificate for every update call it relays and a client for every batch of
// messages; all of them carry the same delegation until the subnet's key rotates. Safe for
// concurrent use; the zero value is ready.
type KeyCache struct {
	mu    sync.Mutex
	negG2 *millerLines
	roots [2]cachedKey
	dels  [8]cachedKey
	nextR int
	nextD int
}

// cachedKey is a parsed key and its lines under the hash of what proved it.
type cachedKey struct {
	id    [32]byte
	key   *bls12381.G2Affine
	fixed *fixedKeys
}

func (k *KeyCache) lookup(entries []cachedKey, id [32]byte) (cachedKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range entries {
		if e.key != nil && e.id == id {
			return e, true
		}
	}
	return cachedKey{}, false
}

// remember makes the entry for key, computing its lines (and those of -g2 on first use).
func (k *KeyCache) remember(id [32]byte, key *bls12381.G2Affine) cachedKey {
	lines := bls12381.PrecomputeLines(*key)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.negG2 == nil {
		neg := bls12381.PrecomputeLines(negG2())
		k.negG2 = &neg
	}
	return cachedKey{id: id, key: key, fixed: &fixedKeys{negG2: k.negG2, pk: &lines}}
}

func (k *KeyCache) rootKey(der []byte) (cachedKey, error) {
	id := sha256.Sum256(der)
	if e, ok := k.lookup(k.roots[:], id); ok {
		return e, nil
	}
	key, err := parseBLSKeyDER(der)
	if err != nil {
		return cachedKey{}, err
	}
	e := k.remember(id, key)
	k.mu.Lock()
	k.roots[k.nextR] = e
	k.nextR = (k.nextR + 1) % len(k.roots)
	k.mu.Unlock()
	return e, nil
}

// delegationID identifies what a delegation's check depends on: the root key that signed it and
// its certificate (tree root hash and signature) for its subnet.
func delegationID(root []byte, d *Delegation) [32]byte {
	h := sha256.New()
	digest := d.Certificate.Tree.Digest()
	for _, part := range [][]byte{root, d.SubnetID, digest[:], d.Certificate.Signature} {
		var n [8]byte
		for i, l := 0, uint64(len(part)); i < 8; i++ {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write(part)
	}
	var id [32]byte
	h.Sum(id[:0])
	return id
}

// VerifyCached is Verify with what cache remembers: a delegation verified before is not checked
// again except for its scope (the canister ranges, which depend on canister). A nil cache is
// Verify.
func (c *Certificate) VerifyCached(cache *KeyCache, rootKey, canister []byte) error {
	if cache == nil {
		return c.Verify(rootKey, canister)
	}
	signer, err := cache.rootKey(rootKey)
	if err != nil {
		return fmt.Errorf("root key: %w", err)
	}
	if d := c.Delegation; d != nil {
		if d.Certificate == nil || d.Certificate.Delegation != nil {
			return fmt.Errorf("%w: no certificate, or a nested delegation", ErrDelegation)
		}
		id := delegationID(rootKey, d)
		if sub, ok := cache.lookup(cache.dels[:], id); ok {
			if err := d.checkScope(canister); err != nil {
				return err
			}
			signer = sub
		} else {
			key, err := d.verifyWith(signer.key, signer.fixed, canister)
			if err != nil {
				return err
			}
			signer = cache.remember(id, key)
			cache.mu.Lock()
			cache.dels[cache.nextD] = signer
			cache.nextD = (cache.nextD + 1) % len(cache.dels)
			cache.mu.Unlock()
		}
	}
	return c.verifySignatureWith(signer.key, signer.fixed)
}
