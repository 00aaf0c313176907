package bench

import (
	"net"
	"testing"
)

func TestNumberedTextsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		index, payload, wantLen int
	}{
		{0, 0, 2},
		{12345, 0, 6},
		{7, 1024, 1024},
		{123456789, 5, 10}, // never shorter than tag and index
	} {
		text := numbered('u', tc.index, tc.payload)
		if len(text) != tc.wantLen {
			t.Errorf("numbered(%d, %d) has %d bytes, want %d", tc.index, tc.payload, len(text), tc.wantLen)
		}
		got, err := parseNumbered('u', text)
		if err != nil || got != tc.index {
			t.Errorf("parseNumbered(%.20q) = %d, %v; want %d", text, got, err, tc.index)
		}
		if _, err := parseNumbered('f', text); err == nil {
			t.Errorf("parseNumbered with another tag accepted %.20q", text)
		}
	}
	for _, bad := range []string{"", "u", "u-1", "ux", "burst:3", "u 12"} {
		if _, err := parseNumbered('u', bad); err == nil {
			t.Errorf("parseNumbered(%q) accepted", bad)
		}
	}
}

func TestLoopbackSourceSpread(t *testing.T) {
	for _, tc := range []struct {
		url  string
		i    int
		want net.IP
	}{
		{"ws://127.0.0.1:8080", 0, net.IPv4(127, 0, 0, 1)},
		{"ws://127.0.0.1:8080", 17, net.IPv4(127, 0, 0, 2)},
		{"ws://localhost:8080", 3, net.IPv4(127, 0, 0, 4)},
		{"ws://[::1]:8080", 3, nil},
		{"wss://gateway.example:443", 3, nil},
		{"::not a url", 0, nil},
	} {
		if got := loopbackSource(tc.url, tc.i); !got.Equal(tc.want) {
			t.Errorf("loopbackSource(%q, %d) = %v, want %v", tc.url, tc.i, got, tc.want)
		}
	}
}
