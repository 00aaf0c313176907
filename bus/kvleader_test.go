package bus

import (
	"bytes"
	"encoding/base64"
	"testing"
)

// leaderAnswer is a message-get answer as nats-server writes it.
func leaderAnswer(seq, hdrs, data string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return []byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"$KV.b.k","seq":` +
		seq + `,"hdrs":"` + b64([]byte(hdrs)) + `","data":"` + b64([]byte(data)) + `","time":"2026-11-30T00:00:00Z"}}`)
}

func TestDecodeLeaderGet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  []byte
		want    []byte // nil: no value
		wantRev uint64
		wantErr bool
	}{
		{"a value", leaderAnswer("7", "", `{"a":1}`), []byte(`{"a":1}`), 7, false},
		{"an empty value", leaderAnswer("8", "", ""), []byte{}, 8, false},
		{"a delete marker", leaderAnswer("9", "NATS/1.0\r\nKV-Operation: DEL\r\n\r\n", ""), nil, 0, false},
		{"a purge marker", leaderAnswer("9", "NATS/1.0\r\nKV-Operation: PURGE\r\n\r\n", ""), nil, 0, false},
		{"no message", []byte(`{"error":{"code":404,"err_code":10037,"description":"no message found"}}`), nil, 0, false},
		{"another error", []byte(`{"error":{"code":503,"err_code":10008,"description":"unavailable"}}`), nil, 0, true},
		{"neither", []byte(`{}`), nil, 0, true},
		{"not JSON", []byte(`nats`), nil, 0, true},
		{"bad headers", leaderAnswer("9", "HTTP/1.1 200\r\n", ""), nil, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			val, rev, err := decodeLeaderGet(tc.answer)
			if (err != nil) != tc.wantErr || !bytes.Equal(val, tc.want) || (val == nil) != (tc.want == nil) || rev != tc.wantRev {
				t.Fatalf("got %q, %d, %v; want %q, %d, error %v", val, rev, err, tc.want, tc.wantRev, tc.wantErr)
			}
		})
	}
}

// Answers come from the NATS server over the network: none may panic the process.
func FuzzDecodeLeaderGet(f *testing.F) {
	f.Add(leaderAnswer("7", "", `{"a":1}`))
	f.Add(leaderAnswer("9", "NATS/1.0\r\nKV-Operation: DEL\r\n\r\n", ""))
	f.Add([]byte(`{"error":{"code":404,"err_code":10037,"description":"no message found"}}`))
	f.Fuzz(func(t *testing.T, answer []byte) {
		val, rev, err := decodeLeaderGet(answer)
		if err != nil && (val != nil || rev != 0) {
			t.Fatalf("an error with a value: %q, %d, %v", val, rev, err)
		}
	})
}
