package composefile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeProject writes a compose file to a temporary directory, with conf/app.conf beside it to
// mount, and returns the directory.
func writeProject(t *testing.T, compose string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yml"), []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "app.conf"), []byte("conf"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestContainerStandInsMapContainerPaths(t *testing.T) {
	dir := writeProject(t, `
services:
  a:
    image: x
    volumes: ["./conf:/etc/app:ro", "shared:/key", "/scratch"]
    secrets: [pw, { source: pw, target: /custom/pw }]
  b:
    image: x
    volumes: ["shared:/key:ro"]
secrets:
  pw:
    environment: PW
volumes:
  shared:
`)
	p, err := Load(context.Background(), filepath.Join(dir, "compose.yml"), []string{"PW=s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	cs := Containers{Project: p, Dir: t.TempDir()}
	a, err := cs.New("a", Image{Volumes: []string{"/data", "/scratch"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cs.New("b", Image{})
	if err != nil {
		t.Fatal(err)
	}
	read := func(ct *Container, p string) string {
		t.Helper()
		host, ok := ct.HostPath(p)
		if !ok {
			t.Fatalf("%s: %s has no stand-in", ct.Service, p)
		}
		raw, err := os.ReadFile(host)
		if err != nil {
			t.Fatalf("%s: %s → %s: %v", ct.Service, p, host, err)
		}
		return string(raw)
	}
	for _, tc := range []struct{ path, want string }{
		{"/etc/app/app.conf", "conf"},
		{"/run/secrets/pw", "s3cret"},
		{"/custom/pw", "s3cret"},
	} {
		if got := read(a, tc.path); got != tc.want {
			t.Errorf("a: %s holds %q, want %q", tc.path, got, tc.want)
		}
	}
	// A named volume is one directory for every service that mounts it.
	host, _ := a.HostPath("/key/key_pair")
	if err := os.WriteFile(host, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := read(b, "/key/key_pair"); got != "key" {
		t.Errorf("b sees %q in the shared volume, want what a wrote", got)
	}
	// Image volumes get a fresh directory; paths nothing mounts have no stand-in.
	for _, tc := range []struct {
		ct   *Container
		path string
		ok   bool
	}{
		{a, "/data/x", true}, {a, "/scratch", true}, {b, "/data", false}, {a, "/etc/other", false},
		{a, "/etc/application", false}, {a, "relative/path", false}, {b, "/run/secrets/pw", false},
	} {
		if _, ok := tc.ct.HostPath(tc.path); ok != tc.ok {
			t.Errorf("%s: HostPath(%q) ok=%v, want %v", tc.ct.Service, tc.path, ok, tc.ok)
		}
	}
}

func TestContainerStandInsRefuseNestedMounts(t *testing.T) {
	dir := writeProject(t, `
services:
  a:
    image: x
    volumes: ["./conf:/etc/app:ro", "./conf/app.conf:/etc/app/other.conf:ro"]
`)
	p, err := Load(context.Background(), filepath.Join(dir, "compose.yml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Containers{Project: p, Dir: t.TempDir()}.New("a", Image{})
	if err == nil || !strings.Contains(err.Error(), "inside the mount at /etc/app") {
		t.Fatalf("nested mount: err %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "conf", "other.conf")); err == nil {
		t.Fatal("the stand-in wrote into the bind mount's source")
	}
}

func TestReadDockerfileTakesTheFinalStage(t *testing.T) {
	for _, tc := range []struct {
		name, dockerfile string
		env              map[string]string
		volumes          []string
	}{
		{"key=value forms", "FROM a\nENV A=1 \\\n    B=\"two\"\nVOLUME /data\n", map[string]string{"A": "1", "B": "two"}, []string{"/data"}},
		{"legacy ENV and JSON VOLUME", "FROM a\nENV A one two\nVOLUME [\"/x\", \"/y\"]\n", map[string]string{"A": "one two"}, []string{"/x", "/y"}},
		{"earlier stages do not count", "FROM a AS build\nENV A=1\nVOLUME /build\nFROM b\nENV B=2\n", map[string]string{"B": "2"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "Dockerfile")
			if err := os.WriteFile(f, []byte(tc.dockerfile), 0o644); err != nil {
				t.Fatal(err)
			}
			img, err := ReadDockerfile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(img.Env) != len(tc.env) {
				t.Errorf("env %v, want %v", img.Env, tc.env)
			}
			for k, v := range tc.env {
				if img.Env[k] != v {
					t.Errorf("env %s=%q, want %q", k, img.Env[k], v)
				}
			}
			if strings.Join(img.Volumes, ",") != strings.Join(tc.volumes, ",") {
				t.Errorf("volumes %v, want %v", img.Volumes, tc.volumes)
			}
		})
	}
}
