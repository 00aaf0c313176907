// Package certificate decodes and verifies IC certificates (the IC interface specification,
// section Certification): a hash tree, a BLS signature over its root hash by the root key or by a
// subnet key, and the delegation that vouches for that subnet key. The decoder is bounded like
// the hash tree decoder and never panics on what the network sends.
package certificate

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/icws/icws/protocol/hashtree"
	"github.com/icws/icws/protocol/internal/cborread"
	"github.com/icws/icws/protocol/internal/cborwrite"
)

// Certificate is a decoded certificate.
type Certificate struct {
	Tree      *hashtree.Node
	Signature []byte
	// Delegation is nil for a certificate signed by the root key.
	Delegation *Delegation
}

// Delegation names the subnet whose key signed a certificate and carries the root-signed
// certificate that publishes that key and the subnet's canister ranges.
type Delegation struct {
	SubnetID []byte
	// Certificate never has a delegation itself: Decode refuses nested delegations.
	Certificate *Certificate
}

// MaxInputBytes is the largest encoding Decode accepts (the largest IC answer icws reads).
const MaxInputBytes = hashtree.MaxInputBytes

// ErrMalformed is returned (wrapped) by Decode for anything that is not a certificate.
var ErrMalformed = errors.New("certificate: malformed")

// Decode parses a CBOR certificate, with or without a leading self-describe tag. Unknown map
// keys are skipped. The returned certificate does not alias data.
func Decode(data []byte) (*Certificate, error) {
	if len(data) > MaxInputBytes {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrMalformed, len(data), MaxInputBytes)
	}
	c, err := decode(copyOf(data), true)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func copyOf(b []byte) []byte { return append([]byte(nil), b...) }

func decode(data []byte, allowDelegation bool) (*Certificate, error) {
	r := cborread.New(data)
	r.SkipSelfDescribe()
	pairs, err := r.MapHeader()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	c := &Certificate{}
	var sawTree, sawSignature, sawDelegation bool
	once := func(seen *bool, key []byte) error {
		if *seen {
			return fmt.Errorf("%w: duplicate key %q", ErrMalformed, key)
		}
		*seen = true
		return nil
	}
	for range pairs {
		key, err := r.Text()
		if err != nil {
			return nil, fmt.Errorf("%w: key: %w", ErrMalformed, err)
		}
		switch string(key) {
		case "tree":
			if err := once(&sawTree, key); err != nil {
				return nil, err
			}
			if c.Tree, err = hashtree.DecodeFrom(r); err != nil {
				return nil, fmt.Errorf("%w: tree: %w", ErrMalformed, err)
			}
		case "signature":
			if err := once(&sawSignature, key); err != nil {
				return nil, err
			}
			if c.Signature, err = r.Bytes(); err != nil {
				return nil, fmt.Errorf("%w: signature: %w", ErrMalformed, err)
			}
		case "delegation":
			if err := once(&sawDelegation, key); err != nil {
				return nil, err
			}
			if r.PeekNull() {
				continue
			}
			if !allowDelegation {
				return nil, fmt.Errorf("%w: the delegation's certificate has a delegation itself", ErrMalformed)
			}
			if c.Delegation, err = decodeDelegation(r); err != nil {
				return nil, err
			}
		default:
			if err := r.Skip(); err != nil {
				return nil, fmt.Errorf("%w: value of %q: %w", ErrMalformed, key, err)
			}
		}
	}
	if err := r.End(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if c.Tree == nil || c.Signature == nil {
		return nil, fmt.Errorf("%w: tree or signature missing", ErrMalformed)
	}
	return c, nil
}

func decodeDelegation(r *cborread.Reader) (*Delegation, error) {
	pairs, err := r.MapHeader()
	if err != nil {
		return nil, fmt.Errorf("%w: delegation: %w", ErrMalformed, err)
	}
	d := &Delegation{}
	var inner []byte
	for range pairs {
		key, err := r.Text()
		if err != nil {
			return nil, fmt.Errorf("%w: delegation key: %w", ErrMalformed, err)
		}
		switch string(key) {
		case "subnet_id":
			if d.SubnetID != nil {
				return nil, fmt.Errorf("%w: delegation: duplicate subnet_id", ErrMalformed)
			}
			if d.SubnetID, err = r.Bytes(); err != nil {
				return nil, fmt.Errorf("%w: delegation subnet_id: %w", ErrMalformed, err)
			}
		case "certificate":
			if inner != nil {
				return nil, fmt.Errorf("%w: delegation: duplicate certificate", ErrMalformed)
			}
			if inner, err = r.Bytes(); err != nil {
				return nil, fmt.Errorf("%w: delegation certificate: %w", ErrMalformed, err)
			}
		default:
			if err := r.Skip(); err != nil {
				return nil, fmt.Errorf("%w: delegation value of %q: %w", ErrMalformed, key, err)
			}
		}
	}
	if d.SubnetID == nil || inner == nil {
		return nil, fmt.Errorf("%w: delegation without subnet_id or certificate", ErrMalformed)
	}
	if len(d.SubnetID) > maxPrincipalBytes {
		return nil, fmt.Errorf("%w: delegation subnet_id of %d bytes", ErrMalformed, len(d.SubnetID))
	}
	// inner aliases the copy Decode made, so the nested certificate shares it.
	if d.Certificate, err = decode(inner, false); err != nil {
		return nil, fmt.Errorf("delegation: %w", err)
	}
	return d, nil
}

// maxPrincipalBytes is the longest principal the IC defines.
const maxPrincipalBytes = 29

// Encode returns the CBOR encoding of c behind a self-describe tag, as the IC sends it.
func (c *Certificate) Encode() []byte {
	out := []byte{0xd9, 0xd9, 0xf7}
	if c.Delegation != nil {
		out = append(out, 0xa3)
	} else {
		out = append(out, 0xa2)
	}
	out = cborwrite.AppendText(out, "tree")
	out = append(out, c.Tree.Encode()...)
	out = cborwrite.AppendText(out, "signature")
	out = cborwrite.AppendBytes(out, c.Signature)
	if c.Delegation != nil {
		out = cborwrite.AppendText(out, "delegation")
		out = append(out, 0xa2)
		out = cborwrite.AppendText(out, "subnet_id")
		out = cborwrite.AppendBytes(out, c.Delegation.SubnetID)
		out = cborwrite.AppendText(out, "certificate")
		out = cborwrite.AppendBytes(out, c.Delegation.Certificate.Encode())
	}
	return out
}

// ErrTime is returned (wrapped) by Time.
var ErrTime = errors.New("certificate: no valid time")

// Time returns the certificate's /time.
func (c *Certificate) Time() (time.Time, error) {
	raw, st := c.Tree.Lookup([]byte("time"))
	if st != hashtree.Found {
		return time.Time{}, fmt.Errorf("%w: /time is %s", ErrTime, st)
	}
	ns, err := ULEB128(raw)
	if err != nil || ns > 1<<63-1 {
		return time.Time{}, fmt.Errorf("%w: /time %x: not a nanosecond count", ErrTime, raw)
	}
	return time.Unix(0, int64(ns)), nil
}

// ULEB128 decodes an unsigned LEB128 number that fits 64 bits and fills b exactly, the encoding
// of naturals in the state tree.
func ULEB128(b []byte) (uint64, error) {
	var v uint64
	for i, x := range b {
		if i == 10 || (i == 9 && x > 1) {
			return 0, errors.New("LEB128 value overflows 64 bits")
		}
		v |= uint64(x&0x7f) << (7 * i)
		if x&0x80 == 0 {
			if i != len(b)-1 {
				return 0, errors.New("trailing bytes after LEB128 value")
			}
			return v, nil
		}
	}
	return 0, errors.New("truncated LEB128 value")
}

// AppendULEB128 appends v in unsigned LEB128.
func AppendULEB128(out []byte, v uint64) []byte {
	for v >= 0x80 {
		out = append(out, byte(v)|0x80)
		v >>= 7
	}
	return append(out, byte(v))
}

// mainnetRootKey is the IC mainnet's root key (DER), which agents build in.
const mainnetRootKey = "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100814c0e6ec71fab583b08bd81373c255c3c371b2e84863c98a4f1e08b74235d14fb5d9c0cd546d9685f913a0c0b2cc5341583bf4b4392e467db96d65b9bb4cb717112f8472e0d5a4d14505ffd7484b01291091c5f87b98883463f98091a0baaae"

// MainnetRootKey returns the IC mainnet's root key (DER).
func MainnetRootKey() []byte {
	k, _ := hex.DecodeString(mainnetRootKey) // a valid constant
	return k
}

// NNSSubnetID is the mainnet root (NNS) subnet, whose certificates carry no delegation. agent-go
// looks for the subnet of a root-signed certificate under this id; agent-js looks under
// selfAuthenticating(root key).
const NNSSubnetID = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe"
