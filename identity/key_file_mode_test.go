package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A key file that group or others may read or write is refused, by every way of loading it, with a
// message that names the file, its mode and the fix.
func TestKeyFileReadableByOthersIsRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no permission bits on Windows")
	}
	ring, _ := ringKeyFile(t)
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o602, 0o644, 0o660, 0o666} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key_pair")
			if err := os.WriteFile(path, ring, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is filtered by the umask
				t.Fatal(err)
			}
			for name, load := range map[string]func() error{
				"Load":         func() error { _, err := Load(path); return err },
				"LoadOrCreate": func() error { _, _, err := LoadOrCreate(path, nil); return err },
				"Principal":    func() error { _, err := Principal(path); return err },
			} {
				err := load()
				if !errors.Is(err, ErrKeyFileMode) {
					t.Fatalf("%s: %v, want ErrKeyFileMode", name, err)
				}
				for _, want := range []string{path, fmt.Sprintf("%04o", mode), "chmod 600 " + path} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s: %q does not say %q", name, err, want)
					}
				}
			}
			if after, _ := os.ReadFile(path); string(after) != string(ring) {
				t.Fatal("refused key file was changed")
			}
		})
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		t.Run(fmt.Sprintf("%04o accepted", mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key_pair")
			if err := os.WriteFile(path, ring, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(path); err != nil {
				t.Fatalf("mode %04o: %v", mode, err)
			}
		})
	}
}

func TestKeyFileTooLargeIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key_pair")
	if err := os.WriteFile(path, make([]byte, maxKeyFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load of an oversized file: %v", err)
	}
}
