package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A gateway key that group or others may read stops every command that loads it, with the fix.
func TestKeyFileReadableByOthersStopsTheGateway(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key_pair")
	if r := runIcws(t, []string{"ICWS_IDENTITY_FILE=" + key, "ICWS_DATA_DIR=" + dir}, "identity"); r.code != 0 {
		t.Fatalf("icws identity: %+v", r)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runIcws(t, []string{"ICWS_IDENTITY_FILE=" + key, "ICWS_DATA_DIR=" + dir}, "identity")
	if r.code != exitFailure {
		t.Fatalf("icws identity with a 0644 key: %+v", r)
	}
	for _, want := range []string{key, "0644", "chmod 600 " + key} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not say %q", r.stderr, want)
		}
	}
}
