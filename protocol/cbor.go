package protocol

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Bounds of every CBOR decode of network input. The deepest legitimate item is a frame holding an
// envelope holding a delegation chain with targets (six levels, a few more with self-describe
// tags); no legitimate array comes near 4096 elements (delegation targets stop at 1000) and no
// map near 256 pairs. fxamacker checks well-formedness and these bounds over the whole item before
// it decodes anything, so a declared length larger than the input is refused without allocating.
const (
	cborMaxNesting  = 16
	cborMaxArray    = 4096
	cborMaxMapPairs = 256
)

// icDecMode decodes CBOR as the IC reads it: envelopes from agents, and canister output.
//   - Duplicate map keys are refused, as the IC refuses them: with duplicates, the request id and
//     the decoded fields could describe two different requests under one signature.
//   - Map keys match struct fields exactly, as serde does: "Content" is not "content", so what is
//     verified here is what the IC reads.
//   - Indefinite lengths are accepted: the IC's decoder accepts them and serde_cbor may write them.
//   - Tags are allowed for the self-describe tag 55799 that agent-js puts in front of documents;
//     the request id refuses every other tag, and bignums (tags 2 and 3) are refused outright.
var icDecMode = mustDecMode(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	MaxNestedLevels:   cborMaxNesting,
	MaxArrayElements:  cborMaxArray,
	MaxMapPairs:       cborMaxMapPairs,
	IndefLength:       cbor.IndefLengthAllowed,
	TagsMd:            cbor.TagsAllowed,
	BignumTag:         cbor.BignumTagForbidden,
	FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
})

// frameDecMode decodes WebSocket frames: like icDecMode, but no encoder of frames (icws, agent-js,
// the Rust gateway) writes indefinite lengths, so they are refused.
var frameDecMode = mustDecMode(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	MaxNestedLevels:   cborMaxNesting,
	MaxArrayElements:  cborMaxArray,
	MaxMapPairs:       cborMaxMapPairs,
	IndefLength:       cbor.IndefLengthForbidden,
	TagsMd:            cbor.TagsAllowed,
	BignumTag:         cbor.BignumTagForbidden,
	FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
})

// requestIDDecMode is icDecMode decoding into any: maps with any key type, so non-text keys
// are reported rather than mangled, and negative integers below the int64 range as big.Int.
var requestIDDecMode = mustDecMode(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	MaxNestedLevels:   cborMaxNesting,
	MaxArrayElements:  cborMaxArray,
	MaxMapPairs:       cborMaxMapPairs,
	IndefLength:       cbor.IndefLengthAllowed,
	TagsMd:            cbor.TagsAllowed,
	BignumTag:         cbor.BignumTagForbidden,
	FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	DefaultMapType:    nil,
	IntDec:            cbor.IntDecConvertNone,
	BigIntDec:         cbor.BigIntDecodeValue,
})

// mustDecMode builds a decode mode from constant options: invalid ones panic as the package
// loads, so any test of the package catches them.
func mustDecMode(o cbor.DecOptions) cbor.DecMode {
	dm, err := o.DecMode()
	if err != nil {
		panic(fmt.Sprintf("protocol: CBOR decode options: %v", err))
	}
	return dm
}
