// Package composefile reads docker-compose.yml the way the icws stack runs it, without a
// container engine: the project as `docker compose` loads it, which services run the icws image
// and with which arguments, what that image's Dockerfile sets (ENV, VOLUME), what the icws binary
// says about itself (commands, variables, defaults), and a directory tree per service standing in
// for the files its container sees mounted. The compose check in deploy/ and the compose stack
// test in integration/ share it, so both read the file the same way.
package composefile

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// TestEnv stands in for the .env file an operator writes next to docker-compose.yml: the variables
// the file requires (the NATS passwords), with test values. They need no escaping in URLs, since
// the file puts the route password into the route URLs.
func TestEnv() []string {
	return []string{
		"NATS_EDGE_PASSWORD=test-edge-password",
		"NATS_SUBMITTER_PASSWORD=test-submitter-password",
		"NATS_POLLER_PASSWORD=test-poller-password",
		"NATS_ROUTE_PASSWORD=test-route-password",
	}
}

// Load loads a compose file as `docker compose` does: schema validation, interpolation with env
// (the only environment it sees, so required variables must be in it and defaults apply),
// consistency checks, paths resolved against the file's directory.
func Load(ctx context.Context, file string, env []string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithName("icws"),
		cli.WithResolvedPaths(true),
		cli.WithEnv(env),
	)
	if err != nil {
		return nil, fmt.Errorf("compose options for %s: %w", file, err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	return p, nil
}

// IcwsServices names the services that run the icws binary: those built from dockerfile (an
// absolute path) and those running the image such a service builds.
func IcwsServices(p *types.Project, dockerfile string) map[string]bool {
	builtFrom := func(s types.ServiceConfig) bool {
		return s.Build != nil && filepath.Join(s.Build.Context, s.Build.Dockerfile) == dockerfile
	}
	images := map[string]bool{}
	for _, s := range p.Services {
		if builtFrom(s) && s.Image != "" {
			images[s.Image] = true
		}
	}
	out := map[string]bool{}
	for name, s := range p.Services {
		if builtFrom(s) || images[s.Image] {
			out[name] = true
		}
	}
	return out
}

// IcwsArgs returns the arguments the icws binary gets in a service's container: the command, after
// what an entrypoint that still runs icws adds. An entrypoint that runs something else is an error.
func IcwsArgs(s types.ServiceConfig) ([]string, error) {
	args := []string(s.Command)
	if s.Entrypoint != nil {
		if len(s.Entrypoint) == 0 || filepath.Base(s.Entrypoint[0]) != "icws" {
			return nil, fmt.Errorf("the entrypoint %q replaces icws", []string(s.Entrypoint))
		}
		args = append(slices.Clone([]string(s.Entrypoint[1:])), args...)
	}
	return args, nil
}

// CommandOf is the icws command that args run: the first argument, or "all" (icws without
// arguments).
func CommandOf(args []string) string {
	if len(args) == 0 {
		return "all"
	}
	return args[0]
}

// ServiceEnv is a service's environment as its container gets it: the image's ENV, overridden
// by the service's environment; a variable the service lists without a value (passed through from
// an environment that lacks it) is unset.
func ServiceEnv(img Image, s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range img.Env {
		env[k] = v
	}
	for k, v := range s.Environment {
		if v == nil {
			delete(env, k)
			continue
		}
		env[k] = *v
	}
	return env
}

// SortedNames returns a project's service names in order, so that checks and logs are stable.
func SortedNames(p *types.Project) []string {
	names := make([]string, 0, len(p.Services))
	for n := range p.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// isUnder reports whether path p is dir or inside it (both clean and absolute).
func isUnder(p, dir string) bool {
	if dir == "/" {
		return true
	}
	rest, ok := strings.CutPrefix(p, dir)
	return ok && (rest == "" || strings.HasPrefix(rest, "/"))
}
