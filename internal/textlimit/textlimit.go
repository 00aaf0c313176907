// Package textlimit shortens text that crosses a byte limit on its way to a peer that requires
// UTF-8 (a WebSocket close reason, a NATS header read back as one).
package textlimit

import (
	"strings"
	"unicode/utf8"
)

// Cut returns s as valid UTF-8 (each invalid byte sequence replaced by U+FFFD) in at most max
// bytes, cut before the first rune that does not fit: a close frame whose reason ends in half a
// character is a protocol error to the client (RFC 6455, section 8.1).
func Cut(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= max {
		return s
	}
	end := 0
	for i, r := range s {
		if i+utf8.RuneLen(r) > max {
			break
		}
		end = i + utf8.RuneLen(r)
	}
	return s[:end]
}
