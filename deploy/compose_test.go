package deploy

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/icws/icws/internal/composefile"
)

// icwsTool is the icws binary and what it says about itself (composefile.DescribeIcws): its
// commands, its configuration variables and, through `icws env check <command>`, whether an
// environment is a valid configuration of a command.
type icwsTool struct {
	binary string
	*composefile.Icws
}

func buildIcws(t *testing.T) *icwsTool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "icws")
	build := exec.Command("go", "build", "-o", bin, "../cmd/icws")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/icws: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	described, err := composefile.DescribeIcws(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	return &icwsTool{binary: bin, Icws: described}
}

// run runs icws with exactly env (no variable of the test's own environment but PATH).
func (x *icwsTool) run(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, x.binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// composeCheck checks a loaded compose project against the icws binary and the repository.
type composeCheck struct {
	t          *testing.T
	icws       *icwsTool
	dockerfile string            // absolute path of deploy/Dockerfile
	image      composefile.Image // what it sets
	standIns   string            // where the services' stand-in file trees go
}

// problems lists everything wrong with the compose file; informational notes go to the test log.
func (c *composeCheck) problems(ctx context.Context, file string) []string {
	p, err := composefile.Load(ctx, file, composefile.TestEnv())
	if err != nil {
		return []string{fmt.Sprintf("load: %v", err)}
	}
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	runsIcws := composefile.IcwsServices(p, c.dockerfile)
	containers := composefile.Containers{Project: p, Dir: c.standIns}
	type published struct{ service, hostIP string }
	ports := map[string][]published{}
	for _, name := range composefile.SortedNames(p) {
		s := p.Services[name]
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				bad("service %s mounts %s, which does not exist: %v", name, v.Source, err)
			}
		}
		for _, port := range s.Ports {
			if port.Published == "" {
				continue
			}
			proto := cmpOr(port.Protocol, "tcp")
			lo, hi, err := portRange(port.Published)
			if err != nil {
				bad("service %s publishes %q: %v", name, port.Published, err)
				continue
			}
			for n := lo; n <= hi; n++ {
				key := fmt.Sprintf("%d/%s", n, proto)
				for _, other := range ports[key] {
					if other.hostIP == "" || port.HostIP == "" || other.hostIP == port.HostIP || other.hostIP == "0.0.0.0" || port.HostIP == "0.0.0.0" {
						bad("services %s and %s both publish port %s", other.service, name, key)
					}
				}
				ports[key] = append(ports[key], published{name, port.HostIP})
			}
		}
		if !runsIcws[name] {
			continue
		}
		ct, err := containers.New(name, c.image)
		if err != nil {
			bad("%v", err)
			continue
		}
		out = append(out, c.checkIcwsService(name, s, ct)...)
	}
	return out
}

func (c *composeCheck) checkIcwsService(name string, s types.ServiceConfig, ct *composefile.Container) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	args, err := composefile.IcwsArgs(s)
	if err != nil {
		return []string{fmt.Sprintf("service %s: %v", name, err)}
	}
	command := composefile.CommandOf(args)
	if !c.icws.Commands[command] {
		bad("service %s runs `icws %s`, which is not an icws command", name, strings.Join(args, " "))
		return out
	}

	env := composefile.ServiceEnv(c.image, s)
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if !strings.HasPrefix(k, "ICWS_") {
			continue
		}
		usedBy, ok := c.icws.Vars[k]
		if !ok {
			bad("service %s sets %s, which icws does not have (icws env)", name, k)
			continue
		}
		if _, fromService := s.Environment[k]; fromService && !slices.Contains(usedBy.UsedBy, command) {
			c.t.Logf("note: service %s sets %s, which `icws %s` does not read (read by %s)", name, k, command, strings.Join(usedBy.UsedBy, ", "))
		}
		value := env[k]
		// A path inside the container is checked where the test finds it.
		if host, ok := ct.HostPath(value); ok {
			value = host
		}
		kv = append(kv, k+"="+value)
	}
	if len(out) > 0 {
		return out
	}
	if res, err := c.icws.run(c.t, kv, "env", "check", command); err != nil {
		if strings.Contains(res, "has no configuration") {
			return out
		}
		bad("service %s: `icws %s` refuses its environment: %s", name, command, strings.TrimSpace(res))
	}
	return out
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// portRange parses a published port, "8080" or "8080-8082".
func portRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(b); err != nil {
			return 0, 0, err
		}
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("not a port range")
	}
	return lo, hi, nil
}

func newComposeCheck(t *testing.T) *composeCheck {
	dockerfile, err := filepath.Abs("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	image, err := composefile.ReadDockerfile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	return &composeCheck{
		t:          t,
		icws:       buildIcws(t),
		dockerfile: dockerfile,
		image:      image,
		standIns:   t.TempDir(),
	}
}

// TestComposeFile loads docker-compose.yml with compose-go (schema, interpolation, references)
// and checks it against the icws binary and the repository: every icws service runs a real icws
// command, every ICWS_* variable it gets (image ENV and environment) exists and `icws env check`
// accepts the whole environment, every bind-mounted file exists, and no two services publish the
// same host port. It names no service: the file may grow. The checker itself is shown to find each
// kind of mistake in small files.
func TestComposeFile(t *testing.T) {
	c := newComposeCheck(t)
	t.Run("docker-compose.yml", func(t *testing.T) {
		file, err := filepath.Abs(filepath.Join("..", "docker-compose.yml"))
		if err != nil {
			t.Fatal(err)
		}
		c.t = t
		for _, p := range c.problems(context.Background(), file) {
			t.Error(p)
		}
	})
	t.Run("mistakes found", func(t *testing.T) { composeMistakesFound(t, c) })
}

// composeMistakesFound feeds the checker small compose files with one mistake each.
func composeMistakesFound(t *testing.T, c *composeCheck) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// An icws service as docker-compose.yml declares one, with the pieces each case varies.
	service := func(command, env, extra string) string {
		return fmt.Sprintf(`services:
  role:
    build: { context: %q, dockerfile: deploy/Dockerfile }
    image: icws:local
    command: [%s]
    environment: { %s }
%s`, root, command, env, extra)
	}
	for _, tc := range []struct {
		name, compose, want string
	}{
		{"valid", service(`"edge"`, `ICWS_NATS_URL: "nats://n1:4222"`, ""), ""},
		{"not schema-valid", service(`"edge"`, `ICWS_NATS_URL: "nats://n1:4222"`, "    comand: [edge]\n"), "load:"},
		{"unknown command", service(`"edgy"`, `ICWS_NATS_URL: "nats://n1:4222"`, ""), "not an icws command"},
		{"unknown variable", service(`"edge"`, `ICWS_NATS_URL: "nats://n1:4222", ICWS_NAT_URL: "x"`, ""), "ICWS_NAT_URL, which icws does not have"},
		{"unparsable variable", service(`"edge"`, `ICWS_NATS_URL: "nats://n1:4222", ICWS_PARTITIONS: "many"`, ""), "ICWS_PARTITIONS"},
		{"invalid for the command", service(`"edge"`, `ICWS_LOG_LEVEL: "info"`, ""), "ICWS_NATS_URL"},
		{"missing mount", service(`"edge"`, `ICWS_NATS_URL: "nats://n1:4222"`, "    volumes: [\"./no/such/file.conf:/etc/x.conf:ro\"]\n"), "does not exist"},
		{"port collision", service(`"edge"`, `ICWS_NATS_URL: "nats://n1:4222"`, "    ports: [\"8080:8080\"]\n  other:\n    image: nginx\n    ports: [\"8079-8081:80\"]\n"), "publish port 8080/tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "compose.yml")
			if err := os.WriteFile(file, []byte(tc.compose), 0o644); err != nil {
				t.Fatal(err)
			}
			c.t = t
			got := c.problems(context.Background(), file)
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("problems in a valid file: %q", got)
				}
				return
			}
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Fatalf("problems %q, want one mentioning %q", got, tc.want)
			}
		})
	}
}
