package textlimit

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"short", "bye", 123, "bye"},
		{"exact", "abc", 3, "abc"},
		{"ascii cut", "abcdef", 4, "abcd"},
		{"before a two-byte rune", "abcé", 4, "abc"},
		{"after a two-byte rune", "abcé", 5, "abcé"},
		{"inside a four-byte rune", "a🙂b", 3, "a"},
		{"invalid bytes replaced", "a\xffb", 10, "a\uFFFDb"},
		{"invalid bytes replaced then cut", "ab\xff", 3, "ab"},
		{"zero", "abc", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Cut(tc.in, tc.max)
			if got != tc.want {
				t.Fatalf("Cut(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

func FuzzCut(f *testing.F) {
	f.Add("abcé🙂\xff", 5)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 0 || max > 1<<16 {
			return
		}
		got := Cut(s, max)
		if len(got) > max || !utf8.ValidString(got) {
			t.Fatalf("Cut(%q, %d) = %q", s, max, got)
		}
		if !strings.HasPrefix(strings.ToValidUTF8(s, "\uFFFD"), got) {
			t.Fatalf("Cut(%q, %d) = %q: not a prefix", s, max, got)
		}
	})
}
