package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// icwsTool is the icws binary, asked for what it knows: its commands (`icws help`), its
// configuration variables (`icws env`) and whether an environment is a valid configuration of a
// command (`icws env check <command>`).
type icwsTool struct {
	binary   string
	commands map[string]bool
	vars     map[string][]string // variable → commands that read it
}

func buildIcws(t *testing.T) *icwsTool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "icws")
	build := exec.Command("go", "build", "-o", bin, "../cmd/icws")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/icws: %v\n%s", err, out)
	}
	tool := &icwsTool{binary: bin, commands: map[string]bool{}, vars: map[string][]string{}}
	help, _ := tool.run(t, nil, "help")
	inCommands := false
	for line := range strings.Lines(help) {
		switch {
		case strings.HasPrefix(line, "commands:"):
			inCommands = true
		case inCommands && strings.HasPrefix(line, "  "):
			tool.commands[strings.Fields(line)[0]] = true
		case inCommands:
			inCommands = false
		}
	}
	table, _ := tool.run(t, nil, "env")
	row := regexp.MustCompile("^\\| `(ICWS_[A-Z0-9_]+)` \\| [^|]* \\| ([^|]*) \\|")
	for line := range strings.Lines(table) {
		if m := row.FindStringSubmatch(line); m != nil {
			tool.vars[m[1]] = strings.Split(strings.TrimSpace(m[2]), ", ")
		}
	}
	if len(tool.commands) < 5 || len(tool.vars) < 20 {
		t.Fatalf("icws help and icws env listed %d commands and %d variables:\n%s\n%s", len(tool.commands), len(tool.vars), help, table)
	}
	return tool
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

// composeTestEnv stands in for the .env file an operator writes: the variables the compose file
// requires (the NATS passwords) with test values.
var composeTestEnv = []string{
	"NATS_EDGE_PASSWORD=test-edge-password", "NATS_SUBMITTER_PASSWORD=test-submitter-password",
	"NATS_POLLER_PASSWORD=test-poller-password", "NATS_ROUTE_PASSWORD=test-route-password",
}

// loadCompose loads a compose file as `docker compose` does (schema validation, interpolation
// with composeTestEnv so required variables are set and defaults apply, consistency checks,
// paths resolved).
func loadCompose(ctx context.Context, file string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithName("icws"),
		cli.WithResolvedPaths(true),
		cli.WithEnv(composeTestEnv),
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(ctx)
}

// imageEnv reads the ICWS_* variables that deploy/Dockerfile sets with ENV.
func imageEnv(t *testing.T, dockerfile string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	joined := strings.ReplaceAll(string(raw), "\\\n", " ")
	sc := bufio.NewScanner(strings.NewReader(joined))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ENV ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "ICWS_") {
				env[k] = v
			}
		}
	}
	return env
}

// composeCheck checks a loaded compose project against the icws binary and the repository.
type composeCheck struct {
	t          *testing.T
	icws       *icwsTool
	dockerfile string            // absolute path of deploy/Dockerfile
	imageEnv   map[string]string // its ENV
	volumeDir  string            // stand-ins for named volumes
	project    *types.Project    // set by problems
}

// problems lists everything wrong with the compose file; informational notes go to the test log.
func (c *composeCheck) problems(ctx context.Context, file string) []string {
	p, err := loadCompose(ctx, file)
	if err != nil {
		return []string{fmt.Sprintf("load: %v", err)}
	}
	c.project = p
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	// Services built from deploy/Dockerfile, and those running the image such a service builds,
	// run the icws binary.
	icwsImages := map[string]bool{}
	for _, s := range p.Services {
		if s.Build != nil && filepath.Join(s.Build.Context, s.Build.Dockerfile) == c.dockerfile {
			icwsImages[s.Image] = true
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	})
	type published struct{ service, hostIP string }
	ports := map[string][]published{}
	for _, name := range names {
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
		runsIcws := (s.Build != nil && filepath.Join(s.Build.Context, s.Build.Dockerfile) == c.dockerfile) || icwsImages[s.Image]
		if !runsIcws {
			continue
		}
		out = append(out, c.checkIcwsService(name, s)...)
	}
	return out
}

func (c *composeCheck) checkIcwsService(name string, s types.ServiceConfig) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	args := []string(s.Command)
	if s.Entrypoint != nil {
		if len(s.Entrypoint) == 0 || filepath.Base(s.Entrypoint[0]) != "icws" {
			return []string{fmt.Sprintf("service %s replaces the icws entrypoint with %q", name, s.Entrypoint)}
		}
		args = append(slices.Clone(s.Entrypoint[1:]), args...)
	}
	command := "all" // icws without arguments
	if len(args) > 0 {
		command = args[0]
	}
	if !c.icws.commands[command] {
		bad("service %s runs `icws %s`, which is not an icws command", name, strings.Join(args, " "))
		return out
	}

	env := map[string]string{}
	for k, v := range c.imageEnv {
		env[k] = v
	}
	for k, v := range s.Environment {
		if !strings.HasPrefix(k, "ICWS_") {
			continue
		}
		if v == nil {
			delete(env, k) // passed through from an empty environment: unset
			continue
		}
		env[k] = *v
	}
	var kv []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range env {
			if !yield(k) {
				return
			}
		}
	}) {
		usedBy, ok := c.icws.vars[k]
		if !ok {
			bad("service %s sets %s, which icws does not have (icws env)", name, k)
			continue
		}
		if _, fromService := s.Environment[k]; fromService && !slices.Contains(usedBy, command) {
			c.t.Logf("note: service %s sets %s, which `icws %s` does not read (read by %s)", name, k, command, strings.Join(usedBy, ", "))
		}
		kv = append(kv, k+"="+c.hostPath(name, s, env[k]))
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

// hostPath maps a path inside a service's container to where the test can find it: a bind mount's
// source, or a stand-in directory for a named volume. Other values are returned unchanged.
func (c *composeCheck) hostPath(service string, s types.ServiceConfig, value string) string {
	if !filepath.IsAbs(value) {
		return value
	}
	// A compose secret is mounted at /run/secrets/<target>: stand in a file with its value.
	for _, sec := range s.Secrets {
		target := cmpOr(sec.Target, sec.Source)
		if !filepath.IsAbs(target) {
			target = "/run/secrets/" + target
		}
		if value != target || c.project == nil {
			continue
		}
		def, ok := c.project.Secrets[sec.Source]
		if !ok {
			return value
		}
		data := def.Content
		if def.Environment != "" {
			data = c.project.Environment[def.Environment]
		}
		if def.File != "" {
			return def.File
		}
		f := filepath.Join(c.volumeDir, "secrets", service, sec.Source)
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			c.t.Fatal(err)
		}
		return f
	}
	for _, v := range s.Volumes {
		rest, ok := strings.CutPrefix(value, v.Target)
		if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
			continue
		}
		switch v.Type {
		case types.VolumeTypeBind:
			return v.Source + rest
		case types.VolumeTypeVolume:
			dir := filepath.Join(c.volumeDir, service, cmpOr(v.Source, "anonymous"))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				c.t.Fatal(err)
			}
			return dir + rest
		}
	}
	return value
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
	return &composeCheck{
		t:          t,
		icws:       buildIcws(t),
		dockerfile: dockerfile,
		imageEnv:   imageEnv(t, dockerfile),
		volumeDir:  t.TempDir(),
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
