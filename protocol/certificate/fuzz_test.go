package certificate_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/icws/icws/protocol/certificate"
)

// upstreamCertificates returns the recorded certificates of protocol/testdata/upstream.
func upstreamCertificates(t testing.TB) [][]byte {
	t.Helper()
	out := [][]byte{unhex(t, loadAgentJSVector(t).Certificate)}
	for _, name := range []string{"ic-websocket-sdk-js-v0.5.0-messages.json", "ic-websocket-sdk-js-v0.3.0-messages.json", "ic-websocket-sdk-js-v0.5.0-utils.json"} {
		raw, err := os.ReadFile("../testdata/upstream/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var set struct {
			Frames []struct {
				Cert string `json:"cert"`
			} `json:"frames"`
		}
		if err := json.Unmarshal(raw, &set); err != nil {
			t.Fatal(err)
		}
		for _, f := range set.Frames {
			out = append(out, unhex(t, f.Cert))
		}
	}
	return out
}

func FuzzDecode(f *testing.F) {
	rootKey := unhex(f, loadAgentJSVector(f).RootKey)
	for _, c := range upstreamCertificates(f) {
		f.Add(c)
	}
	f.Add([]byte{0xa2, 0x64, 't', 'r', 'e', 'e', 0x81, 0x00, 0x69, 's', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', 0x40})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := certificate.Decode(data)
		if err != nil {
			return
		}
		if _, err := certificate.Decode(c.Encode()); err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		_, _ = c.Time()
		_ = c.Verify(rootKey, []byte{0, 0, 0, 0, 0, 0x20, 0, 0, 1, 1})
	})
}

func FuzzDecodeRanges(f *testing.F) {
	f.Add(certificate.EncodeRanges([]certificate.Range{{Low: []byte{0}, High: []byte{1}}}))
	f.Add([]byte{0xd9, 0xd9, 0xf7, 0x81, 0x82, 0x4a, 0, 0, 0, 0, 0, 0x20, 0, 0, 1, 1, 0x4a, 0, 0, 0, 0, 0, 0x2f, 0xff, 0xff, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		ranges, err := certificate.DecodeRanges(data)
		if err != nil {
			return
		}
		if _, err := certificate.DecodeRanges(certificate.EncodeRanges(ranges)); err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
	})
}
