package testkit

import (
	"os"
	"strings"
	"testing"
)

// ClearEnvironment unsets every environment variable until the test ends (t.Setenv restores them
// at cleanup), so code that reads the environment, such as envconfig, sees none set. A test that
// calls it cannot run in parallel with others.
func ClearEnvironment(t testing.TB) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		if name == "" { // Windows keeps per-drive directories in variables named "=C:"
			continue
		}
		t.Setenv(name, value)
		if err := os.Unsetenv(name); err != nil {
			t.Fatalf("unset %s: %v", name, err)
		}
	}
}
